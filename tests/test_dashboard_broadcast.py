"""The 1:N broadcast page end to end, all real peers: headless Chromium (fake camera and
microphone) on the dashboard's broadcast page, the real central service, a private mosquitto and
real edge agents (in this loop), WebRTC on loopback. What operators rely on: they address every
village of a township at once; two, then eight villages each decode the operator's pictures;
an offline or busy village is reported on its own row with a zh/en reason while the others
connect; ending the broadcast frees every village's line, peer connection and tasks and every
session at central; each village's leg is audited."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from central.service import CentralService
from edge.agent import Agent
from shilian.broker import Mosquitto
from tests.processes import add_user
from tests.test_central_service import central, make_cfg
from tests.test_dashboard_meeting import PASSWORD, browser
from tests.test_edge_agent import Running, make_config
from tests.test_edge_broadcast import Speaker
from tests.test_edge_meetings import loopback_ice, wait_until

pytestmark = pytest.mark.slow

__all__ = ["loopback_ice"]  # the fixture, used by every test here (autouse)

TOWNSHIP = "450102001"
#: Villages of that township in the registry (one node each).
VILLAGES = [
    "450102001003", "450102001004", "450102001006", "450102001007", "450102001010",
    "450102001012", "450102001013", "450102001014", "450102001015", "450102001016",
]  # fmt: skip
FRAMES = 10


def _nodes(n: int) -> list[str]:
    return [f"{v}-a" for v in VILLAGES[:n]]


@contextlib.asynccontextmanager
async def township(
    broker: Mosquitto, tmp_path: Path, nodes: list[str]
) -> AsyncIterator[tuple[CentralService, dict[str, Agent]]]:
    (tmp_path / "central").mkdir()
    cfg = make_cfg(broker, tmp_path / "central")
    add_user(cfg.store.path, "op", "operator", TOWNSHIP[:6], password=PASSWORD)
    async with contextlib.AsyncExitStack() as stack:
        svc = await stack.enter_async_context(central(cfg))
        agents = {}
        for node in nodes:
            (tmp_path / node).mkdir()
            edge_cfg = make_config(tmp_path / node, broker.port, node_id=node)
            agents[node] = await stack.enter_async_context(
                Running(edge_cfg, serve_local_socket=False, serve_metrics=False)
            )
        await wait_until(
            lambda: all(svc.coverage.node_online(n) is True for n in nodes), "nodes online"
        )
        await asyncio.sleep(0.3)  # each node's meet/req subscription follows its birth
        yield svc, agents


async def legs(page: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = await page.evaluate("() => window.__broadcast.legs")
    return out


async def wait_legs(page: Any, cond: Any, what: str, within: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        got = await legs(page)
        if cond(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {got}")
        await asyncio.sleep(0.2)


def _frames(agent: Agent) -> int:
    desk = agent.meetings
    return desk.receiver.frames if desk is not None and desk.receiver is not None else 0


def _broadcast_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("broadcast-")]


async def _open(page: Any) -> None:
    await page.goto(f"/dashboard/broadcast?code={TOWNSHIP}")
    await page.evaluate("() => window.__broadcast.ready")


async def _end_and_check_freed(page: Any, svc: CentralService, agents: dict[str, Agent]) -> None:
    await page.click("[data-test=broadcast-end]")
    await wait_legs(page, lambda ls: all(v["state"] == "ended" for v in ls.values()), "ended")
    await wait_until(lambda: svc.meetings.calls == {}, "central forgot every leg")
    for node, agent in agents.items():
        desk = agent.meetings
        assert desk is not None
        await wait_until(lambda d=desk: d.receiver is None and d.line.session is None,
                         f"{node} freed its leg")  # fmt: skip
    await wait_until(lambda: _broadcast_tasks() == [], "track readers ended")
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("meeting-")] == []
    # the page closed every peer connection and stopped its camera
    await page.wait_for_function(
        "() => document.querySelector('[data-test=broadcast-preview]').srcObject === null",
        timeout=30_000,
    )


def _audit(svc: CentralService) -> list[tuple[str, str, str]]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(svc.cfg.store.path)) as c:
        rows = c.execute(
            "SELECT action, target, outcome FROM audit WHERE action = 'meeting_call' ORDER BY id"
        ).fetchall()
    return [(str(a), str(t), str(o)) for a, t, o in rows]


def test_every_string_broadcast_js_uses_is_in_the_catalogue() -> None:
    import re

    from central import dashboard, i18n

    js = (dashboard.ASSETS / "broadcast.js").read_text(encoding="utf-8")
    used = {k for k in re.findall(r"\bt\(\"([a-z_0-9]+)\"", js) if not k.endswith("_")}
    used |= set(re.findall(r"\"((?:broadcast_state|leg_state|leg_end)_[a-z_]+)\"", js))
    assert {"leg_state_busy", "leg_state_offline", "leg_end_hangup_remote"} <= used
    assert used - set(i18n.catalogue()) == set()


async def test_two_villages_receive_while_an_offline_and_a_busy_one_are_reported(
    broker: Mosquitto, tmp_path: Path
) -> None:
    live, offline, busy = _nodes(2), VILLAGES[2] + "-a", VILLAGES[3] + "-a"
    async with township(broker, tmp_path, [*live, busy]) as (svc, agents):
        # a village whose node central knows but which is offline now
        (tmp_path / offline).mkdir()
        cfg = make_config(tmp_path / offline, broker.port, node_id=offline)
        async with Running(cfg, serve_local_socket=False, serve_metrics=False):
            await wait_until(lambda: svc.coverage.node_online(offline) is True, "node online")
        await wait_until(lambda: svc.coverage.node_online(offline) is False, "node offline")
        # the busy village is already in another operator's broadcast
        other = Speaker(audio=False)
        taken = asyncio.create_task(
            svc.meetings.call(busy, await other.offer(), None, "op2", "broadcast")
        )
        await wait_until(lambda: svc.meetings.busy_node(busy) is not None, "busy leg")
        await taken
        base = f"http://127.0.0.1:{svc.http_port}"
        async with browser(base) as page:
            # the township's page links to the broadcast to its villages
            await page.goto(f"/dashboard/#/u/{TOWNSHIP}")
            link = page.locator("[data-test=broadcast-link]")
            await link.wait_for()
            assert await link.get_attribute("href") == f"/dashboard/broadcast?code={TOWNSHIP}"
            await link.click()
            await page.wait_for_url(f"**/dashboard/broadcast?code={TOWNSHIP}")
            await page.evaluate("() => window.__broadcast.ready")
            rows = await page.locator("[data-test=broadcast-row]").count()
            assert rows == 4
            await page.click("[data-test=broadcast-start]")
            got = await wait_legs(
                page,
                lambda ls: (
                    all(ls.get(n, {}).get("state") == "connected" for n in live)
                    and ls.get(offline, {}).get("state") == "offline"
                    and ls.get(busy, {}).get("state") == "busy"
                ),
                "two connected, one offline, one busy",
            )
            assert "离线" in got[offline]["reason"] and "offline" in got[offline]["reason"]
            assert "通话中" in got[busy]["reason"] and "in a call" in got[busy]["reason"]
            cell = page.locator(f"[data-test=leg-state][data-node='{offline}']")
            assert (await cell.inner_text()).startswith("离线")
            # each live village decodes the operator's pictures (and hears the microphone)
            for node in live:
                await wait_until(lambda a=agents[node]: _frames(a) >= FRAMES,
                                 f"{node} decoded frames")  # fmt: skip
                desk = agents[node].meetings
                receiver = desk.receiver if desk is not None else None
                assert receiver is not None and receiver.width and receiver.height
                await wait_until(lambda r=receiver: r.audio_frames > 0, f"{node} audio")
            # the page shows what each village reports it decoded
            await wait_legs(
                page, lambda ls: all(ls[n]["received"] >= FRAMES for n in live), "reports"
            )
            cell = page.locator(f"[data-test=leg-received][data-node='{live[0]}']")
            assert int(await cell.inner_text()) >= FRAMES
            busy_desk = agents[busy].meetings
            assert busy_desk is not None and busy_desk.receiver is not None
            # ending frees the operator's legs only; the other broadcast goes on
            await page.click("[data-test=broadcast-end]")
            await wait_legs(page, lambda ls: all(ls[n]["state"] == "ended" for n in live), "ended")
            await wait_until(
                lambda: set(c.node_id for c in svc.meetings.calls.values()) == {busy},
                "central kept only the other broadcast",
            )
            for node in live:
                desk = agents[node].meetings
                assert desk is not None
                await wait_until(lambda d=desk: d.receiver is None and d.line.session is None,
                                 f"{node} freed its leg")  # fmt: skip
        audit = _audit(svc)
        for node in live:
            assert ("meeting_call", node, "ok") in audit
        assert ("meeting_call", offline, "node_offline") in audit
        assert ("meeting_call", busy, "busy") in audit
        session = next(iter(svc.meetings.calls))
        await svc.meetings.hang_up(session)
        await other.close()


async def test_eight_villages_receive_one_leaves_and_ending_frees_everything(
    broker: Mosquitto, tmp_path: Path
) -> None:
    nodes = _nodes(8)
    stays, leaves = nodes[:7], nodes[7]
    async with township(broker, tmp_path, stays) as (svc, agents):
        (tmp_path / leaves).mkdir()
        cfg = make_config(tmp_path / leaves, broker.port, node_id=leaves)
        last = Running(cfg, serve_local_socket=False, serve_metrics=False)
        leaving = await last.__aenter__()
        try:
            await wait_until(lambda: svc.coverage.node_online(leaves) is True, "8th online")
            await asyncio.sleep(0.3)  # its meet/req subscription follows its birth
            base = f"http://127.0.0.1:{svc.http_port}"
            async with browser(base) as page:
                await _open(page)
                await page.click("[data-test=broadcast-start]")
                await wait_legs(
                    page,
                    lambda ls: len(ls) == 8 and all(v["state"] == "connected" for v in ls.values()),
                    "eight connected",
                    within=90.0,
                )
                for node, agent in [*agents.items(), (leaves, leaving)]:
                    await wait_until(lambda a=agent: _frames(a) >= FRAMES,
                                     f"{node} decoded frames", within=90.0)  # fmt: skip
                assert len(svc.meetings.calls) == 8

                # one village's node stops: its row says so, the other seven go on
                await last.__aexit__(None, None, None)
                got = await wait_legs(
                    page, lambda ls: ls[leaves]["state"] == "ended", "the 8th leg ended"
                )
                assert "村端已结束" in got[leaves]["reason"]
                assert all(got[n]["state"] == "connected" for n in stays)
                before = {n: _frames(a) for n, a in agents.items()}
                for node, agent in agents.items():
                    await wait_until(lambda a=agent, n=node: _frames(a) >= before[n] + FRAMES,
                                     f"{node} still decoding")  # fmt: skip
                rec = await svc.meetings.history(leaves[:12], 1, 0)
                assert rec[1][0]["end_reason"] == "hangup_remote"

                await _end_and_check_freed(page, svc, agents)
            assert sum(1 for a in _audit(svc) if a[2] == "ok") == 8
        finally:
            await last.__aexit__(None, None, None)
