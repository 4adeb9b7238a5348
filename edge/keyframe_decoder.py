"""One H.264 key frame decoded, and scaled to a small grey picture, through FFmpeg's public C API
(ctypes). (edge.jpeg encodes the decoded frame as a JPEG with the same libraries.)

Why not PyAV here: ``import av`` maps and relocates all of FFmpeg (libavformat, libavfilter,
libavdevice and their codecs: x264, x265, gnutls...) and ~50 extension modules, whatever is
used: +16 MB of RSS on the edge's CPython (measured). Judging a camera's picture needs only
libavcodec (decode), libavutil and libswscale (scale to a thumbnail): loaded with ctypes they
cost ~6 MB. The libraries are the ones the PyAV wheel ships (``av.libs``, found without
importing ``av``), else the system's.

ABI used, all public and stable across FFmpeg 5-8 (libavcodec 59-62): the functions below, the
codec contexts' AVOptions (``threads``, ``video_size``, ``pixel_format``...: no struct offsets),
the first fields of ``AVFrame`` (:class:`FrameHead`: planes, strides, size, pixel format) and of
``AVPacket`` (:class:`PacketHead`), laid out by ctypes for the platform's word size.
``tests/test_edge_keyframe_decoder.py`` and ``tests/test_edge_jpeg.py`` compare the results
with PyAV's on the same libraries.

Blocking (a few ms for 320x240, tens of ms for 1080p on a Pi-class CPU); ctypes releases the
GIL during each FFmpeg call, so the event loop keeps running. Callers run it in a thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edge import library_pages

#: FFmpeg's required zeroed padding after a packet's data (AV_INPUT_BUFFER_PADDING_SIZE).
PACKET_PADDING = 64
#: ``AVFrame.linesize`` follows ``uint8_t *data[AV_NUM_DATA_POINTERS = 8]``.
FRAME_DATA_POINTERS = 8
#: libswscale's bilinear scaler (SWS_BILINEAR), what PyAV's ``reformat`` uses by default and
#: what the black and frozen thresholds (edge.camera_health) were measured with. Area averaging
#: would let a small bright object on a dark scene vanish into "black" (measured: the test
#: camera's ball pattern).
SWS_BILINEAR = 0x2
#: AV_PIX_FMT_GRAY8.
PIX_FMT_GRAY8 = 8
#: AVERROR(EAGAIN): the decoder wants more input before it gives a frame.
AVERROR_EAGAIN = -11
#: AV_LOG_ERROR: FFmpeg's own log lines below errors are not printed (libswscale warns on every
#: snapshot that yuvj420p is deprecated; the agent's log says what happened to each picture).
AV_LOG_ERROR = 16
#: AVERROR_EOF (FFERRTAG('E','O','F',' ')): a flushed codec has nothing more to give.
AVERROR_EOF = -0x20464F45
#: A key frame larger than this is refused before anything is allocated for it (an 8 Mbit/s
#: 4K I-frame is ~1 MB).
MAX_KEYFRAME_BYTES = 8 * 1024 * 1024
#: Largest picture decoded (8K): a bigger size from a stream is a broken stream.
MAX_SIDE = 8192


class DecodeError(ValueError):
    """The key frame does not decode (the camera's fault) or FFmpeg is not usable."""


class FrameHead(ctypes.Structure):
    """The first fields of ``AVFrame`` (libavutil/frame.h, in this order since FFmpeg 1.0)."""

    _fields_ = [
        ("data", ctypes.c_void_p * FRAME_DATA_POINTERS),
        ("linesize", ctypes.c_int * FRAME_DATA_POINTERS),
        ("extended_data", ctypes.c_void_p),
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("nb_samples", ctypes.c_int),
        ("format", ctypes.c_int),
    ]


class PacketHead(ctypes.Structure):
    """The first fields of ``AVPacket`` (libavcodec/packet.h, in this order since FFmpeg 3.0)."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("pts", ctypes.c_int64),
        ("dts", ctypes.c_int64),
        ("data", ctypes.c_void_p),
        ("size", ctypes.c_int),
    ]


class Rational(ctypes.Structure):
    """``AVRational``, passed by value to ``av_opt_set_q``."""

    _fields_ = [("num", ctypes.c_int), ("den", ctypes.c_int)]


@dataclass(frozen=True, slots=True)
class Libs:
    avutil: ctypes.CDLL
    avcodec: ctypes.CDLL
    swscale: ctypes.CDLL


_libs: Libs | None = None


def _find(name: str) -> str:
    """The PyAV wheel's copy of ``lib<name>`` (``site-packages/av.libs``), else the system's."""
    spec = importlib.util.find_spec("av")  # finds the package without importing it
    places = (spec.submodule_search_locations or []) if spec is not None else []
    for where in places:
        libs = Path(where).parent / "av.libs"
        found = sorted(libs.glob(f"lib{name}-*.so*"))
        if found:
            return str(found[0])
    import ctypes.util

    path = ctypes.util.find_library(name)
    if path is None:
        raise DecodeError(f"FFmpeg library lib{name} not found (install PyAV or FFmpeg)")
    return path


def load() -> Libs:
    """The three libraries, loaded once, with the signatures of the functions used."""
    global _libs
    if _libs is not None:
        return _libs
    before = library_pages.mapped_files()
    # libavutil first: the others need its symbols (the wheel's copies find each other by RPATH)
    avutil = ctypes.CDLL(_find("avutil"))
    avcodec = ctypes.CDLL(_find("avcodec"))
    swscale = ctypes.CDLL(_find("swscale"))
    # Only the code a decode touches stays resident, not whole cached folios of libavcodec
    # and the codec libraries it links (edge.library_pages: 21.8 -> 7.7 MB, measured).
    library_pages.page_on_demand(before)
    p, i, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    sigs: list[tuple[ctypes.CDLL, str, object, list[object]]] = [
        (avutil, "av_malloc", p, [ctypes.c_size_t]),
        (avutil, "av_free", None, [p]),
        (avutil, "av_frame_alloc", p, []),
        (avutil, "av_frame_free", None, [p]),
        (avutil, "av_opt_set_int", i, [p, ctypes.c_char_p, i64, i]),
        (avutil, "av_opt_get_image_size", i, [p, ctypes.c_char_p, i, p, p]),
        (avutil, "av_opt_get_pixel_fmt", i, [p, ctypes.c_char_p, i, p]),
        (avutil, "av_opt_set_image_size", i, [p, ctypes.c_char_p, i, i, i]),
        (avutil, "av_opt_set_pixel_fmt", i, [p, ctypes.c_char_p, i, i]),
        (avutil, "av_opt_set_q", i, [p, ctypes.c_char_p, Rational, i]),
        (avutil, "av_frame_get_buffer", i, [p, i]),
        (avutil, "av_log_set_level", None, [i]),
        (avcodec, "avcodec_find_encoder_by_name", p, [ctypes.c_char_p]),
        (avcodec, "avcodec_send_frame", i, [p, p]),
        (avcodec, "avcodec_receive_packet", i, [p, p]),
        (avcodec, "av_packet_unref", None, [p]),
        (avcodec, "avcodec_find_decoder_by_name", p, [ctypes.c_char_p]),
        (avcodec, "avcodec_alloc_context3", p, [p]),
        (avcodec, "avcodec_open2", i, [p, p, p]),
        (avcodec, "avcodec_free_context", None, [p]),
        (avcodec, "avcodec_send_packet", i, [p, p]),
        (avcodec, "avcodec_receive_frame", i, [p, p]),
        (avcodec, "av_packet_alloc", p, []),
        (avcodec, "av_packet_free", None, [p]),
        (avcodec, "av_packet_from_data", i, [p, p, i]),
        (swscale, "sws_getContext", p, [i, i, i, i, i, i, i, p, p, p]),
        (swscale, "sws_scale", i, [p, p, p, i, i, p, p]),
        (swscale, "sws_freeContext", None, [p]),
    ]
    for lib, name, restype, argtypes in sigs:
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    avutil.av_log_set_level(AV_LOG_ERROR)
    _libs = Libs(avutil, avcodec, swscale)
    return _libs


def grey_thumbnail(annexb: bytes, width: int, height: int) -> bytes:
    """Decode one key frame (Annex B, with SPS/PPS) and scale its luma to ``width`` x
    ``height`` grey bytes (row by row, no padding); :class:`DecodeError` if it does not decode."""
    out = ctypes.create_string_buffer(width * height)
    with decoded(annexb) as (lib, frame):
        dst = (ctypes.c_void_p * 4)(ctypes.addressof(out), None, None, None)
        dst_strides = (ctypes.c_int * 4)(width, 0, 0, 0)
        scale(lib, frame, dst, dst_strides, width, height, PIX_FMT_GRAY8)
    return out.raw


@contextlib.contextmanager
def decoded(annexb: bytes) -> Iterator[tuple[Libs, FrameHead]]:
    """Decode one key frame (Annex B, with SPS/PPS): the libraries and the decoded picture,
    valid inside the ``with`` block only; :class:`DecodeError` if it does not decode."""
    if not annexb or len(annexb) > MAX_KEYFRAME_BYTES:
        raise DecodeError(f"key frame of {len(annexb)} bytes")
    lib = load()
    u, c = lib.avutil, lib.avcodec
    codec = c.avcodec_find_decoder_by_name(b"h264")
    if not codec:
        raise DecodeError("this FFmpeg has no H.264 decoder")
    ctx = ctypes.c_void_p(c.avcodec_alloc_context3(codec))
    pkt = ctypes.c_void_p(c.av_packet_alloc())
    frame = ctypes.c_void_p(u.av_frame_alloc())
    try:
        if not (ctx and pkt and frame):
            raise MemoryError("FFmpeg allocation failed")
        u.av_opt_set_int(ctx, b"threads", 1, 0)  # one picture: frame threads only add buffers
        if c.avcodec_open2(ctx, codec, None) < 0:
            raise DecodeError("H.264 decoder does not open")
        n = len(annexb)
        buf = u.av_malloc(n + PACKET_PADDING)
        if not buf:
            raise MemoryError("FFmpeg allocation failed")
        ctypes.memmove(buf, annexb, n)
        ctypes.memset(buf + n, 0, PACKET_PADDING)
        if c.av_packet_from_data(pkt, buf, n) < 0:
            u.av_free(buf)
            raise DecodeError("packet refused")
        if c.avcodec_send_packet(ctx, pkt) < 0:
            raise DecodeError("key frame does not decode")
        got = c.avcodec_receive_frame(ctx, frame)
        if got == AVERROR_EAGAIN:  # a decoder may hold the picture back until flushed
            c.avcodec_send_packet(ctx, None)
            got = c.avcodec_receive_frame(ctx, frame)
        if got < 0:
            raise DecodeError("key frame gave no picture")
        assert frame.value is not None  # checked above
        head = FrameHead.from_address(frame.value)
        if not (0 < head.width <= MAX_SIDE and 0 < head.height <= MAX_SIDE) or head.format < 0:
            raise DecodeError(f"picture of {head.width}x{head.height}, format {head.format}")
        yield lib, head
    finally:
        c.av_packet_free(ctypes.byref(pkt))
        u.av_frame_free(ctypes.byref(frame))
        c.avcodec_free_context(ctypes.byref(ctx))


def scale(
    lib: Libs,
    src: FrameHead,
    dst: ctypes.Array[ctypes.c_void_p],
    dst_strides: ctypes.Array[ctypes.c_int],
    w: int,
    h: int,
    fmt: int,
) -> None:
    """Scale the picture ``src`` (bilinear) to ``w`` x ``h`` of pixel format ``fmt`` into the
    planes ``dst`` (with their strides); :class:`DecodeError` if libswscale cannot."""
    sws = lib.swscale.sws_getContext(
        src.width, src.height, src.format, w, h, fmt, SWS_BILINEAR, None, None, None
    )
    if not sws:
        raise DecodeError(f"cannot scale pixel format {src.format}")
    try:
        rows = lib.swscale.sws_scale(sws, src.data, src.linesize, 0, src.height, dst, dst_strides)
    finally:
        lib.swscale.sws_freeContext(sws)
    if rows != h:
        raise DecodeError("scaling failed")
