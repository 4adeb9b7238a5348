"""The five firmware-update frames (0x20–0x24) of the board link: payload codecs (pure).

Byte layout (docs/serial-protocol.md, "Firmware update"); ``tag`` is the first 4 bytes of the
image id (SHA-256 of header ‖ payload), so a frame of an older transfer is never applied to a
new one::

    FW_BEGIN     H→B seq 0       image_id 32 | total u32 | signature 64 | version (len u8 + ASCII)
    FW_CHUNK     H→B seq offset  tag u32 | data (1..CHUNK_SIZE)
    FW_END       H→B seq 0       tag u32
    FW_STATUS    B→H seq 0       tag u32 | state u8 | code u8 | held u32 | total u32
    BOOT_CONFIRM H→B seq 0       boot_id u32 (the trial boot that runs well)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from firmware_bridge.framing import (
    MAX_PAYLOAD,
    Frame,
    FrameType,
    MessageError,
    encode_frame,
)

_TAG = struct.Struct(">I")
_BEGIN = struct.Struct(">32sI64s")
_STATUS = struct.Struct(">IBBII")
#: Firmware bytes per FW_CHUNK: the frame cap (240) less the 4-byte tag, rounded down to a
#: multiple of 8 (flash double-word writes on the reference MCU).
CHUNK_SIZE = (MAX_PAYLOAD - _TAG.size) // 8 * 8
#: Longest version string in FW_BEGIN (the image header's field is 16 bytes).
MAX_VERSION = 16

FW_TYPES = frozenset(
    {
        FrameType.FW_BEGIN,
        FrameType.FW_CHUNK,
        FrameType.FW_END,
        FrameType.FW_STATUS,
        FrameType.BOOT_CONFIRM,
    }
)


class FwState(IntEnum):
    """FW_STATUS ``state``."""

    IDLE = 0  # no transfer (answer to a chunk/end of an unknown transfer)
    RECEIVING = 1  # ``held`` bytes of the image are stored (the resume point)
    VERIFIED = 2  # complete and verified: rebooting into it in trial state
    REFUSED = 3  # the transfer or image was refused; ``code`` says why
    CONFIRMED = 4  # BOOT_CONFIRM taken: the running image is now permanent


class FwCode(IntEnum):
    """FW_STATUS ``code``."""

    NONE = 0
    BAD_SIGNATURE = 1  # Ed25519 signature does not verify with the bootloader's key
    DIGEST = 2  # image id or payload SHA-256 does not match the bytes received
    WRONG_MODEL = 3  # image built for another board model
    MALFORMED = 4  # header does not parse, or sizes do not add up
    TOO_LARGE = 5  # larger than the slot
    INCOMPLETE = 6  # FW_END before all bytes were held
    IN_TRIAL = 7  # an update is refused while the running image is still on trial
    OUT_OF_ORDER = 8  # RECEIVING: a chunk not at ``held`` was ignored (host: go back)


#: FW_STATUS refusal codes as the ``result`` strings of an update.
CODE_NAMES = {c: c.name.lower() for c in FwCode}


@dataclass(frozen=True, slots=True)
class FwBegin:
    image_id: bytes  # 32
    total: int  # bytes to transfer: header ‖ payload
    signature: bytes  # 64
    version: str

    @property
    def tag(self) -> int:
        return tag_of(self.image_id)

    def to_frame(self) -> Frame:
        v = self.version.encode("ascii")[:MAX_VERSION]
        body = _BEGIN.pack(self.image_id, self.total, self.signature) + bytes([len(v)]) + v
        return Frame(FrameType.FW_BEGIN, 0, body)


@dataclass(frozen=True, slots=True)
class FwChunk:
    tag: int
    offset: int
    data: bytes

    def to_frame(self) -> Frame:
        return Frame(FrameType.FW_CHUNK, self.offset, _TAG.pack(self.tag) + self.data)


@dataclass(frozen=True, slots=True)
class FwEnd:
    tag: int

    def to_frame(self) -> Frame:
        return Frame(FrameType.FW_END, 0, _TAG.pack(self.tag))


@dataclass(frozen=True, slots=True)
class FwStatus:
    tag: int
    state: FwState
    code: FwCode
    held: int
    total: int

    def to_frame(self) -> Frame:
        body = _STATUS.pack(self.tag, self.state, self.code, self.held, self.total)
        return Frame(FrameType.FW_STATUS, 0, body)


@dataclass(frozen=True, slots=True)
class BootConfirm:
    boot_id: int

    def to_frame(self) -> Frame:
        return Frame(FrameType.BOOT_CONFIRM, 0, _TAG.pack(self.boot_id))


FwMessage = FwBegin | FwChunk | FwEnd | FwStatus | BootConfirm


def tag_of(image_id: bytes) -> int:
    return int.from_bytes(image_id[:4], "big")


def encode(msg: FwMessage) -> bytes:
    return encode_frame(msg.to_frame())


def decode(frame: Frame) -> FwMessage:
    """A firmware frame as its message; :class:`MessageError` (the peer's fault) if not."""
    p = frame.payload
    t = frame.type
    if t == FrameType.FW_BEGIN:
        if len(p) < _BEGIN.size + 1 or len(p) != _BEGIN.size + 1 + p[_BEGIN.size]:
            raise MessageError("malformed", f"FW_BEGIN of {len(p)} bytes")
        image_id, total, sig = _BEGIN.unpack_from(p)
        version = p[_BEGIN.size + 1 :]
        if not version.isascii() or len(version) > MAX_VERSION:
            raise MessageError("malformed", "FW_BEGIN version")
        return FwBegin(image_id, total, sig, version.decode("ascii"))
    if t == FrameType.FW_CHUNK:
        if len(p) < _TAG.size + 1:
            raise MessageError("malformed", "FW_CHUNK without data")
        return FwChunk(_TAG.unpack_from(p)[0], frame.seq, p[_TAG.size :])
    if t in (FrameType.FW_END, FrameType.BOOT_CONFIRM):
        if len(p) != _TAG.size:
            raise MessageError("malformed", f"frame {t:#04x} of {len(p)} bytes")
        (value,) = _TAG.unpack_from(p)
        return FwEnd(value) if t == FrameType.FW_END else BootConfirm(value)
    if t == FrameType.FW_STATUS:
        if len(p) != _STATUS.size:
            raise MessageError("malformed", f"FW_STATUS of {len(p)} bytes")
        tag, state, code, held, total = _STATUS.unpack_from(p)
        try:
            return FwStatus(tag, FwState(state), FwCode(code), held, total)
        except ValueError:
            raise MessageError("malformed", "FW_STATUS state/code") from None
    raise MessageError("unknown_type", f"frame type {t:#04x} is not a firmware frame")
