"""Conference terminal and information-system health against real peers: sipp as the SIP
terminal (UDP and TCP; 200, a scenario answering 503, stopped), a TCP listener as an H.323
terminal, an aiohttp server as the information system. The first case runs the whole agent and
reads MQTT; the others drive the checks directly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from edge.terminal_source import http_check, port_check, sip_check
from shilian.broker import Mosquitto, free_port
from wire.devices import LinkHealth, TerminalHealth

from .camera_peers import SIPP_503, Sipp
from .test_edge_agent import Running, make_config, wait_for
from .test_edge_cameras import CameraObserver, obs  # noqa: F401  (fixture)

#: Short probe settings: an unanswered OPTIONS is given up after this.
TIMEOUT_S = 1.5


@pytest.fixture
async def info_system() -> AsyncIterator[tuple[str, list[int]]]:
    """An HTTP health endpoint; append a status to the list to change its answer."""
    statuses = [200]

    async def health(_r: web.Request) -> web.Response:
        return web.Response(status=statuses[-1], text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/health", statuses
    finally:
        await runner.cleanup()


@pytest.mark.slow
async def test_agent_reports_terminal_and_info_system_health(
    tmp_path: Path,
    broker: Mosquitto,
    obs: CameraObserver,  # noqa: F811
    info_system: tuple[str, list[int]],
) -> None:
    url, statuses = info_system
    with Sipp(tmp_path) as sipp:
        cfg = make_config(
            tmp_path,
            broker.port,
            terminals=[
                {"id": "terminal", "name": "会议终端", "host": "127.0.0.1", "port": sipp.port}
            ],
            terminal_probe={"interval_s": 0.5, "timeout_s": TIMEOUT_S},
            info_system={"url": url, "interval_s": 0.5},
        )
        async with Running(cfg):
            await wait_for(lambda: obs.health("terminal") == "ok", "terminal ok")
            await wait_for(lambda: obs.health("info_system") == "ok", "info system ok")
            t = obs.states("terminal")[-1]
            assert (t.kind, t.state, t.name) == ("conference_terminal", "up", "会议终端")
            assert obs.states("info_system")[-1].kind == "info_system"
            sipp.stop()
            statuses.append(503)
            await wait_for(lambda: obs.health("terminal") == "unreachable", "terminal down")
            await wait_for(lambda: obs.health("info_system") == "down", "info system down")
            assert "503" in obs.states("info_system")[-1].detail["reason"]
            assert obs.states("terminal")[-1].state == "down"
            await wait_for(lambda: len(obs.health_events("terminal")) == 2, "two events")
            events = obs.health_events("terminal")
            assert [e["health"] for e in events] == ["ok", "unreachable"]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sip_answers(tmp_path: Path, transport: str) -> None:
    with Sipp(tmp_path, transport=transport) as ok:
        assert (await sip_check("127.0.0.1", ok.port, transport, TIMEOUT_S)())[0] == "ok"
    with Sipp(tmp_path, transport=transport, scenario=SIPP_503) as busy:
        health, why = await sip_check("127.0.0.1", busy.port, transport, TIMEOUT_S)()
        assert health == TerminalHealth.UNAVAILABLE and "503" in why
    # stopped: UDP gets ICMP port unreachable, TCP a refused connection
    health, why = await sip_check("127.0.0.1", ok.port, transport, TIMEOUT_S)()
    assert health == TerminalHealth.UNREACHABLE


async def test_h323_port_and_tcp_link() -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    check = port_check("127.0.0.1", port, TIMEOUT_S, TerminalHealth.UNREACHABLE)
    assert (await check())[0] == "ok"
    server.close()
    await server.wait_closed()
    health, why = await check()
    assert health == TerminalHealth.UNREACHABLE and f"127.0.0.1:{port}" in why
    link = port_check("127.0.0.1", port, TIMEOUT_S, LinkHealth.DOWN)
    assert (await link())[0] == LinkHealth.DOWN


async def test_info_system_http(info_system: tuple[str, list[int]]) -> None:
    url, statuses = info_system
    assert (await http_check(url, TIMEOUT_S)())[0] == LinkHealth.OK
    statuses.append(500)
    health, why = await http_check(url, TIMEOUT_S)()
    assert health == LinkHealth.DOWN and "HTTP 500" in why
    health, why = await http_check(f"http://127.0.0.1:{free_port()}/", TIMEOUT_S)()
    assert health == LinkHealth.DOWN
