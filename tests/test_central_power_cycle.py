"""An operator power-cycles a camera through central's command path, end to end: ``shilian
central run`` (role check, audit), a real mosquitto, the real agent, the board simulator over a
pty. Only an admin may; the outcome is an event at central; the command is in the audit log."""

from __future__ import annotations

import asyncio
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from edge.config import parse_config
from firmware_bridge.simulator import simulate_board
from shilian.broker import Mosquitto, free_port
from tests.processes import Central, add_user, wait_for
from tests.video_scenario import NANNING

from .test_edge_agent import Running

pytestmark = pytest.mark.slow

VILLAGE = next(u.code for u in NANNING.villages() if u.code.startswith("450103"))
NODE = f"{VILLAGE}-a"


async def test_an_admins_power_cycle_is_acked_recorded_and_audited_and_a_viewer_is_refused(
    broker: Mosquitto, tmp_path: Path
) -> None:
    central = Central(tmp_path / "central", broker.port)
    viewer_pw = add_user(central.db, "cam-viewer", "operator")
    await asyncio.to_thread(central.start)
    try:
        async with simulate_board(seed=8) as sim:
            cfg = parse_config(
                {
                    "node_id": NODE,
                    "broker": {"port": broker.port},
                    "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
                    "metrics": {"enabled": False},
                    "alarm_board": {
                        "device": sim.slave_path,
                        "zones": [{"input": 1, "kind": "panic"}],
                    },
                    "cameras": [
                        {
                            "id": "cam-gate",
                            "rtsp_url": f"rtsp://127.0.0.1:{free_port()}/s",
                            "relay": 3,
                        }
                    ],
                    "remediation": {"off_ms": 200, "enabled": False},
                }
            )
            async with Running(cfg, serve_local_socket=False) as agent:
                await asyncio.to_thread(
                    wait_for,
                    lambda: (
                        central.node(NODE)["state"] == "online"
                        and agent.status()["alarm_board"]["state"] == "up"
                    ),
                    what="node online, board up",
                )
                path = f"/api/v1/nodes/{NODE}/commands"
                ping = {"cmd": "ping", "timeout_s": 1}

                def answers_ping() -> bool:  # it subscribes to requests after its birth
                    return bool(central.call("POST", path, ping)["result"])

                await asyncio.to_thread(wait_for, answers_ping, what="the node answers")
                body = {"cmd": "power-cycle", "args": {"camera": "cam-gate"}}
                token = (await asyncio.to_thread(central.login, "cam-viewer", viewer_pw))["token"]
                with pytest.raises(urllib.error.HTTPError) as e:
                    await asyncio.to_thread(central.call, "POST", path, body, token)
                assert e.value.code == 403  # an operator role may not send commands
                reply = await asyncio.to_thread(central.call, "POST", path, body)
                assert reply["result"]["queued"] is True and reply["result"]["relay"] == 3

                def outcome() -> dict[str, Any] | None:
                    evs = [e for e in central.events(NODE) if e["kind"] == "camera_power_cycle"]
                    return evs[0] if evs else None

                ev = await asyncio.to_thread(wait_for, outcome, what="the outcome at central")
                assert ev["device"] == "cam-gate"
                assert ev["data"]["outcome"] == "acked" and ev["data"]["trigger"] == "operator"
                assert sim.core.relays.pulses == {3: 1}
                audit = await asyncio.to_thread(central.get, "/api/v1/audit?action=command")
                cmds = [a for a in audit["entries"] if a["detail"].get("cmd") == "power-cycle"]
                assert [(a["user"], a["outcome"]) for a in cmds] == [("admin", "ok")]

                # the dashboard: an admin clicks 断电重启 on the camera's row of the node page
                await asyncio.to_thread(_click_power_cycle, central)

                def outcomes() -> list[dict[str, Any]]:
                    return [e for e in central.events(NODE) if e["kind"] == "camera_power_cycle"]

                await asyncio.to_thread(
                    wait_for, lambda: len(outcomes()) == 2, what="the second outcome"
                )
                assert sim.core.relays.pulses == {3: 2}
    finally:
        await asyncio.to_thread(central.close)


def _click_power_cycle(central: Central) -> None:
    from tests.test_dashboard import chromium, open_dashboard, screenshot, watched

    with chromium() as browser:
        ctx = browser.new_context(viewport={"width": 1366, "height": 900}, locale="zh-CN")
        token = central.login("admin", "e2e-admin-password")["token"]
        ctx.add_cookies([{"name": "shilian_session", "value": token, "url": central.api}])
        page: Any = watched(ctx.new_page())
        try:
            open_dashboard(page, central, f"/dashboard/#/n/{NODE}")
            button = "[data-test=devices] tr[data-device='cam-gate'] button[data-power-cycle]"
            page.wait_for_selector(button)
            page.click(button)
            page.wait_for_function(
                "() => document.querySelector('[data-test=action-result]').textContent"
                ".includes('cam-gate')"
            )
            assert "3" in page.inner_text("[data-test=action-result]")
            screenshot(page, "power-cycle")
        finally:
            ctx.close()
        page.rec.check()
