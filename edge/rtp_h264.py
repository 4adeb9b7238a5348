"""RTP (RFC 3550) carrying H.264 (RFC 6184), watched without decoding, pure.

:class:`H264Watcher` reads each RTP packet's header and the H.264 NAL unit headers inside it
(single NAL, STAP-A, FU-A) to tell when RTP last arrived and when a key frame (IDR, NAL type 5)
last began: enough to call a stream stalled at a few microseconds per packet. Only when asked
(:meth:`H264Watcher.want_sample`) does it gather the next whole key frame as Annex B bytes
(with SPS/PPS) for one decode (:mod:`edge.picture`).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Largest key frame gathered for a sample: a 4 MP camera's IDR is ~300-800 KB; more is a
#: broken stream, and we never hold more than this for one camera.
MAX_KEYFRAME_BYTES = 2 * 1024 * 1024
#: NAL units in one gathered key frame (slices per picture are usually 1-8).
MAX_KEYFRAME_NALS = 256
#: RTP fixed header size (RFC 3550 5.1).
RTP_HEADER = 12

NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
STAP_A = 24
FU_A = 28
START_CODE = b"\x00\x00\x00\x01"


class RtpError(ValueError):
    """Not an RTP packet (counted, then ignored: one bad packet does not fail a camera)."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket:
    if len(data) < RTP_HEADER or data[0] >> 6 != 2:
        raise RtpError("not RTP version 2")
    cc = data[0] & 0x0F
    offset = RTP_HEADER + 4 * cc
    if data[0] & 0x10:  # header extension: 16-bit profile, 16-bit length in words
        if len(data) < offset + 4:
            raise RtpError("truncated extension")
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    end = len(data)
    if data[0] & 0x20:  # padding: the last byte counts the padding bytes
        end -= data[-1]
    if offset > end:
        raise RtpError("truncated packet")
    return RtpPacket(
        payload_type=data[1] & 0x7F,
        marker=bool(data[1] & 0x80),
        seq=int.from_bytes(data[2:4], "big"),
        timestamp=int.from_bytes(data[4:8], "big"),
        payload=data[offset:end],
    )


def _units(payload: bytes) -> list[tuple[int, bytes, bool, bool]]:
    """``(nal type, bytes, starts, ends)`` for each NAL unit (or FU-A fragment) in a payload;
    a fragment's bytes exclude the FU indicator and header (the first carries the rebuilt NAL
    header)."""
    if not payload:
        return []
    t = payload[0] & 0x1F
    if 1 <= t <= 23:
        return [(t, payload, True, True)]
    if t == STAP_A:
        out = []
        i = 1
        while i + 2 <= len(payload):
            size = int.from_bytes(payload[i : i + 2], "big")
            unit = payload[i + 2 : i + 2 + size]
            if size == 0 or len(unit) < size:
                break
            out.append((unit[0] & 0x1F, unit, True, True))
            i += 2 + size
        return out
    if t == FU_A and len(payload) >= 2:
        fu = payload[1]
        start, end = bool(fu & 0x80), bool(fu & 0x40)
        body = payload[2:]
        if start:
            body = bytes([(payload[0] & 0xE0) | (fu & 0x1F)]) + body
        return [(fu & 0x1F, body, start, end)]
    return []  # STAP-B, MTAP, FU-B: not used by cameras in non-interleaved mode


