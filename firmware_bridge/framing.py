"""Serial framing between the edge box and the village alarm board (pure, no I/O).

On the wire a frame is ``00 | COBS(body | crc16) | 00``: COBS removes every 0x00 from the
encoded bytes, so 0x00 only ever appears as a delimiter and a receiver resynchronises on the
next 0x00 after any garbage. ``body`` is a 5-byte header (type u8, seq u32 big-endian) and a
payload; ``crc16`` is CRC-16/CCITT-FALSE of ``body``, big-endian. docs/serial-protocol.md has
the byte-level layout for firmware engineers.

:class:`FrameDecoder` turns any byte stream into frames or typed :class:`FrameError` values
(counted per fault); it never raises on peer input and never accepts a frame whose CRC fails.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from enum import IntEnum, StrEnum

#: Header: frame type (u8) and sequence number (u32, big-endian).
HEADER = struct.Struct(">BI")
CRC_SIZE = 2
#: Largest payload. 240 bytes holds a 128-byte firmware chunk with its offset and digest
#: fields, and a whole encoded frame (248 bytes) fits a 256-byte UART buffer on the MCU.
MAX_PAYLOAD = 240
MAX_BODY = HEADER.size + MAX_PAYLOAD
#: Largest COBS-encoded frame between delimiters (one overhead byte per 254 data bytes).
#: Checked while buffering, before the bytes are kept: a line of noise without 0x00 never
#: grows the buffer beyond this.
MAX_ENCODED = MAX_BODY + CRC_SIZE + (MAX_BODY + CRC_SIZE + 253) // 254
DELIMITER = 0x00


class FrameType(IntEnum):
    """Every frame type. ``B→H`` board to host, ``H→B`` host to board."""

    HELLO = 0x01  # B→H handshake: version, boot id, board id, firmware, caps, inputs
    HELLO_ACK = 0x02  # H→B handshake answer (echoes the boot id)
    HEARTBEAT = 0x03  # B→H every second: full input state, queue depth
    HOST_HEARTBEAT = 0x04  # H→B every second while up: the host is alive
    HOST_HELLO = 0x05  # H→B "send me HELLO" (host (re)opened the port or lost sync)
    INPUT_EVENT = 0x10  # B→H an input changed (carries a board event seq)
    PANEL_MESSAGE = 0x11  # B→H a Contact ID message relayed from the local panel
    ACK = 0x12  # H→B event (origin boot, seq) is durable on the edge box
    NAK = 0x13  # H→B event (origin boot, seq) is missing (a later one arrived): resend it now
    # Firmware update (payloads in firmware_bridge/fw_frames.py).
    FW_BEGIN = 0x20  # H→B image size, version, signature digest
    FW_CHUNK = 0x21  # H→B offset + bytes
    FW_END = 0x22  # H→B image complete: verify and boot it in test state
    FW_STATUS = 0x23  # B→H received bytes / verify result (resume point after a cut)
    BOOT_CONFIRM = 0x24  # H→B the new image runs well: make it permanent (else roll back)
    # Relay outputs (payloads in firmware_bridge/relay_frames.py).
    RELAY_PULSE = 0x30  # H→B switch a relay for off_ms and back (power-cycle a camera)
    RELAY_STATUS = 0x31  # B→H the answer to a RELAY_PULSE (pulsing, or why not)


class FrameFault(StrEnum):
    """Why bytes between two delimiters were refused (the ``reason`` label of the metrics)."""

    OVERSIZE = "oversize"  # more than MAX_ENCODED bytes without a delimiter
    COBS = "cobs"  # not a valid COBS encoding (a code byte runs past the end)
    SHORT = "short"  # decoded shorter than header + CRC
    CRC = "crc"  # CRC mismatch: corrupted on the line


@dataclass(frozen=True, slots=True)
class Frame:
    type: int  # a FrameType value, or an unknown type number (the link layer refuses it)
    seq: int
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class FrameError:
    """Bytes refused by the decoder: the peer or the line was wrong (never raised)."""

    fault: FrameFault
    size: int  # encoded bytes seen (for OVERSIZE: at least MAX_ENCODED + 1)


class LocalFrameError(ValueError):
    """We tried to encode a frame the protocol does not allow (a bug on our side)."""


def crc16_ccitt_false(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, xorout 0
    (check value of ``b"123456789"`` is 0x29B1)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        crc &= 0xFFFF
    return crc


def _crc_table() -> tuple[int, ...]:
    return tuple(crc16_ccitt_false(bytes([i]), 0) for i in range(256))


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """Table-driven :func:`crc16_ccitt_false` (same result, ~8x faster)."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the result contains no 0x00."""
    out = bytearray(b"\x00")
    code_at = 0
    code = 1
    for byte in data:
        if byte == 0:
            out[code_at] = code
            code_at = len(out)
            out.append(0)
            code = 1
        else:
            out.append(byte)
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at = len(out)
                out.append(0)
                code = 1
    out[code_at] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    """Inverse of :func:`cobs_encode`; ``None`` if ``data`` is not a valid encoding."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0 or i + code > n:
            return None
        out += data[i + 1 : i + code]
        i += code
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(frame: Frame) -> bytes:
    """The frame as sent on the line, delimiters included."""
    if not 0 <= frame.type <= 0xFF or not 0 <= frame.seq <= 0xFFFFFFFF:
        raise LocalFrameError(f"type {frame.type} or seq {frame.seq} out of range")
    if len(frame.payload) > MAX_PAYLOAD:
        raise LocalFrameError(f"payload of {len(frame.payload)} bytes > {MAX_PAYLOAD}")
    body = HEADER.pack(frame.type, frame.seq) + frame.payload
    return b"\x00" + cobs_encode(body + crc16(body).to_bytes(2, "big")) + b"\x00"


def decode_body(encoded: bytes) -> Frame | FrameError:
    """One frame from the bytes between two delimiters (delimiters excluded)."""
    if len(encoded) > MAX_ENCODED:
        return FrameError(FrameFault.OVERSIZE, len(encoded))
    raw = cobs_decode(encoded)
    if raw is None:
        return FrameError(FrameFault.COBS, len(encoded))
    if len(raw) < HEADER.size + CRC_SIZE:
        return FrameError(FrameFault.SHORT, len(encoded))
    body = raw[:-CRC_SIZE]
    if crc16(body) != int.from_bytes(raw[-CRC_SIZE:], "big"):
        return FrameError(FrameFault.CRC, len(encoded))
    ftype, seq = HEADER.unpack_from(body)
    return Frame(ftype, seq, body[HEADER.size :])


class FrameDecoder:
    """Byte stream in, frames and typed errors out.

    Bytes before the first delimiter, and bytes of a frame cut short by a delimiter, come out
    as a :class:`FrameError` (usually CRC or COBS), so after any garbage the next complete
    frame is received. ``errors`` counts faults, ``frames`` good frames."""

    def __init__(self, max_encoded: int = MAX_ENCODED) -> None:
        self.max_encoded = max_encoded
        self._buf = bytearray()
        self._discarding = False
        self.frames = 0
        self.errors: Counter[FrameFault] = Counter()

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        out: list[Frame | FrameError] = []
        start = 0
        n = len(data)
        while start < n:
            zero = data.find(DELIMITER, start)
            end = n if zero == -1 else zero
            if not self._discarding and end > start:
                if len(self._buf) + (end - start) > self.max_encoded:
                    # Size checked before buffering: drop everything up to the next delimiter.
                    out.append(FrameError(FrameFault.OVERSIZE, len(self._buf) + end - start))
                    self.errors[FrameFault.OVERSIZE] += 1
                    self._buf.clear()
                    self._discarding = True
                else:
                    self._buf += data[start:end]
            if zero == -1:
                break
            if self._discarding:
                self._discarding = False
            elif self._buf:
                result = decode_body(bytes(self._buf))
                self._buf.clear()
                if isinstance(result, Frame):
                    self.frames += 1
                else:
                    self.errors[result.fault] += 1
                out.append(result)
            start = zero + 1
        return out

    def reset(self) -> None:
        """Forget a partial frame (the port was reopened)."""
        self._buf.clear()
        self._discarding = False


# -- messages: the payload of each frame type ---------------------------------------------------

#: Link protocol version announced in HELLO; the host refuses other versions.
PROTOCOL_VERSION = 1
#: Inputs per board: the bitmap is at most 8 bytes, keeping a heartbeat frame under 30 bytes.
MAX_INPUTS = 64
#: Longest relayed panel message: Contact ID is 16 digits; room for other panel formats.
MAX_PANEL_RAW = 32
#: Longest board id / firmware version string (UTF-8 bytes).
MAX_NAME = 32

CAP_INPUTS = 0x0001  # reports input changes
CAP_PANEL = 0x0002  # relays Contact ID messages from a local alarm panel
CAP_FLASH_QUEUE = 0x0004  # unacknowledged events survive a reboot (kept in flash)
CAP_FW_UPDATE = 0x0008  # accepts FW_* frames; HELLO then carries boot state and rollback
CAP_RELAY = 0x0010  # has relay outputs: accepts RELAY_PULSE

#: HELLO ``boot_state`` (present with CAP_FW_UPDATE): how the running image was booted.
BOOT_NORMAL = 0  # a confirmed image
BOOT_TRIAL = 1  # a new image on trial: the host sends BOOT_CONFIRM once it runs well
BOOT_ROLLED_BACK = 2  # the last new image failed its trial; the previous one runs again
#: HELLO ``rollback`` reason (with BOOT_ROLLED_BACK).
ROLLBACK_NONE = 0
ROLLBACK_NOT_CONFIRMED = 1  # the trial watchdog expired without BOOT_CONFIRM
ROLLBACK_CRASH = 2  # the new image rebooted itself too often during its trial
ROLLBACK_REASONS = {
    ROLLBACK_NONE: "",
    ROLLBACK_NOT_CONFIRMED: "not_confirmed",
    ROLLBACK_CRASH: "crash",
}

_HELLO = struct.Struct(">BIHB")
_HELLO_ACK = struct.Struct(">BI")
_HEARTBEAT = struct.Struct(">IIHH")
_EVENT = struct.Struct(">III")  # origin boot, base seq, board ms
_INPUT = struct.Struct(">BB")
_ORIGIN = struct.Struct(">I")
_NAK = struct.Struct(">II")  # origin boot, seq of the later event that revealed the gap


class MessageError(Exception):
    """A frame whose payload does not fit its type (the peer's fault; counted, not fatal)."""

    def __init__(self, fault: str, detail: str) -> None:
        super().__init__(f"{fault}: {detail}")
        self.fault = fault


class EventKey(tuple[int, int]):
    """``(boot_id, seq)`` of a board event: the boot it happened in and its seq in that boot."""

    __slots__ = ()

    def __new__(cls, boot_id: int, seq: int) -> EventKey:
        return tuple.__new__(cls, (boot_id, seq))

    @property
    def boot_id(self) -> int:
        return self[0]

    @property
    def seq(self) -> int:
        return self[1]

    def __repr__(self) -> str:
        return f"EventKey({self[0]:#010x}, {self[1]})"


@dataclass(frozen=True, slots=True)
class HelloMsg:
    version: int
    boot_id: int
    capabilities: int
    n_inputs: int
    board_id: str
    fw_version: str
    boot_state: int = BOOT_NORMAL  # sent only with CAP_FW_UPDATE
    rollback: int = ROLLBACK_NONE

    def to_frame(self) -> Frame:
        head = _HELLO.pack(self.version, self.boot_id, self.capabilities, self.n_inputs)
        body = head + _str8(self.board_id) + _str8(self.fw_version)
        if self.capabilities & CAP_FW_UPDATE:
            body += bytes([self.boot_state, self.rollback])
        return Frame(FrameType.HELLO, 0, body)


@dataclass(frozen=True, slots=True)
class HeartbeatMsg:
    boot_id: int
    board_ms: int
    queued: int
    dropped: int
    inputs: bytes  # bitmap, input 1 = bit 0 of byte 0

    def to_frame(self) -> Frame:
        head = _HEARTBEAT.pack(self.boot_id, self.board_ms, self.queued, self.dropped)
        return Frame(FrameType.HEARTBEAT, 0, head + self.inputs)


@dataclass(frozen=True, slots=True)
class InputEventMsg:
    seq: int
    origin: int  # boot id of the boot the event happened in
    base: int  # oldest seq of that boot the board still holds unacknowledged
    board_ms: int
    input_no: int
    active: bool
    inputs: bytes

    def to_frame(self) -> Frame:
        head = _EVENT.pack(self.origin, self.base, self.board_ms)
        body = head + _INPUT.pack(self.input_no, int(self.active)) + self.inputs
        return Frame(FrameType.INPUT_EVENT, self.seq, body)


@dataclass(frozen=True, slots=True)
class PanelMessageMsg:
    seq: int
    origin: int
    base: int
    board_ms: int
    raw: str

    def to_frame(self) -> Frame:
        head = _EVENT.pack(self.origin, self.base, self.board_ms)
        return Frame(FrameType.PANEL_MESSAGE, self.seq, head + self.raw.encode("ascii"))


BoardMessage = HelloMsg | HeartbeatMsg | InputEventMsg | PanelMessageMsg


def hello_ack_frame(boot_id: int) -> bytes:
    return encode_frame(Frame(FrameType.HELLO_ACK, 0, _HELLO_ACK.pack(PROTOCOL_VERSION, boot_id)))


def ack_frame(key: EventKey) -> bytes:
    return encode_frame(Frame(FrameType.ACK, key.seq, _ORIGIN.pack(key.boot_id)))


def nak_frame(missing: EventKey, trigger: int) -> bytes:
    """NAK of ``missing``, noticed when event seq ``trigger`` (same boot) arrived."""
    body = _NAK.pack(missing.boot_id, trigger)
    return encode_frame(Frame(FrameType.NAK, missing.seq, body))


def _str8(s: str) -> bytes:
    b = s.encode("utf-8")[:MAX_NAME]
    return bytes([len(b)]) + b


def _need(payload: bytes, size: int, what: str) -> None:
    if len(payload) < size:
        raise MessageError("malformed", f"{what}: {len(payload)} bytes < {size}")


def _bitmap_ok(bits: bytes) -> bytes:
    if len(bits) > MAX_INPUTS // 8:
        raise MessageError("malformed", f"input bitmap of {len(bits)} bytes")
    return bits


def decode_board_frame(frame: Frame) -> BoardMessage:
    """A board-to-host frame as its message; :class:`MessageError` if it is not one."""
    p = frame.payload
    try:
        if frame.type == FrameType.HELLO:
            _need(p, _HELLO.size + 2, "HELLO")
            version, boot_id, caps, n_inputs = _HELLO.unpack_from(p)
            i = _HELLO.size
            board_id = p[i + 1 : i + 1 + p[i]]
            i += 1 + p[i]
            _need(p, i + 1, "HELLO")
            fw = p[i + 1 : i + 1 + p[i]]
            end = i + 1 + p[i]
            ext = p[end:] if caps & CAP_FW_UPDATE else b""
            if len(fw) != p[i] or end + len(ext) != len(p) or n_inputs > MAX_INPUTS:
                raise MessageError("malformed", "HELLO strings or input count")
            if caps & CAP_FW_UPDATE and (len(ext) != 2 or ext[0] > BOOT_ROLLED_BACK):
                raise MessageError("malformed", "HELLO boot state")
            state, rollback = (ext[0], ext[1]) if ext else (BOOT_NORMAL, ROLLBACK_NONE)
            return HelloMsg(
                version,
                boot_id,
                caps,
                n_inputs,
                board_id.decode("utf-8"),
                fw.decode("utf-8"),
                state,
                rollback,
            )
        if frame.type == FrameType.HEARTBEAT:
            _need(p, _HEARTBEAT.size, "HEARTBEAT")
            boot_id, ms, queued, dropped = _HEARTBEAT.unpack_from(p)
            return HeartbeatMsg(boot_id, ms, queued, dropped, _bitmap_ok(p[_HEARTBEAT.size :]))
        if frame.type == FrameType.INPUT_EVENT:
            _need(p, _EVENT.size + _INPUT.size, "INPUT_EVENT")
            origin, base, ms = _EVENT.unpack_from(p)
            input_no, active = _INPUT.unpack_from(p, _EVENT.size)
            bits = _bitmap_ok(p[_EVENT.size + _INPUT.size :])
            if active > 1 or base > frame.seq:
                raise MessageError("malformed", "INPUT_EVENT active flag or base seq")
            return InputEventMsg(frame.seq, origin, base, ms, input_no, bool(active), bits)
        if frame.type == FrameType.PANEL_MESSAGE:
            _need(p, _EVENT.size + 1, "PANEL_MESSAGE")
            origin, base, ms = _EVENT.unpack_from(p)
            raw = p[_EVENT.size :]
            if len(raw) > MAX_PANEL_RAW or not raw.isascii() or base > frame.seq:
                raise MessageError("malformed", "PANEL_MESSAGE text or base seq")
            return PanelMessageMsg(frame.seq, origin, base, ms, raw.decode("ascii"))
    except UnicodeDecodeError as e:
        raise MessageError("malformed", str(e)) from None
    raise MessageError("unknown_type", f"frame type {frame.type:#04x} from the board")


@dataclass(frozen=True, slots=True)
class HostMessage:
    """A host-to-board frame as the board sees it."""

    type: FrameType
    boot_id: int = 0  # HELLO_ACK: the boot acknowledged; ACK/NAK: the event's origin boot
    seq: int = 0  # ACK/NAK: the event's seq
    version: int = 0  # HELLO_ACK: protocol version chosen by the host
    trigger: int = 0  # NAK: seq of the later event whose arrival revealed the gap


def decode_host_frame(frame: Frame) -> HostMessage:
    """A host-to-board frame as its message; :class:`MessageError` if it is not one."""
    p = frame.payload
    if frame.type == FrameType.HELLO_ACK:
        _need(p, _HELLO_ACK.size, "HELLO_ACK")
        version, boot_id = _HELLO_ACK.unpack_from(p)
        return HostMessage(FrameType.HELLO_ACK, boot_id=boot_id, version=version)
    if frame.type == FrameType.ACK:
        _need(p, _ORIGIN.size, "ACK")
        (origin,) = _ORIGIN.unpack_from(p)
        return HostMessage(FrameType.ACK, boot_id=origin, seq=frame.seq)
    if frame.type == FrameType.NAK:
        _need(p, _NAK.size, "NAK")
        origin, trigger = _NAK.unpack_from(p)
        return HostMessage(FrameType.NAK, boot_id=origin, seq=frame.seq, trigger=trigger)
    if frame.type in (FrameType.HOST_HEARTBEAT, FrameType.HOST_HELLO):
        return HostMessage(FrameType(frame.type))
    raise MessageError("unknown_type", f"frame type {frame.type:#04x} from the host")
