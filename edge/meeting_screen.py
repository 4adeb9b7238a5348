"""The operator's picture on the village's screen (HDMI through the Linux framebuffer,
docs/meetings.md). Imported only in a call with ``video_out`` configured: only then is the
operator's video asked for and decoded.

Each decoded frame is scaled to the framebuffer's size and pixel format by FFmpeg's swscale and
written at offset 0 of the device (the visible page). Converting and writing run in one worker
thread; while it is busy, newer frames replace the one waiting (the screen shows the latest
picture, the call's event loop is never held up). When the call ends the screen is cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from edge.meeting_options import Fault

#: Framebuffer depths and the FFmpeg pixel format each is written in (little-endian ARM/x86
#: boxes: 32 bpp is B,G,R,X in memory; 16 bpp is RGB565).
PIXEL_FORMATS = {32: ("bgra", 4), 16: ("rgb565le", 2)}


@dataclass(frozen=True, slots=True)
class Geometry:
    width: int
    height: int
    bits_per_pixel: int = 32

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * PIXEL_FORMATS[self.bits_per_pixel][1]


def geometry(device: str, size: str | None) -> Geometry:
    """The screen's size: ``size`` (``WIDTHxHEIGHT``, 32 bpp) or, for ``/dev/fbN``, what the
    kernel reports in /sys/class/graphics/fbN. ValueError (zh / en) if neither is known."""
    if size is not None:
        w, h = size.split("x")
        return Geometry(int(w), int(h))
    sysfs = Path("/sys/class/graphics") / Path(device).name
    try:
        w, h = (sysfs / "virtual_size").read_text().strip().split(",")
        bpp = int((sysfs / "bits_per_pixel").read_text().strip())
    except (OSError, ValueError):
        raise ValueError(
            f"不知道屏幕 {device} 的尺寸（请设置 video_out_size） / "
            f"size of {device} unknown (set video_out_size)"
        ) from None
    if bpp not in PIXEL_FORMATS:
        raise ValueError(f"不支持 {bpp} 位色深 / {bpp} bits per pixel is not supported")
    return Geometry(int(w), int(h), bpp)


class Screen:
    """Shows one remote video track on a framebuffer until the track ends or :meth:`close`.
    ``received`` counts the frames decoded, ``frames`` those written (the others were replaced
    by a newer one while the screen was busy)."""

    def __init__(self, device: str, size: str | None, on_fault: Callable[[Fault], None]) -> None:
        self.device = device
        self.size = size
        self.on_fault = on_fault
        self.frames = 0
        self.received = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="meeting-screen")
        self._fd: int | None = None
        self._geo: Geometry | None = None
        self._latest: Any = None
        self._busy = False

    async def run(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._geo = geometry(self.device, self.size)
            self._fd = await loop.run_in_executor(self._pool, os.open, self.device, os.O_WRONLY)
        except (OSError, ValueError) as e:
            zh, _, en = str(e).partition(" / ")
            self.on_fault(
                Fault(
                    "video_out",
                    f"无法打开屏幕 {self.device}，本村看不到指挥中心画面：{zh}",
                    f"cannot open the screen {self.device} ({en or e}); the operator's picture "
                    "is not shown",
                )
            )
            await _drain(track)  # aiortc queues what nobody reads without bound
            return
        shown: asyncio.Future[None] | None = None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            self.received += 1
            self._latest = frame
            if not self._busy:
                self._busy = True
                shown = loop.run_in_executor(self._pool, self._show)
        if shown is not None:
            with contextlib.suppress(OSError):
                await shown

    def _show(self) -> None:
        try:
            while self._latest is not None:
                frame, self._latest = self._latest, None
                self._write(frame)
        finally:
            self._busy = False

    def _write(self, frame: Any) -> None:
        geo, fd = self._geo, self._fd
        assert geo is not None and fd is not None
        fmt, bytes_pp = PIXEL_FORMATS[geo.bits_per_pixel]
        # FAST_BILINEAR rather than swscale's default bicubic, and the plane written without a
        # copy: on a 1080p screen 7.4 of 15 fps were shown at 19 % of a core, then 10-13.9 fps
        # at 12-15 % (bench/meeting_screen.py, this shared 2-core machine).
        img = frame.reformat(
            width=geo.width, height=geo.height, format=fmt, interpolation="FAST_BILINEAR"
        )
        plane = img.planes[0]
        row = geo.width * bytes_pp
        data: Any = memoryview(plane)[: row * geo.height]  # no copy of a whole screen
        if plane.line_size != row:  # swscale pads rows: keep each row's pixels only
            data = b"".join(
                data[y * plane.line_size : y * plane.line_size + row] for y in range(geo.height)
            )
        os.pwrite(fd, data, 0)
        self.frames += 1

    async def close(self) -> None:
        def _close() -> None:
            if self._fd is not None:
                with contextlib.suppress(OSError):  # blank the screen: the call is over
                    assert self._geo is not None
                    os.pwrite(self._fd, bytes(self._geo.frame_bytes), 0)
                os.close(self._fd)
                self._fd = None

        await asyncio.get_running_loop().run_in_executor(self._pool, _close)
        self._pool.shutdown(wait=False)


async def _drain(track: MediaStreamTrack) -> None:
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()