class H264Watcher:
    """Per stream: last RTP arrival, last key-frame start, and one key frame on demand."""

    def __init__(self, payload_type: int, parameter_sets: tuple[bytes, ...] = ()) -> None:
        self.payload_type = payload_type
        self._sdp_sets = parameter_sets
        self._inband: dict[int, bytes] = {}
        self.last_rtp: float | None = None
        self.last_keyframe: float | None = None
        self.packets = 0
        self.bad_packets = 0
        self._want = False
        self._ts: int | None = None  # timestamp of the key frame being gathered
        self._nals: list[bytearray] = []
        self._size = 0
        self._seq: int | None = None
        self._sample: bytes | None = None

    def want_sample(self) -> None:
        """Gather the next whole key frame (:meth:`take_sample` returns it once complete)."""
        self._want = True

    def take_sample(self) -> bytes | None:
        s, self._sample = self._sample, None
        return s

    def feed(self, data: bytes, now: float) -> None:
        if not (self._want or self._ts is not None):
            self._glance(data, now)
            return
        try:
            pkt = parse_rtp(data)
        except RtpError:
            self.bad_packets += 1
            return
        if pkt.payload_type != self.payload_type:
            return
        self.packets += 1
        self.last_rtp = now
        units = _units(pkt.payload)
        if any(t == NAL_IDR and starts for t, _, starts, _ in units):
            self.last_keyframe = now
        for t, body, _, _ in units:
            if t in (NAL_SPS, NAL_PPS) and len(body) <= MAX_KEYFRAME_BYTES // 64:
                self._inband[t] = body
        self._gather(pkt, units)

    def _glance(self, data: bytes, now: float) -> None:
        """The common case, between samples: read header bytes only, copy nothing (this runs
        for every packet of every camera)."""
        n = len(data)
        if n < RTP_HEADER + 2 or data[0] >> 6 != 2:
            self.bad_packets += 1
            return
        if data[1] & 0x7F != self.payload_type:
            return
        off = RTP_HEADER + 4 * (data[0] & 0x0F)
        if data[0] & 0x10:
            if n < off + 4:
                self.bad_packets += 1
                return
            off += 4 + 4 * ((data[off + 2] << 8) | data[off + 3])
        if off + 1 >= n:
            self.bad_packets += 1
            return
        self.packets += 1
        self.last_rtp = now
        t = data[off] & 0x1F
        if t == NAL_IDR or (t == FU_A and data[off + 1] & 0x9F == 0x80 | NAL_IDR):
            self.last_keyframe = now
        elif t == STAP_A or t in (NAL_SPS, NAL_PPS):
            for t2, body, _, _ in _units(data[off:]):  # rare: parameter sets, aggregates
                if t2 == NAL_IDR:
                    self.last_keyframe = now
                elif t2 in (NAL_SPS, NAL_PPS) and len(body) <= MAX_KEYFRAME_BYTES // 64:
                    self._inband[t2] = body

    def _gather(self, pkt: RtpPacket, units: list[tuple[int, bytes, bool, bool]]) -> None:
        if self._ts is not None:
            if pkt.timestamp != self._ts and self._nals:
                self._finish()  # the next picture began: the key frame ended (marker lost)
            elif self._seq is not None and pkt.seq != (self._seq + 1) & 0xFFFF:
                self._reset()  # a packet of the key frame was lost: wait for the next one
        if self._ts is None:
            if not self._want or not any(t == NAL_IDR and s for t, _, s, _ in units):
                return
            self._ts = pkt.timestamp
        self._seq = pkt.seq
        for _t, body, starts, _ in units:
            if starts:
                if len(self._nals) >= MAX_KEYFRAME_NALS:
                    self._reset()
                    return
                self._nals.append(bytearray(body))
            elif self._nals:
                self._nals[-1] += body
            self._size += len(body)
            if self._size > MAX_KEYFRAME_BYTES:
                self._reset()
                return
        if pkt.marker:
            self._finish()

    def _finish(self) -> None:
        sets = [self._inband[t] for t in (NAL_SPS, NAL_PPS) if t in self._inband]
        if not sets:
            sets = list(self._sdp_sets)
        nals = [bytes(n) for n in self._nals if n and (n[0] & 0x1F) not in (NAL_SPS, NAL_PPS)]
        self._sample = b"".join(START_CODE + n for n in [*sets, *nals])
        self._want = False
        self._reset()

    def _reset(self) -> None:
        self._ts = None
        self._seq = None
        self._nals = []
        self._size = 0
