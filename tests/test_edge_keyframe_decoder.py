"""edge/keyframe_decoder.py: FFmpeg through ctypes gives the same thumbnail as PyAV on the same
libraries, refuses broken key frames with a typed error, and the agent's picture check does not
import PyAV."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from edge.keyframe_decoder import MAX_KEYFRAME_BYTES, DecodeError, grey_thumbnail
from edge.picture import THUMB_H, THUMB_W, PictureError, is_black, thumbnail

ROOT = Path(__file__).resolve().parents[1]


def keyframe(w: int, h: int, luma: Any) -> bytes:
    """An H.264 key frame (Annex B, with SPS/PPS) of a picture whose luma is ``luma(x, y)``,
    encoded by x264 as a camera would."""
    enc: Any = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = Fraction(1, 10)
    enc.options = {"tune": "zerolatency"}
    frame = av.VideoFrame(w, h, "yuv420p")
    for i, plane in enumerate(frame.planes):
        data = bytearray([128]) * plane.buffer_size
        if i == 0:
            for y in range(plane.height):
                row = bytes(luma(x, y) for x in range(plane.width))
                data[y * plane.line_size : y * plane.line_size + plane.width] = row
        plane.update(bytes(data))
    return b"".join(bytes(p) for p in list(enc.encode(frame)) + list(enc.encode(None)))


def pyav_thumbnail(annexb: bytes) -> bytes:
    ctx: Any = av.CodecContext.create("h264", "r")
    frames = list(ctx.decode(av.Packet(annexb))) + list(ctx.decode(None))
    small = frames[0].reformat(width=THUMB_W, height=THUMB_H, format="gray")
    plane = small.planes[0]
    raw = bytes(plane)
    return b"".join(
        raw[y * plane.line_size : y * plane.line_size + THUMB_W] for y in range(THUMB_H)
    )


@pytest.mark.parametrize(("w", "h"), [(320, 240), (640, 360), (176, 144)])
def test_same_thumbnail_as_pyav(w: int, h: int) -> None:
    kf = keyframe(w, h, lambda x, y: (3 * x + 2 * y) % 256)
    assert grey_thumbnail(kf, THUMB_W, THUMB_H) == pyav_thumbnail(kf)
    assert thumbnail(kf) == pyav_thumbnail(kf)


def test_a_black_picture_is_black_and_a_gradient_is_not() -> None:
    assert is_black(thumbnail(keyframe(320, 240, lambda x, y: 16)))
    assert not is_black(thumbnail(keyframe(320, 240, lambda x, y: x % 256)))


@pytest.mark.parametrize(
    "junk",
    [b"", b"\x00\x00\x00\x01" + bytes(range(256)) * 4, b"\x00\x00\x01\x65" + b"\xff" * 500],
)
def test_broken_key_frames_are_a_picture_error(junk: bytes) -> None:
    with pytest.raises(PictureError):
        thumbnail(junk)


def test_an_oversize_key_frame_is_refused_before_decoding() -> None:
    with pytest.raises(DecodeError, match="bytes"):
        grey_thumbnail(bytes(MAX_KEYFRAME_BYTES + 1), THUMB_W, THUMB_H)


def test_judging_a_picture_does_not_import_pyav() -> None:
    """In a fresh process: a thumbnail loads FFmpeg's libraries, not the ``av`` package (RSS)."""
    kf = keyframe(320, 240, lambda x, y: x % 256)
    probe = (
        "import sys\n"
        "from edge.picture import thumbnail\n"
        "thumb = thumbnail(sys.stdin.buffer.read())\n"
        "print(len(thumb), 'av' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], input=kf, cwd=ROOT, capture_output=True, check=True
    )
    assert out.stdout.split() == [str(THUMB_W * THUMB_H).encode(), b"False"]
