"""One-time enrolment tokens and the enrol endpoint (real aiohttp server; SQLite and
PostgreSQL)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from central.config import CaConfig
from central.db import Target, open_db
from central.enrol import add_enrol_routes
from central.tokens import TokenError, TokenStore, parse_ttl, token_hash
from pki.ca import CertificateAuthority, make_csr, new_key

NODE = "450102001001-a"


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def _store(db: Target, clock: Clock) -> TokenStore:
    return TokenStore(open_db(db), clock)


def test_token_works_once_then_refused_clearly(db_target: Target) -> None:
    clock = Clock()
    store = _store(db_target, clock)
    tok = store.create(NODE, 3600)
    (stored,) = store.db.fetchone("SELECT token_sha256 FROM enrol_tokens") or ("",)
    assert stored == token_hash(tok) and tok not in stored  # only the hash is kept
    assert store.redeem(tok, NODE).node_id == NODE
    with pytest.raises(TokenError) as e:
        store.redeem(tok, NODE)
    assert e.value.status == 409 and "只能用一次" in str(e.value) and "works once" in str(e.value)


def test_token_expires(db_target: Target) -> None:
    clock = Clock()
    store = _store(db_target, clock)
    tok = store.create(NODE, parse_ttl("24h"))
    clock.t += 24 * 3600
    with pytest.raises(TokenError) as e:
        store.redeem(tok, NODE)
    assert e.value.status == 410 and "过期" in e.value.zh


def test_village_token_and_wrong_node(db_target: Target) -> None:
    store = _store(db_target, Clock())
    tok = store.create("450102001001", 60)
    with pytest.raises(TokenError) as e:
        store.redeem(tok, "450102001002-a")
    assert e.value.status == 400
    assert store.redeem(tok, "450102001001-b").target == "450102001001"  # not burnt by the miss


def test_bad_arguments(db_target: Target) -> None:
    store = _store(db_target, Clock())
    for bad in ("4501", "x", ""):
        with pytest.raises(ValueError):
            store.create(bad, 60)
    for ttl in ("0", "31d", "abc", "-1h", ""):
        with pytest.raises(ValueError):
            parse_ttl(ttl)
    assert parse_ttl("30m") == 1800 and parse_ttl("7d") == 7 * 86400


@given(st.text(max_size=300))
def test_fuzzed_tokens_are_refused_with_401(
    tmp_path_factory: pytest.TempPathFactory, t: str
) -> None:
    store = _store(tmp_path_factory.mktemp("fuzz") / "c.db", Clock())
    with pytest.raises(TokenError) as e:
        store.redeem(t, NODE)
    assert e.value.status == 401 and " / " in str(e.value)


# -- the endpoint ---------------------------------------------------------------------------------


@pytest.fixture
async def central(tmp_path: Path, db_target: Target) -> AsyncIterator[tuple[str, TokenStore]]:
    CertificateAuthority.create(tmp_path / "ca")
    db = db_target
    app = web.Application()
    add_enrol_routes(app, CaConfig(dir=tmp_path / "ca", broker_host="mqtt.example"), db)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    conn = open_db(db)
    try:
        yield f"http://127.0.0.1:{port}/api/v1/enrol", TokenStore(conn, time.time)
    finally:
        conn.close()
        await runner.cleanup()


async def _post(url: str, body: object) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        return r.status, await r.json()


async def test_enrol_endpoint(central: tuple[str, TokenStore]) -> None:
    url, tokens = central
    tok = tokens.create(NODE, 3600)
    csr = make_csr(new_key(), NODE).decode()
    status, body = await _post(url, {"token": tok, "csr_pem": csr})
    assert status == 200, body
    assert body["node_id"] == NODE and body["broker"] == {
        "host": "mqtt.example",
        "port": 8883,
        "tls": True,
    }
    assert "BEGIN CERTIFICATE" in str(body["cert_pem"]) and "BEGIN CERTIFICATE" in str(
        body["ca_pem"]
    )
    status, body = await _post(url, {"token": tok, "csr_pem": csr})
    assert status == 409 and "token_used" in json.dumps(body)


async def test_enrol_errors(central: tuple[str, TokenStore]) -> None:
    url, tokens = central
    tok = tokens.create(NODE, 3600)
    for body, status, code in [
        ({"token": tok, "csr_pem": "garbage"}, 400, "csr_malformed"),
        (
            {"token": tok, "csr_pem": make_csr(new_key(), "450102001002-a").decode()},
            400,
            "token_other_node",
        ),
        ({"token": "A" * 43, "csr_pem": make_csr(new_key(), NODE).decode()}, 401, "token_unknown"),
        ({"token": "短", "csr_pem": make_csr(new_key(), NODE).decode()}, 401, "token_invalid"),
        ([1, 2], 400, "bad_body"),
        ({"token": tok}, 400, "bad_body"),
    ]:
        got, answer = await _post(url, body)
        err = answer["error"]
        assert isinstance(err, dict)
        assert (got, err["code"]) == (status, code), answer
        assert " / " in str(err["message"])
    # None of the refusals burnt the token.
    got, _ = await _post(url, {"token": tok, "csr_pem": make_csr(new_key(), NODE).decode()})
    assert got == 200


def test_concurrent_uses_of_one_token_one_wins(db_target: Target) -> None:
    tok = _store(db_target, Clock()).create(NODE, 3600)
    outcomes: list[str] = []

    def use() -> None:
        store = _store(db_target, Clock())
        try:
            store.redeem(tok, NODE)
            outcomes.append("ok")
        except TokenError as e:
            outcomes.append(e.code)
        finally:
            store.db.close()

    threads = [threading.Thread(target=use) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(outcomes) == ["ok", "token_used", "token_used", "token_used"]
