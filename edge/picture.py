"""Is a camera's picture black, or frozen? One decoded key frame at a time.

:func:`thumbnail` decodes one H.264 key frame (Annex B, from :class:`edge.rtp_h264.H264Watcher`)
and scales it to a :data:`THUMB_W` x :data:`THUMB_H` grey thumbnail (FFmpeg's bilinear
scaler) through :mod:`edge.keyframe_decoder`: libavcodec and libswscale only,
loaded on first use, so an agent without cameras never loads FFmpeg, and one with cameras does
not carry PyAV (+16 MB of RSS, measured). The rest is pure:
:func:`is_black` follows FFmpeg's ``blackdetect`` (a picture is black when at least
``ratio`` of its pixels are darker than ``max_luma``) and :func:`difference` is the mean
absolute luma difference of two thumbnails, which a frozen picture keeps near zero while real
scenes (sensor noise, leaves, light) move it by more.
"""

from __future__ import annotations

from typing import Any

#: Thumbnail size: 768 pixels are enough to tell black and unchanged pictures, and comparing
#: them costs microseconds.
THUMB_W = 32
THUMB_H = 24
#: Default darkest-pixel bound: FFmpeg blackdetect's pixel threshold 0.10 of the video range
#: (16 + 0.10 * 219 ~ 38 on 8-bit limited-range luma).
BLACK_MAX_LUMA = 38
#: Default share of dark pixels for a black picture (blackdetect's picture_black_ratio_th).
BLACK_RATIO = 0.98


class PictureError(ValueError):
    """The key frame does not decode (a broken stream: the camera's fault)."""


def thumbnail(annexb: bytes) -> bytes:
    """Decode one key frame to a ``THUMB_W * THUMB_H`` byte grey thumbnail (blocking: a few ms
    for 320x240; callers run it in a thread)."""
    from edge.keyframe_decoder import DecodeError, grey_thumbnail  # lazily: loads FFmpeg

    try:
        thumb = grey_thumbnail(annexb, THUMB_W, THUMB_H)
    except DecodeError as e:
        raise PictureError(str(e)) from None
    finally:
        release_memory()
    return thumb


def release_memory() -> None:
    """Give the decoder's freed buffers back to the OS (glibc ``malloc_trim``): a decode every
    minute or so would otherwise keep its peak in the decoding thread's malloc arena for good
    (measured: ~4 MB of RSS for 16 cameras at 320x240, more for larger pictures)."""
    global _trim
    if _trim is None:
        import ctypes  # not ctypes.util: it imports subprocess and shutil (~2 MB RSS)

        try:
            _trim = ctypes.CDLL(None).malloc_trim  # the process's own libc
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            _trim = False
    if _trim:
        _trim(0)


_trim: Any = None


def is_black(thumb: bytes, max_luma: int = BLACK_MAX_LUMA, ratio: float = BLACK_RATIO) -> bool:
    dark = sum(1 for v in thumb if v <= max_luma)
    return bool(thumb) and dark >= ratio * len(thumb)


def difference(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two thumbnails (0-255); ``inf`` if their sizes differ."""
    if len(a) != len(b) or not a:
        return float("inf")
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)
