"""The village's camera opened when the operator opens the meeting page, all real peers:
headless Chromium on the meeting page, the real central service, a private mosquitto, an edge
agent with two cameras of the gst-rtsp-server test camera, WebRTC on loopback. What operators
rely on: the page's opening prepares the conference camera, so the call sends what the node
already holds; a camera chosen before calling is prepared too, and closed again when no call
comes within the linger."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.service import CentralService
from shilian.broker import Mosquitto
from tests.camera_peers import RtspCamera
from tests.test_central_service import NODE
from tests.test_dashboard_meeting import (
    _player_threads,
    browser,
    village_and_central,
    wait_page,
)
from tests.test_edge_meetings import S1, S2, loopback_ice, node, wait_until
from wire.meeting import MeetingRequest

pytestmark = pytest.mark.slow

__all__ = ["loopback_ice"]  # the fixture, used by every test here (autouse)

#: The node's linger in this test: long enough for the click, short for the wait after.
LINGER_S = 8.0


@pytest.fixture
def cameras() -> Iterator[RtspCamera]:
    with RtspCamera("ball", mounts=2) as cam:
        yield cam


def _prepares(svc: CentralService) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(svc.cfg.store.path)) as c:
        rows = c.execute(
            "SELECT target, outcome FROM audit WHERE action = 'meeting_prepare' ORDER BY id"
        ).fetchall()
    return [(str(t), str(o)) for t, o in rows]


async def test_the_page_prepares_the_camera_and_a_camera_not_called_is_closed_after_the_linger(
    broker: Mosquitto, tmp_path: Path, cameras: RtspCamera
) -> None:
    meetings = {"prepare_linger_s": LINGER_S}
    async with village_and_central(broker, tmp_path, cameras, meetings) as (svc, agent):
        desk = agent.meetings
        assert desk is not None
        signals = agent.registry.get_sample_value
        base = f"http://127.0.0.1:{svc.http_port}"
        async with browser(base) as page:
            await page.goto(f"/dashboard/meeting?node={NODE}")
            await page.evaluate("() => window.__meeting.ready")
            # before any click the node opened its conference camera and holds a key frame
            await wait_until(lambda: desk.taps is not None and "cam-gate" in desk.taps.prepared(),
                             "conference camera prepared")  # fmt: skip
            assert desk.taps is not None and desk.media is None
            tap = desk.taps._open["cam-gate"]
            await wait_until(lambda: len(tap.gop) > 0, "a key frame buffered")
            assert agent.registry.get_sample_value("shilian_edge_meeting_prepared_cameras") == 1

            await page.click("[data-test=meeting-call]")
            await wait_page(page, lambda s: s["frames"] >= 1, "first frame decoded")
            # the call sends the camera the page's opening prepared (no second opening)
            assert desk.media is not None and desk.media.tap is tap
            assert desk.taps.prepared() == frozenset()  # the call took the camera over
            await page.click("[data-test=meeting-hangup]")
            await wait_page(page, lambda s: s["state"] == "ended", "hung up")
            await wait_until(lambda: desk.media is None, "node freed the call")
            await wait_until(lambda: _player_threads() == 0, "the call's camera closed")

            # another camera chosen before calling: prepared, then closed when no call comes
            await page.select_option("[data-test=meeting-camera]", "cam-road")
            await wait_until(lambda: "cam-road" in desk.taps.prepared(), "cam-road prepared")
            assert _player_threads() == 1
            await asyncio.sleep(LINGER_S / 2)
            assert desk.taps.is_open("cam-road")  # still waiting for a call
            await wait_until(lambda: desk.taps.prepared() == frozenset(), "linger over",
                             within=LINGER_S + 10)  # fmt: skip
            assert not desk.taps.is_open("cam-road")
            await wait_until(lambda: _player_threads() == 0, "camera player thread ended")
            assert agent.registry.get_sample_value("shilian_edge_meeting_prepared_cameras") == 0
            ok = signals("shilian_edge_meeting_signals_total", {"result": "prepare"})
            assert ok == 2
            assert _prepares(svc) == [(NODE, "ok"), (NODE, "ok")]


async def test_prepares_beyond_the_bound_or_for_unknown_cameras_open_nothing(
    tmp_path: Path, broker: Mosquitto, cameras: RtspCamera
) -> None:
    async with node(tmp_path, broker, cameras, prepare_max=1) as (agent, op):
        desk = agent.meetings
        assert desk is not None

        def count(result: str) -> float:
            v = agent.registry.get_sample_value(
                "shilian_edge_meeting_signals_total", {"result": result}
            )
            return v or 0.0

        def prepare(session: str, camera: str) -> MeetingRequest:
            return MeetingRequest(session=session, op="prepare", ts=time.time(), camera=camera)

        await op.send(prepare(S1, "cam-gate"))
        await wait_until(lambda: count("prepare") == 1, "first camera prepared")
        await op.send(prepare(S2, "cam-road"))  # over prepare_max = 1
        await op.send(prepare("3" * 32, "cam-none"))
        await wait_until(lambda: count("prepare_full") == 1, "second refused")
        await wait_until(lambda: count("prepare_no_camera") == 1, "unknown camera dropped")
        assert desk.taps is not None and desk.taps.prepared() == frozenset({"cam-gate"})
        assert _player_threads() == 1
        assert not op.replies  # a prepare is never answered
