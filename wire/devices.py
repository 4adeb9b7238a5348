"""What a camera's or a conference terminal's retained device state means (docs/protocol.md).

The node publishes one retained ``DeviceState`` per device. For the kinds below, ``detail``
carries ``health`` (one of the names here, finer than ``state``), ``reason`` (why, zh / en
text for operators), ``since`` (Unix time the health began) and, for cameras, optional
``model``, ``firmware``, ``clock_drift_s``, ``zones`` (alarm zones the camera watches) and
``relay`` (the alarm-board relay that can power-cycle it).
``state`` is derived from ``health`` by :func:`device_state`, so central can count devices
without knowing every health name, and a newer node's unknown health still counts right.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

#: Device kinds with a defined health vocabulary.
CAMERA = "camera"
CONFERENCE_TERMINAL = "conference_terminal"
#: The information system (综治信息系统) link checked from the village (三网融合).
INFO_SYSTEM = "info_system"


class CameraHealth(StrEnum):
    """One camera's health, from the outermost probe that failed inwards."""

    OK = "ok"
    UNREACHABLE = "unreachable"  # no TCP connection to its RTSP port
    AUTH_FAILED = "auth_failed"  # RTSP 401 with the configured credentials
    NO_STREAM = "no_stream"  # RTSP answers but DESCRIBE/SETUP/PLAY gives no usable H.264 stream
    STALLED = "stalled"  # the stream set up, but no RTP / no key frame for the stall window
    FROZEN = "frozen"  # frames arrive, but the picture does not change
    BLACK = "black"  # frames arrive, but the picture is black
    CLOCK_WRONG = "clock_wrong"  # ONVIF clock differs from the box's by more than allowed


class TerminalHealth(StrEnum):
    """One conference terminal's health (SIP OPTIONS, or the H.323 port for older ones)."""

    OK = "ok"
    UNREACHABLE = "unreachable"  # no answer / port closed / ICMP unreachable
    UNAVAILABLE = "unavailable"  # answers, but with a failure status (e.g. SIP 503)


class LinkHealth(StrEnum):
    """A network link checked from the village (the information system's HTTP/TCP health)."""

    OK = "ok"
    DOWN = "down"


State = Literal["up", "down", "degraded", "unknown"]

#: Healths that leave a device working but not trustworthy: it shows ``degraded``.
_DEGRADED = frozenset({CameraHealth.FROZEN, CameraHealth.BLACK, CameraHealth.CLOCK_WRONG})
_UP = frozenset({CameraHealth.OK, TerminalHealth.OK, LinkHealth.OK})


def device_state(health: str) -> State:
    """``up`` for ok, ``degraded`` for a picture or clock fault, ``down`` for everything else
    (including a health name this version does not know)."""
    if health in _UP:
        return "up"
    if health in _DEGRADED:
        return "degraded"
    return "down"
