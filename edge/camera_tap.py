"""An opened camera for meetings: FFmpeg's player read from the moment it opens, its current
group of pictures kept (edge.gop_buffer) and its H.264 packets handed to each viewer's track.
Imported only with a call (aiortc, PyAV), like edge.meeting_media.

Why not aiortc's ``MediaRelay``: its worker starts reading only when the first viewer asks for
a packet, i.e. once the page's ICE and DTLS are up, and an unbuffered relay then keeps only
the newest of the packets queued meanwhile, so the key frame the camera sent at the start of
the session is thrown away and the picture waits for the next one (measured: docs/evidence.md).
Here every viewer starts with the latest key frame and the packets after it.

Facts this relies on (measured, docs/evidence.md):
- ``MediaPlayer(url, decode=False)`` hands the camera's H.264 packets over as they come:
  1-3 % of a core for 720p25, against ~47 % to decode and re-encode.
- Opening RTSP blocks while FFmpeg probes (~2 s by default): it runs in a worker thread, with
  ``analyzeduration``/``probesize`` lowered and RTSP over TCP (no lost packets inside the
  village LAN, no extra UDP ports).
- ``MediaPlayer`` never reconnects: a tap whose stream ended stays ended (``ended``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

from edge.gop_buffer import GopBuffer

log = logging.getLogger("shilian.edge.meeting")

#: FFmpeg options for opening a camera: probe 0.1 s / 50 kB instead of 5 s / 5 MB. The stream
#: is one H.264 track described by the camera's SDP and passed through undecoded, so nothing
#: more needs probing, and what FFmpeg reads while it probes reaches the call only after it
#: (measured: opening 0.2-0.5 s instead of 0.7-0.9 s, docs/evidence.md). RTSP interleaved
#: over TCP.
PLAYER_OPTIONS = {
    "rtsp_transport": "tcp",
    "analyzeduration": "100000",
    "probesize": "50000",
    "fflags": "nobuffer",
}
#: FFmpeg open/read timeout (s): a camera that stops sending ends its track within this, so a
#: dead stream is noticed and reopened.
PLAYER_TIMEOUT_S = 5
#: Packets a viewer may lag behind the camera (10 s at 25 fps): aiortc's sender takes each
#: packet as it comes, so only a stalled sender gets there; it then skips to the next key
#: frame instead of holding the camera's packets without bound.
MAX_LAG_PACKETS = 250
#: Spacing of the replayed packets' presentation times (s): the buffered group is shown at
#: once, not at the camera's pace, so the call does not start up to a key-frame interval late.
REPLAY_STEP_S = 0.001


class MediaFailed(Exception):
    """The call's media cannot be set up: ``code`` for the reply, zh / en message."""

    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(f"{zh} / {en}")
        self.code = code
        self.zh = zh
        self.en = en


def _copy(packet: Any, pts: int | None, dts: int | None) -> Any:
    """A viewer's own packet: the sender rewrites times, the buffered one must stay as it came."""
    c = av.Packet(bytes(packet))
    c.pts, c.dts, c.time_base = pts, dts, packet.time_base
    c.is_keyframe = packet.is_keyframe
    return c


class TapTrack(MediaStreamTrack):
    """One viewer of a :class:`CameraTap`: the buffered group of pictures first, then the live
    packets; ends (``MediaStreamError``) when the camera's stream ends or the tap closes."""

    kind = "video"

    def __init__(self, tap: CameraTap, replay: list[Any]) -> None:
        super().__init__()
        self._tap = tap
        self._queue: collections.deque[Any] = collections.deque()
        self._ready = asyncio.Event()
        self._ended = False
        self._need_key = not replay
        if replay:
            last = replay[-1].pts
            for i, p in enumerate(replay):
                if last is None or p.pts is None:
                    self._queue.append(_copy(p, p.pts, p.dts))
                    continue
                step = int(REPLAY_STEP_S / float(p.time_base)) * (len(replay) - 1 - i)
                shift = last - step - p.pts
                dts = None if p.dts is None else p.dts + shift
                self._queue.append(_copy(p, p.pts + shift, dts))
            self._ready.set()

    def _put(self, packet: Any) -> None:
        if self._need_key:
            if not packet.is_keyframe:
                return
            self._need_key = False
        if len(self._queue) >= MAX_LAG_PACKETS:
            self._queue.clear()
            self._need_key = True
            self._tap.fault("viewer_lagged")
            return
        self._queue.append(_copy(packet, packet.pts, packet.dts))
        self._ready.set()

    def _end(self) -> None:
        self._ended = True
        self._ready.set()

    async def recv(self) -> Any:
        while not self._queue:
            if self._ended or self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def stop(self) -> None:
        super().stop()
        self._tap.unsubscribe(self)
        self._end()  # a reader waiting on this track moves on


