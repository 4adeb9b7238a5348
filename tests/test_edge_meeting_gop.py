"""A call starts from the camera's buffered key frame (edge.camera_tap, edge.gop_buffer), not
its next one, and ``[meetings] keep_warm`` keeps a camera open between calls. Real peers: a
private mosquitto, the gst-rtsp-server test camera with a key frame every 10 s, the agent in
this loop and an aiortc caller (tests/test_edge_meetings.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shilian.broker import Mosquitto
from tests.camera_peers import RtspCamera
from tests.test_edge_meetings import (
    S1,
    S2,
    Viewer,
    _offer,
    _player_threads,
    loopback_ice,  # noqa: F401  (the fixture, used by every test here)
    node,
    wait_until,
)
from wire.meeting import MeetingRequest

pytestmark = pytest.mark.slow

#: The camera sends a key frame every 100 frames at 10 fps: 10 s, far longer than a call's
#: set-up, so a picture that arrives before the next key frame came from the buffered one.
KEY_INT = 100


async def test_a_call_starts_at_the_buffered_key_frame_of_a_camera_kept_warm(
    tmp_path: Path, broker: Mosquitto
) -> None:
    with RtspCamera("ball", mounts=2, key_int=KEY_INT) as cam:
        async with node(tmp_path, broker, cam, keep_warm=["cam-gate"]) as (agent, op):
            desk = agent.meetings
            assert desk is not None
            # the node opened the camera by itself and holds its current group of pictures
            await wait_until(lambda: desk.taps is not None and desk.taps.is_open("cam-gate"),
                             "camera kept warm")  # fmt: skip
            assert desk.taps is not None
            tap = desk.taps._open["cam-gate"]
            await wait_until(lambda: len(tap.gop) > 0, "a key frame buffered", within=40)
            key = tap.gop.packets()[0]
            viewer = Viewer()
            await op.send(_offer(S1, await viewer.offer()))
            answer = await op.reply(S1, "answer")
            await viewer.answer(answer.sdp or "")
            await wait_until(lambda: viewer.frames >= 1, "first frame decoded")
            # decoded before the camera sent another key frame: it came from the buffer
            assert tap.gop.packets()[0] is key
            assert desk.media is not None and desk.media.tap is tap
            await wait_until(lambda: viewer.frames >= 10, "frames keep coming")
            await op.send(MeetingRequest(session=S1, op="hangup", ts=time.time()))
            await wait_until(lambda: desk.media is None, "call freed")
            await viewer.close()
            # the camera stays open for the next call, which again starts at once
            assert desk.taps.is_open("cam-gate") and _player_threads() == ["media-player"]
            key = tap.gop.packets()[0]
            second = Viewer()
            await op.send(_offer(S2, await second.offer()))
            await second.answer((await op.reply(S2, "answer")).sdp or "")
            await wait_until(lambda: second.frames >= 1, "second call's first frame")
            assert tap.gop.packets()[0] is key
            await op.send(MeetingRequest(session=S2, op="hangup", ts=time.time()))
            await wait_until(lambda: desk.media is None, "second call freed")
            await second.close()
        # the agent stopped: the warm camera is closed with it
        await wait_until(lambda: _player_threads() == [], "player thread ended")


async def test_a_camera_not_kept_warm_is_closed_after_the_call(
    tmp_path: Path, broker: Mosquitto
) -> None:
    with RtspCamera("ball", mounts=2) as cam:
        async with node(tmp_path, broker, cam) as (agent, op):
            desk = agent.meetings
            assert desk is not None
            assert desk.taps is None  # nothing opened (nor imported) before a call
            viewer = Viewer()
            await op.send(_offer(S1, await viewer.offer()))
            await viewer.answer((await op.reply(S1, "answer")).sdp or "")
            await wait_until(lambda: viewer.frames >= 5, "frames decoded")
            await op.send(MeetingRequest(session=S1, op="hangup", ts=time.time()))
            await wait_until(lambda: desk.media is None, "call freed")
            await viewer.close()
            assert desk.taps is not None and not desk.taps.is_open("cam-gate")
            await wait_until(lambda: _player_threads() == [], "player thread ended")


async def test_a_camera_kept_warm_that_cannot_be_opened_is_counted_and_retried(
    tmp_path: Path, broker: Mosquitto
) -> None:
    with RtspCamera("ball", mounts=2) as cam:
        cam.stop()  # nothing listens on its port any more
        async with node(tmp_path, broker, cam, keep_warm=["cam-gate"]) as (agent, op):
            desk = agent.meetings
            assert desk is not None
            failures = "shilian_edge_meeting_warm_failures_total"
            await wait_until(
                lambda: (agent.registry.get_sample_value(failures) or 0) >= 1, "failure counted"
            )
            # the node keeps serving: a call to that camera is refused with the reason
            viewer = Viewer()
            await op.send(_offer(S1, await viewer.offer()))
            rej = await op.reply(S1, "reject")
            assert rej.error is not None and rej.error.code == "camera_failed"
            await viewer.close()
            assert desk.taps is not None and not desk.taps.is_open("cam-gate")
