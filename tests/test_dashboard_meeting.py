"""The meeting page end to end, all real peers: headless Chromium (Debian's, driven by
Playwright) on the dashboard's meeting page, the real central service, a private mosquitto, an
edge agent with two cameras served by the gst-rtsp-server test camera, WebRTC on loopback.
What operators rely on: from the node's page they call the village and see its camera
(getStats counts decoded frames), switch camera mid-call, hang up, and nothing stays open on
either side; the call is in the village's history with its quality."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from central.config import MeetingsConfig
from central.service import CentralService
from edge.agent import Agent
from shilian.broker import Mosquitto
from tests.camera_peers import RtspCamera
from tests.processes import add_user
from tests.test_central_service import NODE, central, make_cfg
from tests.test_edge_agent import Running, make_config
from tests.test_edge_meetings import loopback_ice, wait_until

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
#: Headless Chromium on this machine (docs/evidence.md), plus what loopback WebRTC needs: a
#: fake camera/microphone permission prompt, host candidates as IP addresses (not mDNS names),
#: and loopback candidates allowed.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection",
]
PASSWORD = "pw-op-0123"

async_api = pytest.importorskip("playwright.async_api", reason="playwright (Python) not installed")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)

__all__ = ["loopback_ice"]  # the fixture, used by every test here (autouse)


@pytest.fixture(scope="module")
def cameras() -> Iterator[RtspCamera]:
    with RtspCamera("ball", mounts=2) as cam:
        yield cam


@contextlib.asynccontextmanager
async def village_and_central(
    broker: Mosquitto,
    tmp_path: Path,
    cam: RtspCamera,
    meetings: dict[str, Any] | None = None,
    county: MeetingsConfig | None = None,
) -> AsyncIterator[tuple[CentralService, Agent]]:
    """Central (with ``county``'s [meetings]) and an agent (with ``meetings``) with two cameras."""
    cfg = make_cfg(broker, tmp_path / "central")
    if county is not None:
        cfg = cfg.model_copy(update={"meetings": county})
    (tmp_path / "central").mkdir()
    add_user(cfg.store.path, "op", "operator", NODE[:6], password=PASSWORD)
    edge_cfg = make_config(
        tmp_path,
        broker.port,
        node_id=NODE,
        cameras=[
            {"id": "cam-gate", "name": "村委会大门", "rtsp_url": cam.url(0)},
            {"id": "cam-road", "name": "村口", "rtsp_url": cam.url(1)},
        ],
        meetings=meetings or {},
    )
    async with central(cfg) as svc, Running(edge_cfg, serve_local_socket=False) as agent:
        await wait_until(lambda: svc.coverage.node_online(NODE) is True, "node online at central")
        yield svc, agent


@contextlib.asynccontextmanager
async def browser(base: str) -> AsyncIterator[Any]:
    async with async_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            ctx = await b.new_context(base_url=base, locale="zh-CN")
            r = await ctx.request.post("/api/v1/login", data={"user": "op", "password": PASSWORD})
            assert r.ok, await r.text()
            yield await ctx.new_page()
        finally:
            await b.close()


async def page_state(page: Any) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate(
        "() => { const m = window.__meeting; return {state: m.state, session: m.session,"
        " frames: m.framesDecoded, error: m.error, first: m.firstFrameMs, stats: m.stats}; }"
    )
    return state


async def wait_page(page: Any, cond: Any, what: str) -> dict[str, Any]:
    box: dict[str, Any] = {}

    async def check() -> None:
        box.update(await page_state(page))

    async def poll() -> None:
        while True:
            await check()
            if box.get("error"):
                raise AssertionError(f"page error while waiting for {what}: {box['error']}")
            if cond(box):
                return
            await asyncio.sleep(0.1)

    async with asyncio.timeout(45):
        await poll()
    return box


def test_every_string_meeting_js_uses_is_in_the_catalogue() -> None:
    import re

    from central import dashboard, i18n

    js = (dashboard.ASSETS / "meeting.js").read_text(encoding="utf-8")
    used = {k for k in re.findall(r"\bt\(\"([a-z_0-9]+)\"", js) if not k.endswith("_")}
    used |= {f"meeting_state_{s}" for s in ("idle", "calling", "connecting", "active", "ended")}
    assert len(used) > 15
    assert used - set(i18n.catalogue()) == set()


def _player_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "media-player")


