"""Slowloris against a running ``shilian central run`` process: many connections send a request
head, or a complete head and then its body, one byte at a time and never finish. Legitimate
requests keep being answered meanwhile, each slow connection is closed ``[http]
idle_timeout_s`` after it opened (a slow head) or ``body_timeout_s`` after its head (a slow
body), however many bytes it trickles, and the cuts are counted in /metrics."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shilian.broker import Mosquitto
from tests.processes import Central, record_result, running_central

pytestmark = pytest.mark.slow

LONG = bool(os.environ.get("SHILIAN_RELIABILITY"))
SLOW_CLIENTS = 600 if LONG else 150
IDLE_TIMEOUT_S = 2.0
#: A byte every this often: far inside the timeout, so only the whole-request bound cuts it.
TRICKLE_S = 0.25
#: Allowed lateness of a cut on a shared, noisy machine (the bound is the timeout itself).
SLACK_S = 3.0


@pytest.fixture
def central(broker: Mosquitto, tmp_path: Path) -> Iterator[Central]:
    conf = f"idle_timeout_s = {IDLE_TIMEOUT_S}\nbody_timeout_s = {IDLE_TIMEOUT_S}\n"
    with running_central(tmp_path / "central", broker.port, conf) as c:
        yield c


#: A request whose head never ends, and one whose body never does (the login reads its body
#: before any credential is checked).
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: central\r\nX-Padding: " + b"a" * 10_000
SLOW_BODY = b'{"user": "admin", "password": "' + b"a" * 10_000
BODY_HEAD = (
    b"POST /api/v1/login HTTP/1.1\r\nHost: central\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % (len(SLOW_BODY) + 2)
)


async def _slow_client(port: int, body: bool = False) -> float:
    """Trickle a request that never ends; return how long the server kept the connection
    (for a slow body: from the end of its head)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if body:
        writer.write(BODY_HEAD)
        await writer.drain()
    opened = time.monotonic()
    try:
        for byte in SLOW_BODY if body else SLOW_HEAD:
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1), TRICKLE_S) == b"":
                    break  # closed by the server
            except TimeoutError:
                continue
    except ConnectionError:
        pass
    finally:
        writer.close()
    return time.monotonic() - opened


def _cut_count(central: Central, reason: str) -> float:
    with urllib.request.urlopen(central.api + "/metrics", timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(f'shilian_http_connections_cut_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("body", [False, True], ids=["slow_head", "slow_body"])
async def test_slow_requests_are_cut_and_real_requests_served(central: Central, body: bool) -> None:
    slow = [asyncio.create_task(_slow_client(central.http_port, body)) for _ in range(SLOW_CLIENTS)]
    served, slowest = 0, 0.0
    deadline = time.monotonic() + IDLE_TIMEOUT_S * 2
    while time.monotonic() < deadline or not all(t.done() for t in slow):
        t0 = time.monotonic()
        health = await asyncio.to_thread(central.get, "/healthz")  # 5 s timeout, else fails
        slowest = max(slowest, time.monotonic() - t0)
        assert health["status"] == "ok"
        served += 1
        await asyncio.sleep(0.1)
        assert time.monotonic() < deadline + IDLE_TIMEOUT_S + SLACK_S * 4, "slow clients not cut"
    held = [t.result() for t in slow]
    assert served >= 2  # throughout: the loop runs until every slow client was cut
    assert max(held) <= IDLE_TIMEOUT_S + SLACK_S, sorted(held)[-5:]
    # cut by a timeout (counted as such), not refused: each had sent part of its request. On a
    # loaded box a head may still be unparsed when the idle timeout fires: cut as incomplete.
    cuts = _cut_count(central, "incomplete_request") + _cut_count(central, "slow_body")
    assert cuts >= SLOW_CLIENTS
    if body:
        assert _cut_count(central, "slow_body") > 0
    assert central.p is not None and central.p.poll() is None
    record_result(
        "slowloris_api_body" if body else "slowloris_api",
        slow_connections=SLOW_CLIENTS,
        requests_served=served,
        slowest_request_s=round(slowest, 2),
        requests_failed=0,
        max_held_s=round(max(held), 2),
        timeout_s=IDLE_TIMEOUT_S,
    )
