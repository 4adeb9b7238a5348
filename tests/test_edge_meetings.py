"""Meetings at the node (edge.meetings, edge.meeting_media) against real peers: a private
mosquitto, the gst-rtsp-server test camera, the agent in this loop, and an operator that is a
real aiortc peer connection (as the browser is in tests/test_dashboard_meeting.py) signalling
over MQTT as central does. What users rely on: the village's camera reaches the caller as H.264
passed through; a second caller gets busy; switching cameras and a camera that restarts keep
the picture coming; hanging up frees the peer connection, the player and the call's task."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

import wire
from edge.agent import Agent
from shilian.broker import Mosquitto
from tests.camera_peers import RtspCamera
from tests.test_edge_agent import NODE, Running, make_config
from wire.meeting import MeetingReply, MeetingRequest

pytestmark = pytest.mark.slow

WAIT_S = 30.0


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice skips 127.0.0.1 when it gathers host candidates: on a loopback-only test both
    peers would have none. The one reach into aioice; fails loudly if aioice renames it."""
    import aioice.ice

    assert callable(aioice.ice.get_host_addresses)
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda **_: ["127.0.0.1"])


@pytest.fixture(scope="module")
def cameras() -> Iterator[RtspCamera]:
    with RtspCamera("ball", mounts=2) as cam:
        yield cam


