"""Sound of a call at the node: the box's microphone to the operator, the operator's voice on
the box's speaker (ALSA devices, docs/meetings.md). Imported only in a call with a sound device.

- The microphone is an aiortc ``MediaPlayer`` on FFmpeg's ALSA input (48 kHz stereo, which
  aiortc cuts into 20 ms frames and encodes as Opus).
- The speaker is written by one worker thread: an ALSA write blocks until the card takes the
  samples (real time), which must never hold up the event loop that carries the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from edge.meeting_options import Fault

#: What the ALSA devices are opened with: Opus's native rate, two channels (a mono USB
#: microphone is up-mixed by ALSA's plug layer when the device name is plughw:/default).
SAMPLE_RATE = 48000
CHANNELS = 2
#: Operator's frames waiting for the speaker thread (20 ms each): 0.5 s. A card that stops
#: taking samples makes the call drop the oldest sound, never grow memory.
MAX_PENDING_FRAMES = 25
#: ALSA devices are opened one at a time: the microphone and the speaker of a call open from
#: different threads, and libasound loads its configuration on first use.
_OPENING = threading.Lock()


async def open_microphone(device: str) -> tuple[MediaPlayer, MediaStreamTrack]:
    """The box's microphone as an audio track; :class:`Fault` (``audio_in``) if it cannot be
    opened."""

    def _open() -> MediaPlayer:
        with _OPENING:
            return MediaPlayer(
                device,
                format="alsa",
                options={"sample_rate": str(SAMPLE_RATE), "channels": str(CHANNELS)},
            )

    try:
        player = await asyncio.to_thread(_open)
    except Exception as e:  # FFmpeg's errors (av.error.*) and OSError: the device's fault
        raise AudioFault(
            Fault(
                "audio_in",
                f"无法打开麦克风 {device}，本次通话不传送本村声音",
                f"cannot open the microphone {device} ({e}); the call goes on without it",
            )
        ) from None
    if player.audio is None:
        raise AudioFault(
            Fault("audio_in", f"麦克风 {device} 没有声音流", f"{device} gives no audio")
        )
    return player, player.audio


class AudioFault(Exception):
    def __init__(self, fault: Fault) -> None:
        super().__init__(f"{fault.zh} / {fault.en}")
        self.fault = fault


class Speaker:
    """Plays one remote audio track on an ALSA device until the track ends or :meth:`close`.
    ``frames`` counts the frames handed to the device."""

    def __init__(self, device: str, on_fault: Callable[[Fault], None]) -> None:
        self.device = device
        self.on_fault = on_fault
        self.frames = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="meeting-speaker")
        self._out: Any = None
        self._stream: Any = None
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE)
        self._failed = False
        self._loop = asyncio.get_running_loop()

    async def run(self, track: MediaStreamTrack) -> None:
        loop = self._loop
        try:
            await loop.run_in_executor(self._pool, self._open)
        except Exception as e:  # FFmpeg's errors and OSError: the device's fault
            self.on_fault(
                Fault(
                    "audio_out",
                    f"无法打开扬声器 {self.device}，本次通话听不到指挥中心的声音",
                    f"cannot open the speaker {self.device} ({e}); the operator is not heard",
                )
            )
            self._failed = True
        writes: set[asyncio.Future[None]] = set()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            # Without a device the frames are still taken (and dropped): aiortc queues what
            # nobody reads without bound.
            if self._failed or len(writes) >= MAX_PENDING_FRAMES:
                continue  # the device is behind: drop, the next frames catch up
            fut = loop.run_in_executor(self._pool, self._write, frame)
            writes.add(fut)
            fut.add_done_callback(writes.discard)
        if writes:
            await asyncio.gather(*writes, return_exceptions=True)

    def _open(self) -> None:
        with _OPENING:
            self._out = av.open(self.device, format="alsa", mode="w")
            self._stream = self._out.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="stereo")
            self._out.start_encoding()  # FFmpeg opens the ALSA device here, not in av.open

    def _write(self, frame: Any) -> None:
        if self._failed:
            return
        try:
            for f in self._resampler.resample(frame):
                for packet in self._stream.encode(f):
                    self._out.mux(packet)
            self.frames += 1
        except Exception as e:  # FFmpeg's errors and OSError: the device went away mid-call
            self._failed = True
            self._loop.call_soon_threadsafe(
                self.on_fault,
                Fault(
                    "audio_out",
                    f"扬声器 {self.device} 出错，本次通话不再播放指挥中心的声音",
                    f"the speaker {self.device} failed ({e}); the operator is no longer heard",
                ),
            )

    async def close(self) -> None:
        def _close() -> None:
            if self._out is not None:
                with contextlib.suppress(Exception):  # a device gone mid-call: nothing to keep
                    self._out.close()
                self._out = None

        await asyncio.get_running_loop().run_in_executor(self._pool, _close)
        self._pool.shutdown(wait=False)
