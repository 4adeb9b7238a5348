"""The relay frames (0x30, 0x31) of the board link: pulse a relay output, and the board's
answer (pure codecs; docs/serial-protocol.md, "Relay outputs").

A pulse switches the relay for ``off_ms`` and back: with a camera's supply wired through the
relay's normally-closed contact, that power-cycles the camera. ``seq`` carries the host's
command id; the board answers every RELAY_PULSE with RELAY_STATUS of the same id and pulses
only once per id (the host repeats a pulse whose answer was lost with the same id)::

    RELAY_PULSE  H→B seq command id  relay u8 (1-based) | off_ms u16
    RELAY_STATUS B→H seq command id  relay u8 | result u8 | off_ms u16
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from firmware_bridge.framing import Frame, FrameType, MessageError, encode_frame

_RELAY = struct.Struct(">BBH")
_PULSE = struct.Struct(">BH")
#: Shortest and longest pulse: under 0.1 s a camera's supply capacitors may carry it through;
#: over a minute is not a power-cycle but an outage (the u16 field allows 65 s).
MIN_OFF_MS = 100
MAX_OFF_MS = 60_000
#: Relay outputs a board may have (the frame carries a byte; boards have 1-8).
MAX_RELAYS = 16


class RelayResult(IntEnum):
    """RELAY_STATUS ``result``."""

    PULSING = 0  # the relay is off now and switches back after off_ms (the pulse is acked)
    NO_SUCH_RELAY = 1  # the board has no relay of this number
    BUSY = 2  # this relay is already in a pulse (of another command)
    BAD_REQUEST = 3  # off_ms outside MIN_OFF_MS..MAX_OFF_MS


#: Results as the ``reason`` of a failed power-cycle (zh / en).
RESULT_TEXT = {
    RelayResult.NO_SUCH_RELAY: ("报警板没有该继电器", "the board has no such relay"),
    RelayResult.BUSY: ("该继电器正在断电中", "the relay is already in a pulse"),
    RelayResult.BAD_REQUEST: ("断电时长超出范围", "pulse length out of range"),
}


@dataclass(frozen=True, slots=True)
class RelayPulse:
    command_id: int
    relay: int
    off_ms: int

    def to_frame(self) -> Frame:
        return Frame(FrameType.RELAY_PULSE, self.command_id, _PULSE.pack(self.relay, self.off_ms))

    def encode(self) -> bytes:
        return encode_frame(self.to_frame())


@dataclass(frozen=True, slots=True)
class RelayStatus:
    command_id: int
    relay: int
    result: RelayResult
    off_ms: int

    def to_frame(self) -> Frame:
        body = _RELAY.pack(self.relay, self.result, self.off_ms)
        return Frame(FrameType.RELAY_STATUS, self.command_id, body)


def decode(frame: Frame) -> RelayPulse | RelayStatus:
    """A relay frame as its message; :class:`MessageError` (the peer's fault) if not."""
    p = frame.payload
    if frame.type == FrameType.RELAY_PULSE:
        if len(p) != _PULSE.size:
            raise MessageError("malformed", f"RELAY_PULSE of {len(p)} bytes")
        relay, off_ms = _PULSE.unpack_from(p)
        return RelayPulse(frame.seq, relay, off_ms)
    if frame.type == FrameType.RELAY_STATUS:
        if len(p) != _RELAY.size:
            raise MessageError("malformed", f"RELAY_STATUS of {len(p)} bytes")
        relay, result, off_ms = _RELAY.unpack_from(p)
        try:
            return RelayStatus(frame.seq, relay, RelayResult(result), off_ms)
        except ValueError:
            raise MessageError("malformed", f"RELAY_STATUS result {result}") from None
    raise MessageError("unknown_type", f"frame type {frame.type:#04x} is not a relay frame")
