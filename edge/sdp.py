"""The H.264 video track of a camera's SDP (RFC 8866, RFC 6184 section 8.1), pure.

Only what a health probe needs: the track's control URL (to SETUP), payload type, and the
``sprop-parameter-sets`` (SPS/PPS) that a key frame must be decoded with when the camera does
not repeat them in-band.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import urljoin

#: Most SPS/PPS sets taken from an SDP (real: 2); each at most this many bytes.
MAX_PARAMETER_SETS = 8
MAX_PARAMETER_SET_BYTES = 1024


class SdpError(ValueError):
    """The SDP has no usable H.264 video track (the camera's fault: ``no_stream``)."""


@dataclass(frozen=True, slots=True)
class VideoTrack:
    control: str  # absolute URL to SETUP
    payload_type: int
    parameter_sets: tuple[bytes, ...]  # SPS/PPS NAL units, without start codes


def h264_track(sdp: bytes, base_url: str) -> VideoTrack:
    """The first H.264 video track of ``sdp``; relative controls resolve against
    ``base_url`` (Content-Base, else the request URL)."""
    text = sdp.decode("utf-8", errors="replace")
    media: list[list[str]] = []
    session_control: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            media.append([line])
        elif media:
            media[-1].append(line)
        elif line.startswith("a=control:"):
            session_control = line[len("a=control:") :]
    for m in media:
        fields = m[0][2:].split()
        if len(fields) < 4 or fields[0] != "video":
            continue
        pts = {f for f in fields[3:] if f.isdigit()}
        pt: int | None = None
        control: str | None = None
        fmtp: dict[str, str] = {}
        for line in m[1:]:
            if line.startswith("a=rtpmap:"):
                num, _, enc = line[len("a=rtpmap:") :].partition(" ")
                if num in pts and enc.upper().startswith("H264/") and pt is None:
                    pt = int(num)
            elif line.startswith("a=control:"):
                control = line[len("a=control:") :].strip()
        if pt is None:
            continue
        for line in m[1:]:
            if line.startswith(f"a=fmtp:{pt} "):
                for kv in line.split(" ", 1)[1].split(";"):
                    k, _, v = kv.strip().partition("=")
                    fmtp[k.lower()] = v
        return VideoTrack(_resolve(base_url, session_control, control), pt, _parameter_sets(fmtp))
    raise SdpError("no H.264 video track in the SDP")


def _resolve(base: str, session_control: str | None, control: str | None) -> str:
    if control is None or control == "*":
        control = session_control if session_control not in (None, "*") else None
    if control is None:
        return base
    if "://" in control:
        return control
    return urljoin(base if base.endswith("/") else base + "/", control)


def _parameter_sets(fmtp: dict[str, str]) -> tuple[bytes, ...]:
    out: list[bytes] = []
    for item in fmtp.get("sprop-parameter-sets", "").split(",")[:MAX_PARAMETER_SETS]:
        if not item or len(item) > MAX_PARAMETER_SET_BYTES * 4 // 3 + 4:
            continue
        try:
            out.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            continue  # a broken set: the key frame may still carry them in-band
    return tuple(out)
