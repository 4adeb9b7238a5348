"""Password guessing under someone else's name must not lock that person out: failures are
throttled per (name, address) and per address, a name under attack only costs each attempt a
short delay. Real HTTP clients on two loopback addresses (127.0.0.2 is the attacker)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from central.accounts import MAX_FAILURES
from pki.ca import make_csr, new_key
from tests.central_site import NODE1, CentralSite, central_site


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[CentralSite]:
    async with central_site(tmp_path) as s:
        s.user("ann", "operator")
        yield s


def _from(site: CentralSite, address: str) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    return aiohttp.ClientSession(site.base, connector=connector)


async def _login(http: aiohttp.ClientSession, password: str) -> int:
    async with http.post("/api/v1/login", json={"user": "ann", "password": password}) as r:
        return r.status


async def test_failures_from_one_address_do_not_lock_the_name_out(site: CentralSite) -> None:
    async with _from(site, "127.0.0.2") as attacker, _from(site, "127.0.0.1") as ann:
        for _ in range(MAX_FAILURES):
            assert await _login(attacker, "guess-123") == 401
        # The attacker's address is throttled, even with the right password...
        assert await _login(attacker, site.passwords["ann"]) == 429
        # ...but ann, from her own address, gets in (after the short per-name delay).
        assert await _login(ann, site.passwords["ann"]) == 200
    assert site.sample("shilian_auth_throttled_total", kind="login") == 1
    assert site.sample("shilian_auth_throttled_total", kind="login_delay") >= 1


@pytest.mark.parametrize(
    ("kind", "method", "path"),
    [
        ("enrol", "POST", "/api/v1/enrol"),
        ("commissioning", "GET", f"/api/v1/nodes/{NODE1}/commissioning/status"),
    ],
)
async def test_token_guessing_is_throttled_per_address(
    site: CentralSite, kind: str, method: str, path: str
) -> None:
    csr = make_csr(new_key(), NODE1).decode()
    body = {"token": "guess", "csr_pem": csr} if method == "POST" else None
    headers = {"Authorization": "Bearer guess"}
    async with _from(site, "127.0.0.2") as guesser, _from(site, "127.0.0.1") as other:
        for _ in range(MAX_FAILURES):
            async with guesser.request(method, path, json=body, headers=headers) as r:
                assert r.status == 401, await r.text()
        async with guesser.request(method, path, json=body, headers=headers) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) > 0
            assert (await r.json())["error"]["code"] == "throttled"
        async with other.request(method, path, json=body, headers=headers) as r:
            assert r.status == 401  # another address is not affected
    assert site.sample("shilian_auth_throttled_total", kind=kind) == 1
