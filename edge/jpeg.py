"""One H.264 key frame to a JPEG small enough for the wire (a snapshot taken on alarm).

Decoded and scaled as :mod:`edge.keyframe_decoder` does, and encoded by libavcodec's MJPEG
encoder, all through FFmpeg's public C API with ctypes: the agent never imports PyAV, which
would map all of FFmpeg and ~50 extension modules for the rest of its life (measured: +9.5 MB of
RSS after the first snapshot, docs/edge.md). The picture is scaled to at most
:data:`SNAPSHOT_MAX_W` wide (aspect kept) and encoded at falling quality until it fits
``max_bytes``; if even the lowest quality does not fit, the picture is halved and tried again,
at most :data:`MAX_HALVINGS` times. Blocking (a decode and a few encodes: ~10-30 ms for 720p;
ctypes releases the GIL during each FFmpeg call); callers run it in a thread.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.picture import PictureError, release_memory

if TYPE_CHECKING:  # the module itself is imported on first use: it loads nothing, but ctypes
    from edge.keyframe_decoder import FrameHead, Libs

#: Width of a snapshot: an operator recognises a person or a vehicle at 640x360, and the JPEG
#: of a real scene fits the wire's bound at good quality (wire.snapshots).
SNAPSHOT_MAX_W = 640
#: FFmpeg MJPEG quantiser scale tried in turn (2 best .. 31 worst): the first that fits wins.
QSCALES = (4, 7, 12, 20, 31)
#: Halvings of the picture after the worst quality still did not fit (640 → 320 → 160).
MAX_HALVINGS = 2
#: AV_PIX_FMT_YUVJ420P: full-range 4:2:0, what JPEG viewers expect (libswscale converts the
#: camera's limited-range video to it).
PIX_FMT_YUVJ420P = 12
#: A JPEG of one picture is one packet; more means a broken encoder, not a bigger picture.
MAX_PACKETS = 4


class EncodeError(PictureError):
    """libavcodec's MJPEG encoder is missing or refused the picture (not the camera's fault)."""


@dataclass(frozen=True, slots=True)
class Jpeg:
    data: bytes
    width: int
    height: int


def keyframe_jpeg(annexb: bytes, max_bytes: int) -> Jpeg:
    """Decode ``annexb`` (one key frame with SPS/PPS) and encode it as a JPEG of at most
    ``max_bytes``; :class:`PictureError` if it does not decode or cannot be made to fit."""
    from edge.keyframe_decoder import DecodeError, decoded  # lazily: loads FFmpeg

    try:
        with decoded(annexb) as (lib, frame):
            w = min(SNAPSHOT_MAX_W, frame.width)
            h = max(2, round(frame.height * w / frame.width))
            for _ in range(MAX_HALVINGS + 1):
                w, h = max(2, w - w % 2), max(2, h - h % 2)  # 4:2:0 chroma needs even sides
                data = _fitting(lib, frame, w, h, max_bytes)
                if data is not None:
                    return Jpeg(data, w, h)
                w, h = w // 2, h // 2
    except DecodeError as e:
        raise PictureError(str(e)) from None
    finally:
        release_memory()
    raise PictureError(f"picture does not fit {max_bytes} bytes as JPEG")


def _fitting(lib: Libs, src: FrameHead, w: int, h: int, max_bytes: int) -> bytes | None:
    """``src`` scaled to ``w`` x ``h`` once, then encoded at each of :data:`QSCALES` in turn:
    the first JPEG of at most ``max_bytes``, or None."""
    from edge.keyframe_decoder import FrameHead, scale

    u = lib.avutil
    small = ctypes.c_void_p(u.av_frame_alloc())
    try:
        if not small:
            raise MemoryError("FFmpeg allocation failed")
        assert small.value is not None
        head = FrameHead.from_address(small.value)
        head.width, head.height, head.format = w, h, PIX_FMT_YUVJ420P
        if u.av_frame_get_buffer(small, 0) < 0:
            raise MemoryError("FFmpeg allocation failed")
        scale(lib, src, head.data, head.linesize, w, h, PIX_FMT_YUVJ420P)
        for q in QSCALES:
            data = _encode(lib, small, w, h, q)
            if len(data) <= max_bytes:
                return data
        return None
    finally:
        u.av_frame_free(ctypes.byref(small))


def _encode(lib: Libs, frame: ctypes.c_void_p, w: int, h: int, qscale: int) -> bytes:
    """One JPEG of ``frame`` (yuvj420p, ``w`` x ``h``) at a fixed quantiser: quality without a
    rate controller (qmin = qmax), one thread."""
    from edge.keyframe_decoder import AVERROR_EAGAIN, AVERROR_EOF, PacketHead, Rational

    u, c = lib.avutil, lib.avcodec
    codec = c.avcodec_find_encoder_by_name(b"mjpeg")
    if not codec:
        raise EncodeError("this FFmpeg has no MJPEG encoder")
    ctx = ctypes.c_void_p(c.avcodec_alloc_context3(codec))
    pkt = ctypes.c_void_p(c.av_packet_alloc())
    try:
        if not (ctx and pkt):
            raise MemoryError("FFmpeg allocation failed")
        u.av_opt_set_image_size(ctx, b"video_size", w, h, 0)
        u.av_opt_set_pixel_fmt(ctx, b"pixel_format", PIX_FMT_YUVJ420P, 0)
        u.av_opt_set_q(ctx, b"time_base", Rational(1, 1), 0)
        u.av_opt_set_int(ctx, b"threads", 1, 0)
        u.av_opt_set_int(ctx, b"qmin", qscale, 0)
        u.av_opt_set_int(ctx, b"qmax", qscale, 0)
        if c.avcodec_open2(ctx, codec, None) < 0:
            raise EncodeError(f"MJPEG encoder does not open for {w}x{h}")
        if c.avcodec_send_frame(ctx, frame) < 0 or c.avcodec_send_frame(ctx, None) < 0:
            raise EncodeError("MJPEG encoder refused the picture")
        assert pkt.value is not None
        head = PacketHead.from_address(pkt.value)
        parts = []
        for _ in range(MAX_PACKETS):
            got = c.avcodec_receive_packet(ctx, pkt)
            if got in (AVERROR_EOF, AVERROR_EAGAIN):
                break
            if got < 0:
                raise EncodeError("MJPEG encoder failed")
            parts.append(ctypes.string_at(head.data, head.size))
            c.av_packet_unref(pkt)
        if not parts:
            raise EncodeError("MJPEG encoder gave no picture")
        return b"".join(parts)
    finally:
        c.av_packet_free(ctypes.byref(pkt))
        c.avcodec_free_context(ctypes.byref(ctx))
