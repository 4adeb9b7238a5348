"""The media of one meeting at the node: aiortc's peer connection sending a camera's H.264
as it comes from the camera (no decoding, no re-encoding). Imported only when a call arrives:
aiortc, aioice and FFmpeg stay out of an idle agent (tests/test_edge_idle_imports.py).

Facts this relies on (measured, docs/evidence.md):
- The camera is opened and read by an edge.camera_tap ``CameraTap`` (FFmpeg in a worker
  thread, H.264 passed through); a new call's track starts at the camera's latest key frame.
- Opening the camera takes longer than negotiating, so both run at once; the answer is sent
  once both are done (a camera that cannot be opened is still refused, not answered).
- The H.264 preference is set after ``addTrack`` and before ``setRemoteDescription``; without
  it VP8 is negotiated and no frame is ever sent, with no error.
- aiortc's sender ends its RTP loop for good when its track ends, and ``replaceTrack`` does not
  reach a loop already waiting on the old track (tests/test_edge_meetings.py saw no frame after
  a switch that way). So the sender's track is a :class:`CameraFeed` that never ends while the
  call lasts: a switch or a reopened stream only changes what the feed reads from, and the
  feed keeps presentation times increasing across the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from edge.camera_tap import CameraTap, CameraTaps, MediaFailed
from edge.meeting_options import CallExtras, Turn

__all__ = ["CameraFeed", "MediaCall", "MediaFailed", "TurnServer", "ice_configuration"]

log = logging.getLogger("shilian.edge.meeting")


#: The TURN server of a call (edge.meeting_options builds it from the config).
TurnServer = Turn


def ice_configuration(turn: TurnServer | None) -> RTCConfiguration:
    """Host candidates only unless a TURN server is configured: never aiortc's default public
    STUN server (closed government networks have none, and it would leak addresses). With
    ``relay_only`` only the TURN server's relayed candidates are offered."""
    servers = []
    if turn is not None:
        servers.append(
            RTCIceServer(urls=[turn.url], username=turn.username, credential=turn.password)
        )
    relay = turn is not None and turn.relay_only
    policy = RTCIceTransportPolicy.RELAY if relay else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


#: Presentation-time step put between the last packet of one source and the first of the next
#: (s): one frame at 25 fps, so the receiver sees time go on, never back.
SWITCH_STEP_S = 0.04


