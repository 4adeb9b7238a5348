"""The media of one meeting at the node: aiortc's peer connection sending a camera's H.264
as it comes from the camera (no decoding, no re-encoding). Imported only when a call arrives:
aiortc, aioice and FFmpeg stay out of an idle agent (tests/test_edge_idle_imports.py).

Facts this relies on (measured, docs/evidence.md):
- ``MediaPlayer(url, decode=False)`` hands the camera's H.264 packets to the sender: 1-3 % of
  a core for 720p25, against ~47 % to decode and re-encode.
- Opening RTSP blocks while FFmpeg probes (~2 s by default): it runs in a worker thread, with
  ``analyzeduration``/``probesize`` lowered (first packet ~0.3 s instead of ~1.9 s) and RTSP
  over TCP (no lost packets inside the village LAN, no extra UDP ports).
- The H.264 preference is set after ``addTrack`` and before ``setRemoteDescription``; without
  it VP8 is negotiated and no frame is ever sent, with no error.
- ``MediaPlayer`` never reconnects: the call watches the track and opens the camera again.
- aiortc's sender ends its RTP loop for good when its track ends, and ``replaceTrack`` does not
  reach a loop already waiting on the old track (tests/test_edge_meetings.py saw no frame after
  a switch that way). So the sender's track is a :class:`CameraFeed` that never ends while the
  call lasts: a switch or a reopened stream only changes what the feed reads from, and the
  feed keeps presentation times increasing across the change.
- A viewer waits for the camera's next key frame (passthrough cannot honour a PLI), so the
  camera's key-frame interval bounds the time to the first picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from aiortc.contrib.media import MediaPlayer, MediaRelay
from aiortc.mediastreams import MediaStreamError

from edge.meeting_options import CallExtras, Turn

log = logging.getLogger("shilian.edge.meeting")

#: FFmpeg options for opening a camera: probe 0.5 s / 500 kB instead of 5 s / 5 MB (the
#: stream is one known H.264 track); RTSP interleaved over TCP.
PLAYER_OPTIONS = {
    "rtsp_transport": "tcp",
    "analyzeduration": "500000",
    "probesize": "500000",
    "fflags": "nobuffer",
}
#: FFmpeg open/read timeout (s): a camera that stops sending ends its track within this, so a
#: dead stream is noticed and reopened.
PLAYER_TIMEOUT_S = 5


class MediaFailed(Exception):
    """The call's media cannot be set up: ``code`` for the reply, zh / en message."""

    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(f"{zh} / {en}")
        self.code = code
        self.zh = zh
        self.en = en


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


async def open_player(url: str) -> tuple[MediaPlayer, Any]:
    """Open ``url`` without decoding, in a worker thread; the player and its video track."""

    def _open() -> MediaPlayer:
        return MediaPlayer(
            url, decode=False, options=dict(PLAYER_OPTIONS), timeout=PLAYER_TIMEOUT_S
        )

    try:
        player = await asyncio.to_thread(_open)
    except Exception as e:  # FFmpeg's errors (av.error.*) and OSError: the camera's fault
        raise MediaFailed(
            "camera_failed", "摄像机视频流无法打开", f"the camera stream cannot be opened: {e}"
        ) from None
    if player.video is None:
        await stop_player(player, None)
        raise MediaFailed(
            "camera_failed", "摄像机没有 H.264 视频", "the camera has no H.264 video stream"
        )
    return player, player.video


async def stop_player(player: MediaPlayer, track: Any) -> None:
    """Stop the player's reader thread (joined in a worker thread: it may wait for a read)."""
    if track is not None:
        await asyncio.to_thread(track.stop)


#: Presentation-time step put between the last packet of one source and the first of the next
#: (s): one frame at 25 fps, so the receiver sees time go on, never back.
SWITCH_STEP_S = 0.04


class CameraFeed(MediaStreamTrack):
    """The call's one video track: reads H.264 packets from the current camera (a relay track)
    and survives a switch or the end of that camera's stream (it then waits for the next
    source). Presentation times continue from the last packet sent, so the receiver's jitter
    buffer never sees time go backwards when the source changes."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._source: Any = None
        self._have_source = asyncio.Event()
        self._rebase = True
        self._offset = 0
        self._last_pts: int | None = None

    def use(self, source: Any) -> None:
        self._source = source
        self._rebase = True
        self._have_source.set()

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
    """One call's peer connection sending one camera at a time through a MediaRelay."""

    def __init__(self, turn: TurnServer | None, extras: CallExtras | None = None) -> None:
        self.pc = RTCPeerConnection(ice_configuration(turn))
        #: Sound both ways, the operator's picture, the TURN check (edge.meeting_av).
        self.extras = extras
        self.relay = MediaRelay()
        self.player: MediaPlayer | None = None
        self.source: Any = None  # the player's video track
        self.feed = CameraFeed()
        self.sender: RTCRtpSender | None = None
        self.camera: str | None = None
        #: Set when the camera's stream ended (the player's track stopped by itself).
        self.stream_ended = asyncio.Event()
        #: Set when the peer connection failed or closed (the operator's page is gone).
        self.peer_gone = asyncio.Event()
        #: Set once ICE and DTLS are up (media can flow).
        self.connected = asyncio.Event()
        self._closing = False

        @self.pc.on("connectionstatechange")
        def _state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()
            elif self.pc.connectionState in ("failed", "closed"):
                self.peer_gone.set()

    async def answer(self, offer_sdp: str, camera: str, url: str) -> str:
        """Open ``camera`` and answer ``offer_sdp``; the complete answer SDP (candidates
        gathered). :class:`MediaFailed` if the camera cannot be opened or the offer is
        unusable."""
        await self._use(camera, url)
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
        old_player, old_source = self.player, self.source
        await self._use(camera, url)
        if old_player is not None:
            await stop_player(old_player, old_source)

    async def _use(self, camera: str, url: str) -> None:
        player, source = await open_player(url)
        if self._closing:
            await stop_player(player, source)
            raise MediaFailed("setup_failed", "通话已结束", "the call ended")
        self.player, self.source, self.camera = player, source, camera
        self.stream_ended.clear()
        self.feed.use(self.relay.subscribe(source, buffered=False))

        def ended() -> None:
            if self.source is source and not self._closing:
                self.stream_ended.set()

        source.on("ended", ended)

    async def close(self) -> None:
        """Free everything: peer connection (sockets, DTLS, ICE), the player's thread."""
        self._closing = True
        self.feed.stop()
        if self.extras is not None:
            await self.extras.close()
        with contextlib.suppress(Exception):  # closing is best-effort on a broken connection
            await self.pc.close()
        if self.player is not None:
            await stop_player(self.player, self.source)
        self.player = self.source = None
