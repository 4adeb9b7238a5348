"""A village's leg of a 1:N broadcast at the node (edge.meetings, edge.broadcast_media) against
real peers: a private mosquitto, the agent in this loop, and an operator that is a real aiortc
peer connection sending video and audio, signalling over MQTT as central does. What users rely
on: the village receives and decodes the operator's pictures (and sound) and sends nothing
back; its line is taken (a call or another broadcast is busy); ending frees the peer
connection and the tasks reading its tracks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.agent import Agent
from shilian.broker import Mosquitto
from tests.test_edge_agent import Running, make_config
from tests.test_edge_meetings import S1, S2, Operator, Viewer, loopback_ice, wait_until
from wire.meeting import MeetingRequest

pytestmark = pytest.mark.slow

__all__ = ["loopback_ice"]  # the fixture, used by every test here (autouse)


class Speaker:
    """The operator's side of one leg: an aiortc peer connection sending a synthetic picture
    and tone (as the page sends its camera and microphone)."""

    def __init__(self, audio: bool = True) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection
        from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        if audio:
            self.pc.addTransceiver(AudioStreamTrack(), direction="sendonly")

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    async def close(self) -> None:
        await self.pc.close()


def _broadcast(session: str, sdp: str) -> MeetingRequest:
    return MeetingRequest(session=session, op="offer", ts=time.time(), sdp=sdp, mode="broadcast")


@contextlib.asynccontextmanager
async def village(tmp_path: Path, broker: Mosquitto) -> AsyncIterator[tuple[Agent, Operator]]:
    # No camera at all: a village without one still receives a broadcast.
    cfg = make_config(tmp_path, broker.port)
    async with Running(cfg, serve_local_socket=False) as a:
        await wait_until(lambda: a.connected, "agent connected")
        await asyncio.sleep(0.2)  # the subscription follows the birth
        async with Operator(broker) as op:
            yield a, op


def _frames(agent: Agent, kind: str) -> float:
    value = agent.registry.get_sample_value("shilian_edge_broadcast_frames_total", {"kind": kind})
    return value or 0.0


def _broadcast_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("broadcast-")]


async def test_village_receives_the_broadcast_sends_nothing_and_frees_it_on_hangup(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with village(tmp_path, broker) as (agent, op):
        desk = agent.meetings
        assert desk is not None
        speaker = Speaker()
        try:
            await op.send(_broadcast(S1, await speaker.offer()))
            answer = await op.reply(S1, "answer")
            assert answer.camera is None and answer.sdp is not None
            # the village sends nothing back: every answered section is receive-only
            assert "a=recvonly" in answer.sdp and "a=sendrecv" not in answer.sdp
            assert "a=sendonly" not in answer.sdp
            await speaker.answer(answer.sdp)
            await wait_until(lambda: desk.receiver is not None and desk.receiver.frames >= 20,
                             "decoded frames from the operator")  # fmt: skip
            receiver = desk.receiver
            assert receiver is not None
            assert (receiver.width, receiver.height) == (640, 480)
            await wait_until(lambda: receiver.audio_frames > 0, "decoded audio")
            assert _frames(agent, "video") >= 20 and _frames(agent, "audio") > 0
            assert sorted(_broadcast_tasks()) == ["broadcast-audio", "broadcast-video"]
            # the node tells central what it decoded (shown on the operator's page)
            await wait_until(
                lambda: any(
                    r.op == "received" and r.received is not None and r.received.frames > 0
                    for r in op.replies
                ),
                "a received report",
            )
            report = next(r.received for r in op.replies if r.op == "received")
            assert report is not None and (report.width, report.height) == (640, 480)

            # the line is taken: a call and another broadcast are both busy
            viewer = Viewer()
            await op.send(
                MeetingRequest(session=S2, op="offer", ts=time.time(), sdp=await viewer.offer())
            )
            busy = await op.reply(S2, "busy")
            assert busy.error is not None and "通话中" in busy.error.message
            await viewer.close()

            await op.send(MeetingRequest(session=S1, op="hangup", ts=time.time()))
            await wait_until(lambda: desk.receiver is None, "node freed the broadcast")
            assert receiver.pc.connectionState == "closed"
            assert desk.line.session is None
            assert _broadcast_tasks() == []
            assert [t for t in asyncio.all_tasks() if t.get_name().startswith("meeting-")] == []
            ended = agent.registry.get_sample_value(
                "shilian_edge_meetings_ended_total", {"reason": "hangup_local"}
            )
            assert ended == 1.0
        finally:
            await speaker.close()


async def test_the_operator_leaving_ends_the_leg_and_the_node_says_so(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with village(tmp_path, broker) as (agent, op):
        desk = agent.meetings
        assert desk is not None
        speaker = Speaker(audio=False)
        await op.send(_broadcast(S1, await speaker.offer()))
        answer = await op.reply(S1, "answer")
        assert answer.sdp is not None
        await speaker.answer(answer.sdp)
        await wait_until(lambda: desk.receiver is not None and desk.receiver.frames > 0, "frames")
        await speaker.close()  # the page closed without hanging up
        await op.reply(S1, "hangup")
        await wait_until(lambda: desk.receiver is None, "node freed the broadcast")
        assert desk.line.session is None and _broadcast_tasks() == []


async def test_an_offer_that_sends_no_video_is_rejected(tmp_path: Path, broker: Mosquitto) -> None:
    async with village(tmp_path, broker) as (agent, op):
        viewer = Viewer()  # receive-only: it sends nothing to show
        await op.send(_broadcast(S1, await viewer.offer()))
        reject = await op.reply(S1, "reject")
        assert reject.error is not None and reject.error.code == "setup_failed"
        assert "no video" in reject.error.message
        assert agent.meetings is not None and agent.meetings.line.session is None
        await viewer.close()


def test_offers_video_reads_the_direction_of_video_sections() -> None:
    from edge.broadcast_media import offers_video

    head = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    video = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n"
    audio = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n"
    assert offers_video(head + video + "a=sendonly\r\n")
    assert offers_video(head + video + "a=sendrecv\r\n")
    assert offers_video(head + video)  # no direction: sendrecv
    assert not offers_video(head + video + "a=recvonly\r\n")
    assert not offers_video(head + audio + "a=sendonly\r\n")
    assert not offers_video(head + "m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n")
    assert not offers_video(head)