async def wait_until(cond: Any, what: str, within: float = WAIT_S) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Operator:
    """The caller: an aiortc peer connection receiving video, signalling on the node's
    meet/req and reading its meet/res, as central relays a page's offer."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.topics = wire.Topics(NODE)
        self.replies: list[MeetingReply] = []
        self.client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Operator:
        self.client = aiomqtt.Client(
            "127.0.0.1", self.broker.port, identifier=f"op-{os.getpid()}-{id(self)}",
            protocol=aiomqtt.ProtocolVersion.V5,
        )  # fmt: skip
        await self.client.__aenter__()
        await self.client.subscribe(self.topics.meet_res, qos=1)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None and self.client is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        assert self.client is not None
        async for msg in self.client.messages:
            payload = bytes(msg.payload)
            self.replies.append(wire.decode(MeetingReply, payload, node_id=NODE))

    async def send(self, req: MeetingRequest) -> None:
        assert self.client is not None
        await self.client.publish(self.topics.meet_req, wire.encode(req), qos=1)

    async def reply(self, session: str, op: str) -> MeetingReply:
        await wait_until(
            lambda: any(r.session == session and r.op == op for r in self.replies), f"{op} reply"
        )
        return next(r for r in self.replies if r.session == session and r.op == op)


class Viewer:
    """One aiortc peer connection that receives the node's video and counts decoded frames."""

    def __init__(self) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection

        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.frames = 0
        self.sizes: set[tuple[int, int]] = set()
        self._task: asyncio.Task[None] | None = None

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self._task = asyncio.ensure_future(self._count(track))

    async def _count(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.frames += 1
                self.sizes.add((frame.width, frame.height))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    async def close(self) -> None:
        await self.pc.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _cfg(tmp_path: Path, broker: Mosquitto, cam: RtspCamera, **meetings: Any) -> Any:
    return make_config(
        tmp_path,
        broker.port,
        cameras=[
            {"id": "cam-gate", "name": "村委会大门", "rtsp_url": cam.url(0)},
            {"id": "cam-road", "name": "村口", "rtsp_url": cam.url(1)},
        ],
        meetings=meetings,
    )


@contextlib.asynccontextmanager
async def node(
    tmp_path: Path, broker: Mosquitto, cam: RtspCamera, **meetings: Any
) -> AsyncIterator[tuple[Agent, Operator]]:
    async with Running(_cfg(tmp_path, broker, cam, **meetings), serve_local_socket=False) as a:
        await wait_until(lambda: a.connected, "agent connected")
        await asyncio.sleep(0.2)  # the subscription follows the birth
        async with Operator(broker) as op:
            yield a, op


def _sockets() -> int:
    return len([f for f in os.listdir("/proc/self/fd") if _is_socket(f)])


def _is_socket(fd: str) -> bool:
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return False


def _player_threads() -> list[str]:
    """aiortc's MediaPlayer reads each camera in a thread of this name."""
    return [t.name for t in threading.enumerate() if t.name == "media-player"]


def _offer(session: str, sdp: str, camera: str | None = None) -> MeetingRequest:
    return MeetingRequest(session=session, op="offer", ts=time.time(), sdp=sdp, camera=camera)


S1, S2 = "1" * 32, "2" * 32


async def test_call_sends_the_camera_switches_is_busy_and_frees_everything_on_hangup(
    tmp_path: Path, broker: Mosquitto, cameras: RtspCamera
) -> None:
    async with node(tmp_path, broker, cameras) as (agent, op):
        assert agent.meetings is not None
        sockets0 = _sockets()
        viewer = Viewer()
        await op.send(_offer(S1, await viewer.offer()))
        answer = await op.reply(S1, "answer")
        assert answer.camera == "cam-gate"  # the conference camera: the first one
        assert "H264" in (answer.sdp or "") and "VP8" not in (answer.sdp or "")
        await viewer.answer(answer.sdp or "")
        await wait_until(lambda: viewer.frames >= 5, "frames decoded")
        # a second caller while the line is busy
        other = Viewer()
        await op.send(_offer(S2, await other.offer()))
        busy = await op.reply(S2, "busy")
        assert busy.error is not None and "通话中" in busy.error.message
        await other.close()
        # central, restarted, asks which call the node is in
        for session, active in ((S1, True), (S2, False)):
            await op.send(MeetingRequest(session=session, op="status", ts=time.time()))
            assert (await op.reply(session, "status")).active is active
        # switch to the other camera mid-call: pictures keep coming
        await op.send(MeetingRequest(session=S1, op="camera", ts=time.time(), camera="cam-road"))
        assert (await op.reply(S1, "camera")).camera == "cam-road"
        before = viewer.frames
        await wait_until(lambda: viewer.frames >= before + 10, "frames after the switch")
        # hang up: the node frees the peer connection, the player's thread and the call task
        media = agent.meetings.media
        assert media is not None
        await op.send(MeetingRequest(session=S1, op="hangup", ts=time.time()))
        await wait_until(
            lambda: agent.meetings is not None and agent.meetings.media is None, "freed"
        )
        assert media.pc.connectionState == "closed" and media.player is None
        assert agent.meetings.line.session is None
        await viewer.close()
        await wait_until(lambda: _player_threads() == [], "player threads ended")
        await wait_until(lambda: _sockets() <= sockets0, "sockets closed")
        assert [t for t in asyncio.all_tasks() if t.get_name().startswith("meeting-")] == []


async def test_unknown_camera_and_malformed_offer_are_rejected(
    tmp_path: Path, broker: Mosquitto, cameras: RtspCamera
) -> None:
    async with node(tmp_path, broker, cameras) as (agent, op):
        viewer = Viewer()
        await op.send(_offer(S1, await viewer.offer(), camera="cam-x"))
        rej = await op.reply(S1, "reject")
        assert rej.error is not None and rej.error.code == "no_camera"
        await op.send(_offer(S2, "v=0\r\n"))
        rej = await op.reply(S2, "reject")
        assert rej.error is not None and rej.error.code == "malformed_sdp"
        await viewer.close()
        assert agent.meetings is not None and agent.meetings.line.session is None


async def test_camera_that_cannot_be_opened_is_rejected_and_frees_the_line(
    tmp_path: Path, broker: Mosquitto
) -> None:
    dead = RtspCamera()  # never started: nothing listens on its port
    async with node(tmp_path, broker, dead) as (agent, op):
        viewer = Viewer()
        await op.send(_offer(S1, await viewer.offer()))
        rej = await op.reply(S1, "reject")
        assert rej.error is not None and rej.error.code == "camera_failed"
        await viewer.close()
        await wait_until(
            lambda: agent.meetings is not None and agent.meetings.media is None, "freed"
        )
        assert agent.meetings is not None and agent.meetings.line.session is None


async def test_agent_stop_hangs_up(tmp_path: Path, broker: Mosquitto, cameras: RtspCamera) -> None:
    running = Running(_cfg(tmp_path, broker, cameras), serve_local_socket=False)
    async with Operator(broker) as op:
        agent = await running.__aenter__()
        try:
            await wait_until(lambda: agent.connected, "agent connected")
            await asyncio.sleep(0.2)
            viewer = Viewer()
            await op.send(_offer(S1, await viewer.offer()))
            await viewer.answer((await op.reply(S1, "answer")).sdp or "")
            await wait_until(lambda: viewer.frames >= 1, "first frame")
        finally:
            await running.__aexit__(None, None, None)
        await op.reply(S1, "hangup")
        await viewer.close()


async def test_camera_stream_that_ends_is_reopened_and_pictures_resume(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """MediaPlayer never reconnects: a camera that restarts mid-call is opened again and the
    same call gets pictures again."""
    cam = RtspCamera("ball", mounts=2).start()
    try:
        async with node(tmp_path, broker, cam) as (agent, op):
            assert agent.meetings is not None
            viewer = Viewer()
            await op.send(_offer(S1, await viewer.offer()))
            await viewer.answer((await op.reply(S1, "answer")).sdp or "")
            await wait_until(lambda: viewer.frames >= 5, "first frames")
            cam.stop()  # the camera reboots: its stream ends
            await asyncio.sleep(1.0)
            cam = RtspCamera("ball", mounts=2, port=cam.port).start()
            before = viewer.frames
            await wait_until(lambda: viewer.frames >= before + 10, "frames after the reopen")
            assert agent.meetings.line.session == S1  # still the same call
            assert [r.op for r in op.replies if r.session == S1] == ["answer"]  # no hang-up
            await op.send(MeetingRequest(session=S1, op="hangup", ts=time.time()))
            await wait_until(
                lambda: agent.meetings is not None and agent.meetings.media is None, "freed"
            )
            await viewer.close()
    finally:
        cam.stop()
