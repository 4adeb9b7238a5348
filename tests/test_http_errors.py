"""Every error central's HTTP server answers is JSON (docs/api.md), including those aiohttp
answers before any middleware (request line or headers too long, too many headers, a bad method,
TLS on the plain port) and unknown static files; none logs a traceback. Raw bytes over a real
socket to the app as central.service serves it."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.central_site import CentralSite, central_site


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[CentralSite]:
    async with central_site(tmp_path) as s:
        yield s


@pytest.fixture
def tracebacks() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info or record.levelno >= logging.ERROR:
                records.append(record)

    h = Collect(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(h)
    try:
        yield records
    finally:
        root.removeHandler(h)


def _exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _get(path: bytes, extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n"


CASES = {
    "request line too long": (_get(b"/" + b"a" * 9000), 400),
    "header too long": (_get(b"/healthz", b"X-Long: " + b"a" * 9000 + b"\r\n"), 400),
    "too many headers": (_get(b"/healthz", b"".join(b"X%d: 1\r\n" % i for i in range(200))), 400),
    "bad method": (b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "TLS on the plain port": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40, 400),
    "unknown static file": (_get(b"/dashboard/static/nope.js"), 404),
    "static directory": (_get(b"/dashboard/static/vendor"), 404),
    "static traversal": (_get(b"/dashboard/static/%2e%2e/%2e%2e/http.py"), 404),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_every_error_is_json_without_a_traceback(
    site: CentralSite, tracebacks: list[logging.LogRecord], case: str
) -> None:
    request, status = CASES[case]
    port = int(site.base.rsplit(":", 1)[1])
    got, headers, body = await asyncio.to_thread(_exchange, port, request)
    assert got == status, (case, body[:200])
    assert headers["content-type"].startswith("application/json"), (case, headers)
    if headers.get("transfer-encoding") == "chunked":
        body = b"".join(body.split(b"\r\n")[1::2])
    err = json.loads(body)["error"]
    assert err["code"] and " / " in err["message"], err
    assert tracebacks == []


async def test_assets_are_still_served(site: CentralSite) -> None:
    async with site.client() as http, http.get("/dashboard/static/app.js") as r:
        assert r.status == 200 and "javascript" in r.content_type
        assert "function" in await r.text()