#: Told of what a tap had to give up: ``gop_overflow`` (a group of pictures larger than the
#: buffer) or ``viewer_lagged`` (a viewer moved on to the next key frame).
OnFault = Callable[[str], None]


class CameraTap:
    """One camera opened by FFmpeg, read continuously by a task the tap owns (``close`` ends
    it and the player's thread). ``ended`` is set when the stream ended by itself."""

    def __init__(self, camera: str, player: MediaPlayer, on_fault: OnFault | None = None) -> None:
        self.camera = camera
        self.player = player
        self.gop: GopBuffer[Any] = GopBuffer()
        self.ended = asyncio.Event()
        self._on_fault = on_fault
        self._viewers: set[TapTrack] = set()
        self._on_end: set[Callable[[], None]] = set()
        self._closing = False
        self._reader = asyncio.get_running_loop().create_task(
            self._read(), name=f"camera-tap-{camera}"
        )

    def fault(self, kind: str) -> None:
        if self._on_fault is not None:
            self._on_fault(kind)

    @classmethod
    async def open(cls, camera: str, url: str, on_fault: OnFault | None = None) -> CameraTap:
        """Open ``url`` without decoding (in a worker thread) and start reading it."""

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
            raise MediaFailed(
                "camera_failed", "摄像机没有 H.264 视频", "the camera has no H.264 video stream"
            )
        return cls(camera, player, on_fault)

    def subscribe(self) -> TapTrack:
        """A new viewer, starting at the latest key frame (or the next one, if none is kept)."""
        track = TapTrack(self, self.gop.packets())
        if self.ended.is_set():
            track._end()
        else:
            self._viewers.add(track)
        return track

    def unsubscribe(self, track: TapTrack) -> None:
        self._viewers.discard(track)

    def on_ended(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when the stream ends by itself (not on :meth:`close`); returns
        what stops that."""
        self._on_end.add(callback)
        return lambda: self._on_end.discard(callback)

    async def _read(self) -> None:
        source: Any = self.player.video
        try:
            while True:
                try:
                    packet = await source.recv()
                except MediaStreamError:
                    break
                overflows = self.gop.overflows
                self.gop.push(packet, packet.size, bool(packet.is_keyframe))
                if self.gop.overflows != overflows:
                    self.fault("gop_overflow")
                for viewer in list(self._viewers):
                    viewer._put(packet)
        finally:
            self.ended.set()
            for viewer in self._viewers:
                viewer._end()
            if not self._closing:
                log.info("camera %s: stream ended", self.camera)
                for cb in list(self._on_end):
                    cb()

    async def close(self) -> None:
        """Stop reading and stop the player's thread (joined in a worker thread: it may be
        waiting for a read). Closing again does nothing."""
        if self._closing:
            return
        self._closing = True
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        if self.player.video is not None:
            await asyncio.to_thread(self.player.video.stop)


class CameraTaps:
    """The node's opened cameras. A call's camera is opened for it and closed when the call
    lets go of it, except the cameras in ``warm`` (``[meetings] keep_warm``): those stay open
    between calls, so a call to one starts from its buffered key frame without opening it.
    A camera opened by :meth:`prepare` (an operator opened the meeting page) lingers open for a
    while; a call within that time takes it over, else it is closed."""

    def __init__(self, warm: frozenset[str] = frozenset(), on_fault: OnFault | None = None) -> None:
        self.warm = warm
        self._on_fault = on_fault
        self._open: dict[str, CameraTap] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._lingering: dict[str, asyncio.Task[None]] = {}
        self._preparing: set[str] = set()

    async def acquire(self, camera: str, url: str) -> CameraTap:
        """The camera's tap: the one kept open if it is still streaming, else newly opened."""
        async with self._locks.setdefault(camera, asyncio.Lock()):
            self._stop_linger(camera)  # a prepared camera is the call's now
            tap = self._open.get(camera)
            if tap is not None and not tap.ended.is_set():
                if camera not in self.warm:
                    del self._open[camera]  # closed when the call releases it
                return tap
            if tap is not None:
                del self._open[camera]
                await tap.close()
            tap = await CameraTap.open(camera, url, self._on_fault)
            if camera in self.warm:
                self._open[camera] = tap
            return tap

    async def release(self, tap: CameraTap) -> None:
        """A call no longer sends ``tap``: closed unless it is kept warm and still streaming."""
        if self._open.get(tap.camera) is tap and not tap.ended.is_set():
            return
        await tap.close()

    async def keep_open(
        self,
        urls: dict[str, str],
        every_s: float,
        on_failure: Callable[[], None],
        node_id: str,
    ) -> None:
        """Open the cameras of ``urls`` (id -> URL) and open again, every ``every_s``, those
        whose stream ended (MediaPlayer never reconnects); until cancelled. A failure calls
        ``on_failure`` and is logged once until that camera opens again."""
        failing: set[str] = set()
        while True:
            for camera, url in urls.items():
                if self.is_open(camera):
                    continue
                try:
                    await self.acquire(camera, url)
                except MediaFailed as e:
                    on_failure()
                    if camera not in failing:
                        log.warning("node %s: camera %s kept warm: %s", node_id, camera, e)
                    failing.add(camera)
                    continue
                if camera in failing:
                    log.info("node %s: camera %s kept warm: open again", node_id, camera)
                    failing.discard(camera)
            await asyncio.sleep(every_s)

    async def prepare(self, camera: str, url: str, linger_s: float, most: int) -> bool:
        """Open ``camera`` ahead of a call and keep it open ``linger_s`` (counted again from
        now if it already lingers). False, and nothing opened, when ``most`` cameras already
        linger; :class:`MediaFailed` if it cannot be opened."""
        if camera in self.warm:
            return True  # open all the time anyway
        held = self._lingering.keys() | self._preparing
        if camera not in held and len(held) >= most:
            return False
        self._preparing.add(camera)
        try:
            async with self._locks.setdefault(camera, asyncio.Lock()):
                tap = self._open.get(camera)
                if tap is None or tap.ended.is_set():
                    if tap is not None:
                        del self._open[camera]
                        await tap.close()
                    tap = await CameraTap.open(camera, url, self._on_fault)
                    self._open[camera] = tap
                self._stop_linger(camera)
                self._lingering[camera] = asyncio.get_running_loop().create_task(
                    self._linger(camera, tap, linger_s), name=f"camera-linger-{camera}"
                )
        finally:
            self._preparing.discard(camera)
        return True

    async def _linger(self, camera: str, tap: CameraTap, linger_s: float) -> None:
        await asyncio.sleep(linger_s)
        async with self._locks[camera]:
            if self._lingering.get(camera) is asyncio.current_task():
                del self._lingering[camera]
            if self._open.get(camera) is tap:
                del self._open[camera]
                log.info("camera %s: prepared %g s ago, no call: closed", camera, linger_s)
                await tap.close()

    def _stop_linger(self, camera: str) -> None:
        task = self._lingering.pop(camera, None)
        if task is not None:
            task.cancel()

    def prepared(self) -> frozenset[str]:
        """The cameras opened by :meth:`prepare` that are waiting for a call."""
        return frozenset(self._lingering)

    def is_open(self, camera: str) -> bool:
        tap = self._open.get(camera)
        return tap is not None and not tap.ended.is_set()

    async def close(self) -> None:
        """Close every camera kept open or lingering."""
        for camera in list(self._lingering):
            self._stop_linger(camera)
        taps, self._open = list(self._open.values()), {}
        for tap in taps:
            await tap.close()
