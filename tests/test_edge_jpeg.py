"""edge/jpeg.py: snapshots encoded by libavcodec's MJPEG encoder through ctypes are valid JPEGs
of the right size, look like PyAV's encoding of the same frame, fit the wire's bound, refuse
broken key frames with a typed error that the snapshot taker counts (and goes on), and never
import PyAV."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
from prometheus_client import CollectorRegistry

from edge.jpeg import QSCALES, Jpeg, keyframe_jpeg
from edge.keyframes import KeyframeWaiters
from edge.picture import PictureError
from edge.snapshots import SnapshotTaker
from wire import Event, Priority
from wire.snapshots import MAX_SNAPSHOT_JPEG_BYTES

from .test_edge_agent import wait_for
from .test_edge_keyframe_decoder import keyframe
from .test_edge_snapshots import _jpeg_size

ROOT = Path(__file__).resolve().parents[1]
NODE = "450102001003-a"
BOOT = "ab" * 16


def scene(x: int, y: int) -> int:
    """A picture with edges and gradients (JPEG's hard case is detail, not flat areas)."""
    return (x * 3 + y * 2) % 256 if (x // 40 + y // 30) % 2 else 235 - (x + y) % 200


def pyav_jpeg(annexb: bytes, w: int, h: int, qscale: int) -> bytes:
    """The same frame encoded by PyAV on the same libraries (the former implementation)."""
    ctx: Any = av.CodecContext.create("h264", "r")
    frame = (list(ctx.decode(av.Packet(annexb))) + list(ctx.decode(None)))[0]
    small = frame.reformat(width=w, height=h, format="yuvj420p")
    enc: Any = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuvj420p"
    enc.time_base = Fraction(1, 1)
    enc.thread_count = 1
    enc.qmin = enc.qmax = qscale
    return b"".join(bytes(p) for p in list(enc.encode(small)) + list(enc.encode(None)))


def luma(jpeg: bytes) -> tuple[int, int, bytes]:
    """Decode a JPEG (PyAV) to (width, height, grey bytes): the picture a viewer shows."""
    ctx: Any = av.CodecContext.create("mjpeg", "r")
    frame = (list(ctx.decode(av.Packet(jpeg))) + list(ctx.decode(None)))[0]
    grey = frame.reformat(format="gray")
    plane = grey.planes[0]
    raw = bytes(plane)
    rows = (raw[y * plane.line_size : y * plane.line_size + grey.width] for y in range(grey.height))
    return grey.width, grey.height, b"".join(rows)


@pytest.mark.parametrize(("w", "h", "out"), [(1280, 720, (640, 360)), (320, 240, (320, 240))])
def test_a_valid_jpeg_of_the_right_size_like_pyavs(w: int, h: int, out: tuple[int, int]) -> None:
    kf = keyframe(w, h, scene)
    jpeg = keyframe_jpeg(kf, MAX_SNAPSHOT_JPEG_BYTES)
    assert (jpeg.width, jpeg.height) == out
    assert jpeg.data.startswith(b"\xff\xd8") and jpeg.data.endswith(b"\xff\xd9")
    assert _jpeg_size(jpeg.data) == out
    ours = luma(jpeg.data)
    # PyAV's at the first quality that fits the bound, as edge.jpeg chooses
    fits = (pyav_jpeg(kf, *out, q) for q in QSCALES)
    theirs = luma(next(j for j in fits if len(j) <= MAX_SNAPSHOT_JPEG_BYTES))
    assert ours[:2] == theirs[:2] == out
    diff = sum(abs(a - b) for a, b in zip(ours[2], theirs[2], strict=True)) / len(ours[2])
    assert diff < 1.0, f"mean luma difference from PyAV's JPEG: {diff:.2f}"
    # and the picture is the scene: a flat grey JPEG would differ from it by far more
    flat = sum(abs(v - 128) for v in ours[2]) / len(ours[2])
    assert flat > 20


def test_a_tight_bound_costs_quality_then_size_and_an_impossible_one_is_refused() -> None:
    kf = keyframe(1280, 720, scene)
    roomy = keyframe_jpeg(kf, MAX_SNAPSHOT_JPEG_BYTES)
    tight = keyframe_jpeg(kf, len(roomy.data) // 3)
    assert len(tight.data) <= len(roomy.data) // 3
    assert _jpeg_size(tight.data) == (tight.width, tight.height)
    with pytest.raises(PictureError, match="does not fit 50 bytes"):
        keyframe_jpeg(kf, 50)


@pytest.mark.parametrize(
    "junk",
    [b"", b"\x00\x00\x00\x01" + bytes(range(256)) * 4, b"\x00\x00\x01\x65" + b"\xff" * 500],
)
def test_a_broken_key_frame_is_a_picture_error(junk: bytes) -> None:
    with pytest.raises(PictureError):
        keyframe_jpeg(junk, MAX_SNAPSHOT_JPEG_BYTES)


class _Camera:
    """The camera side of KeyframeWaiters: hands over whatever key frame it is given next, as
    the session loop does (edge.camera_source), encoding on one decoding thread."""

    def __init__(self, waiters: KeyframeWaiters, decoder: ThreadPoolExecutor) -> None:
        self.waiters, self.decoder = waiters, decoder

    async def snapshot(self, camera_id: str, timeout_s: float, max_bytes: int) -> Jpeg:
        return await self.waiters.jpeg(camera_id, timeout_s, max_bytes, self.decoder)


class _Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def emit(self, priority: Any, kind: str, device: Any = None, data: Any = None,
                   **_kw: Any) -> Any:  # fmt: skip
        self.events.append((kind, data))


def _alarm(seq: int) -> Event:
    return Event(node=NODE, boot_id=BOOT, seq=seq, ts=1.0, priority=Priority.ALARM,
                 kind="panic", device="alarm_board", data={"zone": 1})  # fmt: skip


async def test_a_broken_key_frame_is_counted_and_the_next_alarm_gets_its_picture() -> None:
    reg = CollectorRegistry()
    waiters = KeyframeWaiters()
    with ThreadPoolExecutor(1) as decoder:
        taker = SnapshotTaker({1: ["cam"]}, _Camera(waiters, decoder), timeout_s=30,
                              max_cameras=4, wall=time.time, registry=reg)  # fmt: skip
        sink = _Sink()
        task = asyncio.create_task(taker.run(sink))  # type: ignore[arg-type]

        def count(outcome: str) -> float | None:
            return reg.get_sample_value("shilian_edge_snapshots_total", {"outcome": outcome})

        async def feed(sample: bytes, outcome: str) -> None:
            await wait_for(lambda: waiters.wanted("cam"), "the taker asking for a key frame")
            waiters.give("cam", sample)
            await wait_for(lambda: count(outcome) == 1, f"a snapshot counted {outcome}")

        try:
            taker.alarm(_alarm(1))
            await feed(b"\x00\x00\x01\x65" + b"\xff" * 500, "undecodable")
            assert sink.events == []
            taker.alarm(_alarm(2))
            await feed(keyframe(320, 240, scene), "sent")
            [(kind, data)] = sink.events
            assert kind == "snapshot" and data["alarm_seq"] == 2 and data["width"] == 320
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


def test_a_snapshot_does_not_import_pyav() -> None:
    """In a fresh process: a JPEG loads FFmpeg's libraries, not the ``av`` package (RSS)."""
    kf = keyframe(640, 360, scene)
    probe = (
        "import sys\n"
        "from edge.jpeg import keyframe_jpeg\n"
        "j = keyframe_jpeg(sys.stdin.buffer.read(), 45000)\n"
        "assert j.data[:2] == b'\\xff\\xd8'\n"
        "print(sorted(m for m in sys.modules if m == 'av' or m.startswith('av.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], input=kf, capture_output=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == b"[]"
