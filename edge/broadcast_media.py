"""The media of one village's leg of a 1:N broadcast (docs/meetings.md "1:N"): aiortc's peer
connection receiving the operator's video (and audio, if the page offers it) and sending
nothing. Imported only when a broadcast arrives, like edge.meeting_media.

aiortc decodes what it receives; every decoded frame is taken from the track here (a receiver
whose frames nobody reads keeps them queued without bound). A box with an HDMI output or a
sound device is where these frames would be shown or played; this node counts them
(``frames``, ``audio_frames``, and the desk's ``shilian_edge_broadcast_frames`` metric), which
is how tests and operators see that the operator's stream arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from edge.meeting_media import MediaFailed, TurnServer, ice_configuration
from wire.meeting import Received

log = logging.getLogger("shilian.edge.broadcast")


class BroadcastReceiver:
    """One broadcast leg: answers the operator's offer receive-only and drains its tracks.

    ``on_frame(kind)`` is called for every decoded frame (``video`` or ``audio``)."""

    def __init__(
        self, turn: TurnServer | None, on_frame: Callable[[str], None] | None = None
    ) -> None:
        self.pc = RTCPeerConnection(ice_configuration(turn))
        self.frames = 0
        self.audio_frames = 0
        self.width: int | None = None
        self.height: int | None = None
        #: Seconds from the answer to the first decoded video frame (None: none yet).
        self.first_frame_s: float | None = None
        self.connected = asyncio.Event()
        #: Set when the peer connection failed or closed (the operator's page is gone).
        self.peer_gone = asyncio.Event()
        self._on_frame = on_frame
        self._drains: set[asyncio.Task[None]] = set()
        self._answered_at: float | None = None

        @self.pc.on("connectionstatechange")
        def _state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()
            elif self.pc.connectionState in ("failed", "closed"):
                self.peer_gone.set()

        @self.pc.on("track")
        def _track(track: Any) -> None:
            task = asyncio.get_running_loop().create_task(
                self._drain(track), name=f"broadcast-{track.kind}"
            )
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)

    async def answer(self, offer_sdp: str) -> str:
        """The complete receive-only answer to ``offer_sdp`` (candidates gathered);
        :class:`MediaFailed` if the offer is unusable or sends no video."""
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except (ValueError, AssertionError, KeyError) as e:  # aiortc's parse errors
            raise MediaFailed(
                "setup_failed", "无法解析广播的媒体描述", f"cannot use the broadcast's offer: {e}"
            ) from None
        if not offers_video(offer_sdp):
            raise MediaFailed(
                "setup_failed", "广播没有发送视频", "the broadcast's offer sends no video"
            )
        # No local track is added: aiortc answers every offered section recvonly, so the
        # village sends no media back.
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._answered_at = time.monotonic()
        return str(self.pc.localDescription.sdp)

    def counts(self) -> Received:
        """What was decoded so far, for the node's report to central."""
        return Received(
            frames=self.frames, audio_frames=self.audio_frames, width=self.width,
            height=self.height,
        )  # fmt: skip

    async def _drain(self, track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if track.kind == "video":
                self.frames += 1
                if self.first_frame_s is None and self._answered_at is not None:
                    self.first_frame_s = time.monotonic() - self._answered_at
                self.width, self.height = frame.width, frame.height
            else:
                self.audio_frames += 1
            if self._on_frame is not None:
                self._on_frame(track.kind)

    async def close(self) -> None:
        """Free everything: the peer connection (sockets, DTLS, ICE, decoders) and the tasks
        reading its tracks."""
        for task in list(self._drains):
            task.cancel()
        with contextlib.suppress(Exception):  # closing is best-effort on a broken connection
            await self.pc.close()
        for task in list(self._drains):
            with contextlib.suppress(asyncio.CancelledError):
                await task


_DIRECTIONS = ("a=sendonly", "a=sendrecv", "a=recvonly", "a=inactive")


def offers_video(sdp: str) -> bool:
    """Whether ``sdp`` has a video section its sender will send on (``sendonly`` or
    ``sendrecv``, the default when no direction is given)."""
    for section in sdp.replace("\r\n", "\n").split("\nm=")[1:]:
        lines = section.split("\n")
        if not lines[0].startswith("video ") or lines[0].split(" ")[1] == "0":
            continue  # not video, or a rejected section (port 0)
        directions = {
            ln[2:] for ln in lines if ln in ("a=sendonly", "a=sendrecv", "a=recvonly", "a=inactive")
        }
        if not directions or directions & {"sendonly", "sendrecv"}:
            return True
    return False