class CameraFeed(MediaStreamTrack):
    """The call's one video track: reads H.264 packets from the current camera (a tap's track)
    and survives a switch or the end of that camera's stream (it then waits for the next
    source). Presentation times continue from the last packet sent, so the receiver's jitter
    buffer never sees time go backwards when the source changes."""

    kind = "video"

    def __init__(self, on_first: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._on_first = on_first
        self._source: Any = None
        self._have_source = asyncio.Event()
        self._rebase = True
        self._offset = 0
        self._last_pts: int | None = None

    def use(self, source: Any) -> None:
        if self._source is not None and self._source is not source:
            self._source.stop()
        self._source = source
        self._rebase = True
        self._have_source.set()

    def stop(self) -> None:
        super().stop()
        if self._source is not None:
            self._source.stop()

    async def recv(self) -> Any:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            src = self._source
            if src is None:
                self._have_source.clear()
                await self._have_source.wait()
                continue
            try:
                packet = await src.recv()
            except MediaStreamError:
                if self._source is src:  # ended by itself: wait until it is reopened
                    self._source = None
                continue
            if self._source is not src:
                continue  # switched meanwhile: drop the old camera's packet
            if self._on_first is not None:
                self._on_first()
                self._on_first = None
            return self._retime(packet)

    def _retime(self, packet: Any) -> Any:
        if packet.pts is None:
            return packet
        if self._rebase:
            step = int(SWITCH_STEP_S / float(packet.time_base))
            start = 0 if self._last_pts is None else self._last_pts + step
            self._offset = start - packet.pts
            self._rebase = False
        packet.pts += self._offset
        if packet.dts is not None:
            packet.dts += self._offset
        self._last_pts = packet.pts
        return packet


class MediaCall:
    """One call's peer connection sending one camera at a time (a viewer of its tap).

    ``stages`` holds the set-up's timings, seconds after :meth:`answer` began: ``camera_open``,
    ``answer`` (the answer ready) and ``first_packet`` (the first packet handed to the sender);
    ``on_stage(name, seconds)`` is told each as it happens."""

    def __init__(
        self,
        turn: TurnServer | None,
        extras: CallExtras | None = None,
        taps: CameraTaps | None = None,
        on_stage: Callable[[str, float], None] | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pc = RTCPeerConnection(ice_configuration(turn))
        #: Sound both ways, the operator's picture, the TURN check (edge.meeting_av).
        self.extras = extras
        self.taps = taps if taps is not None else CameraTaps()
        self.tap: CameraTap | None = None
        self.feed = CameraFeed(on_first=lambda: self._stage("first_packet"))
        self.sender: RTCRtpSender | None = None
        self.camera: str | None = None
        self.stages: dict[str, float] = {}
        #: Set when the camera's stream ended by itself.
        self.stream_ended = asyncio.Event()
        #: Set when the peer connection failed or closed (the operator's page is gone).
        self.peer_gone = asyncio.Event()
        #: Set once ICE and DTLS are up (media can flow).
        self.connected = asyncio.Event()
        self._closing = False
        self._now = now
        self._t0 = now()
        self._on_stage = on_stage
        self._unwatch: Callable[[], None] = lambda: None

        @self.pc.on("connectionstatechange")
        def _state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()
            elif self.pc.connectionState in ("failed", "closed"):
                self.peer_gone.set()

    @property
    def player(self) -> Any:
        """The current camera's FFmpeg player (None once the call is closed)."""
        return None if self.tap is None else self.tap.player

    def _stage(self, name: str) -> None:
        if name not in self.stages:
            self.stages[name] = self._now() - self._t0
            if self._on_stage is not None:
                self._on_stage(name, self.stages[name])

    async def answer(self, offer_sdp: str, camera: str, url: str) -> str:
        """Open ``camera`` and answer ``offer_sdp`` at the same time; the complete answer SDP
        (candidates gathered). :class:`MediaFailed` if the camera cannot be opened or the
        offer is unusable."""
        self._t0 = self._now()
        opening = asyncio.ensure_future(self._use(camera, url))
        try:
            sdp = await self._negotiate(offer_sdp)
        except BaseException:
            with contextlib.suppress(MediaFailed):
                await opening  # its tap is closed with the call
            raise
        await opening
        self._stage("answer")
        return sdp

    async def _negotiate(self, offer_sdp: str) -> str:
        self.sender = self.pc.addTrack(self.feed)
        h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name == "H264"]
        for t in self.pc.getTransceivers():
            if t.sender is self.sender:
                t.setCodecPreferences(h264)
        if self.extras is not None:
            await self.extras.prepare(self.pc)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            if self.extras is not None:
                self.extras.negotiate(self.pc, self.sender)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except (ValueError, AssertionError, KeyError) as e:  # aiortc's parse/negotiation errors
            raise MediaFailed(
                "setup_failed", "无法协商媒体（需要 H.264 视频）",
                f"cannot negotiate media (H.264 video needed): {e}",
            ) from None  # fmt: skip
        if not any(t.sender is self.sender and t.currentDirection for t in self._transceivers()):
            raise MediaFailed(
                "setup_failed", "呼叫方不接收视频", "the offer does not receive video"
            )
        sdp = str(self.pc.localDescription.sdp)
        if self.extras is not None:
            self.extras.answered(sdp)
        return sdp

    def _transceivers(self) -> list[Any]:
        return list(self.pc.getTransceivers())

    async def switch(self, camera: str, url: str) -> None:
        """Send ``camera`` instead (or the same one again after its stream ended)."""
        old = self.tap
        await self._use(camera, url)
        if old is not None and old is not self.tap:
            await self.taps.release(old)

    async def _use(self, camera: str, url: str) -> None:
        tap = await self.taps.acquire(camera, url)
        self._stage("camera_open")
        if self._closing:
            await self.taps.release(tap)
            raise MediaFailed("setup_failed", "通话已结束", "the call ended")
        self.tap, self.camera = tap, camera
        self.stream_ended.clear()
        self.feed.use(tap.subscribe())

        def ended() -> None:
            if self.tap is tap and not self._closing:
                self.stream_ended.set()

        self._unwatch()
        self._unwatch = tap.on_ended(ended)
        if tap.ended.is_set():
            ended()

    async def close(self) -> None:
        """Free everything: peer connection (sockets, DTLS, ICE), the camera (its thread)
        unless it is kept warm."""
        self._closing = True
        self._unwatch()
        self.feed.stop()
        if self.extras is not None:
            await self.extras.close()
        with contextlib.suppress(Exception):  # closing is best-effort on a broken connection
            await self.pc.close()
        if self.tap is not None:
            await self.taps.release(self.tap)
        self.tap = None
