"""One H.264 key frame to a JPEG small enough for the wire (a snapshot taken on alarm).

PyAV is imported on first use, as in :mod:`edge.picture`: an agent without cameras never loads
FFmpeg. The picture is scaled to at most :data:`SNAPSHOT_MAX_W` wide (aspect kept) and encoded
with FFmpeg's MJPEG encoder at falling quality until it fits ``max_bytes``; if even the lowest
quality does not fit, the picture is halved and tried again, at most :data:`MAX_HALVINGS` times.
Blocking (a decode and a few encodes: ~10-30 ms for 720p); callers run it in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from edge.picture import PictureError, release_memory

#: Width of a snapshot: an operator recognises a person or a vehicle at 640x360, and the JPEG
#: of a real scene fits the wire's bound at good quality (wire.snapshots).
SNAPSHOT_MAX_W = 640
#: FFmpeg MJPEG quantiser scale tried in turn (2 best .. 31 worst): the first that fits wins.
QSCALES = (4, 7, 12, 20, 31)
#: Halvings of the picture after the worst quality still did not fit (640 → 320 → 160).
MAX_HALVINGS = 2


@dataclass(frozen=True, slots=True)
class Jpeg:
    data: bytes
    width: int
    height: int


def keyframe_jpeg(annexb: bytes, max_bytes: int) -> Jpeg:
    """Decode ``annexb`` (one key frame with SPS/PPS) and encode it as a JPEG of at most
    ``max_bytes``; :class:`PictureError` if it does not decode or cannot be made to fit."""
    import av  # lazily: see the module docstring

    ctx: Any = av.CodecContext.create("h264", "r")
    ctx.thread_count = 1
    try:
        frames = list(ctx.decode(av.Packet(annexb)))
        frames += list(ctx.decode(None))
    except (av.error.FFmpegError, ValueError) as e:
        raise PictureError(f"key frame does not decode: {e}") from None
    if not frames:
        raise PictureError("key frame gave no picture")
    frame = frames[0]
    try:
        w = min(SNAPSHOT_MAX_W, frame.width)
        h = max(2, round(frame.height * w / frame.width))
        for _ in range(MAX_HALVINGS + 1):
            w, h = w - w % 2, h - h % 2  # 4:2:0 chroma needs even sides
            small = frame.reformat(width=w, height=h, format="yuvj420p")
            for q in QSCALES:
                data = _encode(av, small, q)
                if len(data) <= max_bytes:
                    return Jpeg(data, w, h)
            w, h = max(2, w // 2), max(2, h // 2)
        raise PictureError(f"picture does not fit {max_bytes} bytes as JPEG")
    finally:
        del ctx, frames, frame
        release_memory()


def _encode(av: Any, frame: Any, qscale: int) -> bytes:
    enc: Any = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height, enc.pix_fmt = frame.width, frame.height, "yuvj420p"
    enc.time_base = Fraction(1, 1)
    enc.thread_count = 1
    enc.qmin = enc.qmax = qscale  # a fixed quantiser: quality without a rate controller
    packets = list(enc.encode(frame)) + list(enc.encode(None))
    return b"".join(bytes(p) for p in packets)
