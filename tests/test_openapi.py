"""The OpenAPI document of central's HTTP API (central/openapi.py) against the real thing: every
route central mounts (with every optional part configured) is in the document and nothing else,
the document is valid OpenAPI 3.1, docs/openapi.json is the current one, and a running central
serves it at /api/v1/openapi.json."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from central import openapi
from central.config import (
    BrokerConfig,
    CaConfig,
    CentralConfig,
    FirmwareConfig,
    HttpConfig,
    StoreConfig,
)
from central.service import CentralService
from firmware_bridge import image as fi
from pki.ca import CertificateAuthority
from shilian.broker import Mosquitto
from tests.processes import add_user, login

DOC_FILE = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def full_config(tmp: Path, broker_port: int) -> CentralConfig:
    """Central with every optional route mounted (enrolment CA, firmware images)."""
    CertificateAuthority.create(tmp / "ca")
    key_file = tmp / "fw.pub"
    key_file.write_text(fi.keygen()[1].hex())
    return CentralConfig(
        broker=BrokerConfig(port=broker_port, client_id="central-openapi"),
        store=StoreConfig(path=tmp / "central.sqlite3"),
        http=HttpConfig(port=0),
        ca=CaConfig(dir=tmp / "ca", broker_host="mqtt.example"),
        firmware=FirmwareConfig(dir=tmp / "images", public_key=key_file),
    )


@contextlib.asynccontextmanager
async def running(cfg: CentralConfig) -> AsyncIterator[CentralService]:
    svc = CentralService(cfg)
    task = asyncio.create_task(svc.run())
    try:
        started = asyncio.create_task(svc.started())
        await asyncio.wait({task, started}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        assert started.done() and not task.done(), "central did not start"
        yield svc
    finally:
        svc.stop()
        await asyncio.wait_for(task, 30)


async def test_every_mounted_route_is_documented_and_nothing_else(
    broker: Mosquitto, tmp_path: Path
) -> None:
    cfg = full_config(tmp_path, broker.port)
    async with running(cfg) as svc:
        missing, extra = openapi.undocumented(openapi.routes_of(svc.http_app))
        assert missing == set(), f"routes the document lacks: {sorted(missing)}"
        assert extra == set(), f"documented routes central does not mount: {sorted(extra)}"
        base = f"http://127.0.0.1:{svc.http_port}"
        async with aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(openapi.DOC_PATH) as r:
                assert r.status == 401  # like every route that is not public
            await login(http, "viewer", add_user(cfg.store.path, "viewer", "viewer"))
            async with http.get(openapi.DOC_PATH) as r:
                assert r.status == 200 and r.content_type == "application/json"
                served = await r.json()
    assert served == openapi.document()


def test_the_document_is_valid_openapi_and_docs_copy_is_current() -> None:
    from schemathesis.specs.openapi import definitions

    doc = openapi.document()
    definitions.OPENAPI_31_VALIDATOR.validate(doc)
    assert DOC_FILE.read_text(encoding="utf-8") == openapi.dumps(doc), (
        "docs/openapi.json is stale: run `python -m central.openapi`"
    )
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "4XX" in op["responses"], (method, path)
            refs = json.dumps(op)
            assert "$defs" not in refs, (method, path)


@pytest.mark.parametrize(
    ("method", "path", "public"),
    [("GET", "/healthz", True), ("POST", "/api/v1/login", True), ("GET", "/api/v1/users", False)],
)
def test_security_follows_the_login_table(method: str, path: str, public: bool) -> None:
    op = openapi.document()["paths"][path][method.lower()]
    assert (op["security"] == []) is public
