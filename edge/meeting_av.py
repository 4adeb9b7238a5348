"""A call's parts beyond the camera's video, at the node (docs/meetings.md): the box's
microphone sent to the operator, the operator's voice on the box's speaker, the operator's
picture on the box's screen, and the check that a TURN server gave a relayed candidate.
``edge.meeting_media.MediaCall`` calls :meth:`CallAv.prepare` before it applies the offer,
:meth:`CallAv.negotiate` before it answers, :meth:`CallAv.answered` with the answer and
:meth:`CallAv.close` when the call ends.

What the node asks for follows what it has: the answer's audio section receives only with an
``audio_out`` and sends only with a working ``audio_in``; its video section receives (and the
operator's video is decoded) only with a ``video_out``. A part that fails is reported once
(``on_fault``: log and metric) and the call goes on without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from edge.config_devices import MeetingsConfig
from edge.meeting_audio import AudioFault, Speaker, open_microphone
from edge.meeting_media import MediaFailed
from edge.meeting_options import Fault
from edge.meeting_screen import Screen

log = logging.getLogger("shilian.edge.meeting")

_DIRECTIONS = {
    (True, True): "sendrecv",
    (True, False): "sendonly",
    (False, True): "recvonly",
    (False, False): "inactive",
}


class CallAv:
    def __init__(
        self, config: MeetingsConfig, node_id: str, on_fault: Callable[[str, Fault], None]
    ) -> None:
        self.config = config
        self.node_id = node_id
        self._on_fault = on_fault
        self.microphone: Any = None  # the MediaPlayer of audio_in
        self.mic_track: MediaStreamTrack | None = None
        self.speaker: Speaker | None = None
        self.screen: Screen | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def fault(self, f: Fault) -> None:
        self._on_fault(self.node_id, f)

    async def prepare(self, pc: RTCPeerConnection) -> None:
        """Before the offer is applied: the microphone's track, the handler of the operator's
        tracks."""
        if self.config.audio_in is not None:
            try:
                self.microphone, self.mic_track = await open_microphone(self.config.audio_in)
            except AudioFault as e:
                self.fault(e.fault)
            else:
                pc.addTrack(self.mic_track)

        @pc.on("track")
        def _track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and self.config.audio_out is not None:
                if self.speaker is None:
                    self.speaker = Speaker(self.config.audio_out, self.fault)
                    self._run(self.speaker.run(track), "speaker")
            elif track.kind == "video" and self.config.video_out and self.screen is None:
                self.screen = Screen(self.config.video_out, self.config.video_out_size, self.fault)
                self._run(self.screen.run(track), "screen")

    def negotiate(self, pc: RTCPeerConnection, video_sender: Any) -> None:
        """After the offer is applied, before answering: ask only for what the box can play."""
        for t in pc.getTransceivers():
            if t.kind == "audio":
                send = self.mic_track is not None and t.sender.track is self.mic_track
                t.direction = _DIRECTIONS[(send, self.config.audio_out is not None)]
            elif t.sender is video_sender:
                t.direction = _DIRECTIONS[(True, self.config.video_out is not None)]

    def answered(self, sdp: str) -> None:
        """The answer is complete: with a TURN server there must be a relayed candidate; a
        relay-only call without one cannot connect (:class:`MediaFailed`)."""
        if self.config.turn_url is None or " typ relay" in sdp:
            return
        f = Fault(
            "turn",
            f"TURN 服务器 {self.config.turn_url} 不可达或拒绝了凭据，没有中继地址",
            f"TURN server {self.config.turn_url} unreachable or refused the credentials: no "
            "relay candidate",
        )
        self.fault(f)
        if self.config.relay_only:
            raise MediaFailed("turn_failed", f.zh, f.en)

    def _run(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"meeting-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop the microphone, the speaker and the screen (blanked)."""
        if self.mic_track is not None:
            await asyncio.to_thread(self.mic_track.stop)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.speaker is not None:
            await self.speaker.close()
        if self.screen is not None:
            await self.screen.close()