async def test_operator_calls_sees_switches_and_hangs_up(
    broker: Mosquitto, tmp_path: Path, cameras: RtspCamera
) -> None:
    async with village_and_central(broker, tmp_path, cameras) as (svc, agent):
        assert agent.meetings is not None
        base = f"http://127.0.0.1:{svc.http_port}"
        async with browser(base) as page:
            # the node's page links to the call
            await page.goto(f"/dashboard/#/n/{NODE}")
            link = page.locator("[data-test=node-state] [data-test=meeting-link]")
            await link.wait_for()
            assert await link.get_attribute("href") == f"/dashboard/meeting?node={NODE}"
            await link.click()
            await page.wait_for_url(f"**/dashboard/meeting?node={NODE}")
            await page.evaluate("() => window.__meeting.ready")
            assert await page.locator("[data-test=meeting-state]").inner_text() == "未通话"
            options = await page.locator("[data-test=meeting-camera] option").all_inner_texts()
            assert any("cam-road" in o for o in options), options

            await page.click("[data-test=meeting-call]")
            st = await wait_page(page, lambda s: s["frames"] >= 10, "frames decoded")
            assert st["state"] == "active" and st["first"] is not None
            assert await page.locator("[data-test=meeting-state]").inner_text() == "通话中"
            session = st["session"]
            media = agent.meetings.media
            assert media is not None and media.camera == "cam-gate"  # the conference camera
            assert svc.meetings.calls[session].camera == "cam-gate"

            # switch camera mid-call: the pictures keep coming, from the other camera
            await page.select_option("[data-test=meeting-camera]", "cam-road")
            await wait_until(lambda: media.camera == "cam-road", "node switched camera")
            n = st["frames"]
            await wait_page(page, lambda s: s["frames"] >= n + 20, "frames after the switch")
            await wait_until(lambda: svc.meetings.calls[session].camera == "cam-road", "central")

            await page.click("[data-test=meeting-hangup]")
            await wait_page(page, lambda s: s["state"] == "ended", "page ended the call")
            # both sides freed: central's session, the node's peer connection, player and task
            await wait_until(lambda: svc.meetings.calls == {}, "central forgot the call")
            await wait_until(lambda: agent.meetings is not None and agent.meetings.media is None,
                             "node freed the call")  # fmt: skip
            assert media.pc.connectionState == "closed" and media.player is None
            assert agent.meetings.line.session is None
            await wait_until(lambda: _player_threads() == 0, "camera player threads ended")
            assert [t for t in asyncio.all_tasks() if t.get_name().startswith("meeting-")] == []
            assert await page.evaluate("() => document.querySelector('video').srcObject") is None

            rec = await svc.meetings.get(session)
            assert rec is not None and rec["end_reason"] == "hangup_local"
            assert rec["camera"] == "cam-road" and rec["user"] == "op"
            assert rec["stats"].get("frames_decoded", 0) > 0
            row = page.locator(f"[data-test=history-row][data-session='{session}']")
            await row.wait_for()
            assert "hangup_local" in await row.inner_text()


async def test_call_to_a_village_in_a_call_is_busy_on_the_page(
    broker: Mosquitto, tmp_path: Path, cameras: RtspCamera
) -> None:
    async with village_and_central(broker, tmp_path, cameras) as (svc, _agent):
        base = f"http://127.0.0.1:{svc.http_port}"
        async with browser(base) as first, browser(base) as second:
            for page in (first, second):
                await page.goto(f"/dashboard/meeting?node={NODE}")
                await page.evaluate("() => window.__meeting.ready")
            await first.click("[data-test=meeting-call]")
            await wait_page(first, lambda s: s["frames"] >= 1, "first call's frames")
            await second.click("[data-test=meeting-call]")
            await second.wait_for_function(
                "() => document.querySelector('[data-test=meeting-state]').dataset.state"
                " === 'failed'",
                timeout=30_000,
            )
            text = await second.locator("[data-test=meeting-state]").inner_text()
            assert "通话中" in text and "already in a call" in text
            assert len(svc.meetings.calls) == 1
            await first.click("[data-test=meeting-hangup]")
            await wait_until(lambda: svc.meetings.calls == {}, "hung up")
