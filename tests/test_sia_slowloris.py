"""Slowloris against the SIA DC-09 receiver of a running ``shilian edge run`` process: many
connections from many addresses trickle a frame one byte at a time and never finish it, and
reconnect whenever they are cut. A panel's reports keep being answered (ACK) meanwhile, every
slow connection is closed ``[sia] guest_timeout_s`` after it opened (or evicted sooner for a
newcomer when every slot is taken), and the cuts are counted in the edge's /metrics."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from firmware_bridge import sia_dc09 as sia
from shilian.broker import Mosquitto, free_port
from tests.processes import Edge, record_result
from tests.test_edge_sia import _metrics, metric

pytestmark = pytest.mark.slow

LONG = bool(os.environ.get("SHILIAN_RELIABILITY"))
#: Slow clients, spread over addresses of 127.0.0.0/8 (the receiver allows 4 per address).
SLOW_CLIENTS = 120 if LONG else 48
ADDRESSES = 30
RUN_S = 60.0 if LONG else 8.0
GUEST_TIMEOUT_S = 2.0
TRICKLE_S = 0.2
#: Allowed lateness of a cut on a shared, noisy machine.
SLACK_S = 3.0
PANEL_ADDRESS = "127.0.0.250"
#: A panel retransmits a report its receiver did not answer; real panels wait longer between
#: tries (seconds), the test keeps the run short.
PANEL_TRIES = 20
PANEL_RETRY_S = 0.2


async def _slow_client(port: int, n: int, until: float, held: list[float]) -> None:
    """Connect, trickle an unfinished frame; reconnect when cut, until ``until``."""
    frame = sia.build_frame("SIA-DCS", n % 9999, "1234", "#1234|Nri1/BA01", now=time.time())
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(f"127.0.0.{2 + n % ADDRESSES}", 0)
            )
        except OSError:
            await asyncio.sleep(TRICKLE_S)
            continue
        opened = time.monotonic()
        try:
            for byte in frame[:-1] * 4:  # never the final CR
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(64), TRICKLE_S) == b"":
                        break
                except TimeoutError:
                    continue
            else:
                raise AssertionError("a slow connection was never cut")
        except ConnectionError:
            pass
        finally:
            writer.close()
        held.append(time.monotonic() - opened)


async def _report(port: int, seq: int, attempts: list[int]) -> bytes:
    """One report as a panel sends it, retransmitted on a new connection when the connection
    closes without an answer (DC-09 panels retry); the tries are appended to ``attempts``."""
    frame = sia.build_frame("SIA-DCS", seq, "1234", f"#1234|Nri1/BA{seq % 99:02d}", now=time.time())
    for attempt in range(1, PANEL_TRIES + 1):
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(PANEL_ADDRESS, 0)
            )
        except OSError:
            await asyncio.sleep(PANEL_RETRY_S)
            continue
        try:
            writer.write(frame)
            await writer.drain()
            answer = await asyncio.wait_for(reader.readuntil(b"\r"), 30)
            attempts.append(attempt)
            return answer
        except (asyncio.IncompleteReadError, ConnectionError):
            await asyncio.sleep(PANEL_RETRY_S)
        finally:
            writer.close()
    raise AssertionError(f"report {seq} not answered in {PANEL_TRIES} tries")


async def test_slow_frames_are_cut_and_panels_answered(broker: Mosquitto, tmp_path: Path) -> None:
    sia_port, metrics_port = free_port(), free_port()
    edge = Edge(tmp_path / "edge", "450102001003-a", broker.port)
    conf = tmp_path / "edge" / "edge.toml"
    text = conf.read_text(encoding="utf-8").replace(
        "[metrics]\nenabled = false\n",
        f'[metrics]\nenabled = true\nhost = "127.0.0.1"\nport = {metrics_port}\n',
    )
    conf.write_text(
        text + f'[sia]\nhost = "127.0.0.1"\nport = {sia_port}\ndevice = "panel1"\n'
        f"guest_timeout_s = {GUEST_TIMEOUT_S}\n"
        '[[sia.accounts]]\naccount = "1234"\n',
        encoding="utf-8",
    )
    try:
        await asyncio.to_thread(edge.start)
        attempts: list[int] = []
        assert b'"ACK"' in await _report(sia_port, 1, attempts)  # listening
        until = time.monotonic() + RUN_S
        held: list[float] = []
        slow = [
            asyncio.create_task(_slow_client(sia_port, n, until, held)) for n in range(SLOW_CLIENTS)
        ]
        answers = []
        seq = 2
        while time.monotonic() < until:
            answers.append(await _report(sia_port, seq, attempts))
            seq += 1
            await asyncio.sleep(0.1)
        await asyncio.gather(*slow)
        m = await asyncio.to_thread(_metrics, metrics_port)
    finally:
        edge.close()
    assert answers and all(b'"ACK"' in a for a in answers), [a for a in answers if b"ACK" not in a]
    print(f"panel reports: {len(answers)}, tries: max {max(attempts)}, total {sum(attempts)}")
    assert len(held) >= SLOW_CLIENTS
    assert max(held) <= GUEST_TIMEOUT_S + SLACK_S, sorted(held)[-5:]
    dev = {"device": "panel1"}
    cut = sum(
        metric(m, "shilian_edge_sia_connections_total", outcome=o, **dev)
        for o in ("guest_timeout", "evicted", "refused_address_cap", "refused_total_cap")
    )
    assert metric(m, "shilian_edge_sia_connections_total", outcome="guest_timeout", **dev) > 0
    assert cut >= len(held)
    assert metric(m, "shilian_edge_sia_frames_total", outcome="ack", **dev) == len(answers) + 1
    record_result(
        "slowloris_sia",
        slow_clients=SLOW_CLIENTS,
        slow_connections=len(held),
        panel_reports=len(answers),
        panel_retransmissions=sum(attempts) - len(attempts),
        max_held_s=round(max(held), 2),
        lost=0,
    )
