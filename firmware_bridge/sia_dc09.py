"""SIA DC-09 (alarm over IP), pure: frame codec, AES, ACK/NAK/DUH and the SIA-code mapping.

A frame (ANSI/SIA DC-09-2013 §5.5; pysiaalarm, dc09_spt) is::

    <LF> crc 0LLL "id" seq [Rrcvr] Lpref #acct [data] [x-data]... [_HH:MM:SS,MM-DD-YYYY] <CR>

- ``crc``: 4 uppercase hex digits, CRC-16/ARC (poly 0x8005 reflected = 0xA001, init 0) of the
  bytes from the opening ``"`` of the id up to the byte before <CR>; ``0LLL``: ``0`` then the
  length of the same span in 3 hex digits.
- ``id``: ``SIA-DCS`` (SIA DC-03 data), ``ADM-CID`` (Contact ID), ``NULL`` (link test);
  a leading ``*`` marks an encrypted frame. Responses: ``ACK``, ``NAK``, ``DUH``.
- ``seq`` 4 decimal digits, ``R`` receiver and ``L`` line prefix 1-6 hex, ``#`` account 3-16 hex.
- data: ``[#acct|Nri1/BA01]`` (SIA) or ``[#acct|1130 01 015]`` (ADM-CID ``QXYZ GG CCC``).
- timestamp: UTC, mandatory in encrypted frames.

Encrypted frames (``*``): everything after the ``[`` is the hex of AES-CBC (128/192/256-bit
key, IV of zeros) over ``<pad>|data]<x-data><timestamp>``; ``pad`` is 1-16 random characters
other than ``[ ] |`` that make the plaintext a multiple of 16 bytes (dc09_spt ``dc09crypt``).
A NULL frame has no ``|``: its plaintext is ``<pad>]<timestamp>``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported in _cipher: an edge without encrypted panels never loads it
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

from firmware_bridge.alarms import Alarm, AlarmKind, AlarmSource
from firmware_bridge.contact_id import ContactIdError, PanelEvent, parse_event, to_event

#: Largest frame: the length field has 3 hex digits (0xFFF) plus LF, crc, 0LLL and CR. A
#: receiver drops anything longer before buffering it (sia_receiver).
MAX_BODY_BYTES = 0xFFF
MAX_FRAME_BYTES = 1 + 4 + 4 + MAX_BODY_BYTES + 1

#: DC-09 timestamp window: a frame more than 40 s old or 20 s in the future is NAKed, the NAK
#: carrying our time so the panel resynchronises (pysiaalarm ``allowed_timeband=(40, 20)``).
DEFAULT_PAST_S = 40.0
DEFAULT_FUTURE_S = 20.0

AES_BLOCK = 16
KEY_SIZES = frozenset({16, 24, 32})
#: Id tokens of event frames we process; anything else is answered DUH.
TOKENS = frozenset({"SIA-DCS", "ADM-CID", "NULL"})
_TS_FORMAT = "%H:%M:%S,%m-%d-%Y"
_PAD_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "[]|")

_HEADER = re.compile(
    r'"(?P<enc>\*?)(?P<token>[A-Z0-9-]{1,16})"(?P<seq>\d{4})'
    r"(?:R(?P<rcvr>[0-9A-F]{1,6}))?L(?P<pref>[0-9A-F]{1,6})(?:#(?P<acct>[0-9A-F]{3,16}))?\["
)
_TAIL = re.compile(r"(?P<data>[^\[\]]*)\](?P<ext>(?:\[[^\[\]]*\])*)(?:_(?P<ts>[0-9:,-]{19}))?")


class SiaError(Exception):
    """A peer's frame was refused. ``reason`` labels the metric; ``response`` says what the
    receiver answers (``NAK`` for damaged or stale frames, ``DUH`` for ones it cannot use)."""

    reason = "format"
    response = "NAK"

    def __init__(self, message: str, frame: SiaFrame | None = None) -> None:
        super().__init__(message)
        self.frame = frame


class SiaFormatError(SiaError):
    reason = "format"


class SiaCrcError(SiaError):
    reason = "crc"


class SiaLengthError(SiaError):
    reason = "length"


class SiaDecryptError(SiaError):
    reason = "decrypt"


class SiaTimestampError(SiaError):
    reason = "timestamp"


class SiaUnsupported(SiaError):
    """Valid frame we do not process (unknown id token, encrypted without a key)."""

    reason = "unsupported"
    response = "DUH"


@dataclass(frozen=True, slots=True)
class SiaFrame:
    token: str  # without the '*'
    seq: str
    prefix: str
    account: str
    data: str = ""  # inside the first [...], e.g. "#1234|Nri1/BA01"
    receiver: str | None = None
    encrypted: bool = False
    extended: tuple[str, ...] = ()  # the [X...] blocks, brackets removed
    timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class SiaEvent:
    """One event of an SIA DC-03 data block: ``Nri1/BA01`` → area 1, code BA, zone 1."""

    code: str
    zone: int = 0
    area: int | None = None
    user: int | None = None
    text: str = ""
    modifiers: dict[str, str] = field(default_factory=dict)


def crc16(data: bytes) -> int:
    """CRC-16/ARC as DC-09 specifies it (reflected 0x8005, init 0, no final xor)."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _cipher(key: bytes) -> Cipher[modes.CBC]:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if len(key) not in KEY_SIZES:
        raise ValueError("AES key must be 16, 24 or 32 bytes")
    return Cipher(algorithms.AES(key), modes.CBC(bytes(AES_BLOCK)))


def encrypt(plain: str, key: bytes, rng: Callable[[], float] = random.random) -> str:
    """Pad ``plain`` (``|data]...``, or ``]...`` for NULL/ACK) and encrypt; returns hex."""
    n = AES_BLOCK - len(plain) % AES_BLOCK  # 1..16 pad characters
    pad = "".join(_PAD_CHARS[int(rng() * len(_PAD_CHARS))] for _ in range(n))
    enc = _cipher(key).encryptor()
    return (enc.update((pad + plain).encode("ascii")) + enc.finalize()).hex().upper()


def decrypt(hex_text: str, key: bytes) -> str:
    """Decrypt and strip the pad. Raises :class:`SiaDecryptError`."""
    try:
        raw = bytes.fromhex(hex_text)
    except ValueError:
        raise SiaDecryptError("encrypted part is not hex") from None
    if not raw or len(raw) % AES_BLOCK:
        raise SiaDecryptError("encrypted part is not a whole number of AES blocks")
    dec = _cipher(key).decryptor()
    plain = dec.update(raw) + dec.finalize()
    try:
        text = plain.decode("ascii")
    except UnicodeDecodeError:
        raise SiaDecryptError("decrypted text is not ASCII (wrong key?)") from None
    cut = min((i for i in (text.find("|"), text.find("]")) if i >= 0), default=-1)
    if cut < 0 or "[" in text[:cut]:
        raise SiaDecryptError("no data after the pad (wrong key?)")
    return text[cut + 1 :] if text[cut] == "|" else text[cut:]


def format_timestamp(now: float) -> str:
    return "_" + datetime.fromtimestamp(now, UTC).strftime(_TS_FORMAT)


def _parse_ts(ts: str) -> datetime:
    try:
        return datetime.strptime(ts, _TS_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise SiaFormatError(f"bad timestamp {ts!r}") from None


def _envelope(body: str) -> bytes:
    b = body.encode("ascii")
    return b"\n" + f"{crc16(b):04X}0{len(b):03X}".encode("ascii") + b + b"\r"


def parse_frame(raw: bytes, *, key: bytes | None = None) -> SiaFrame:
    """Decode one frame (with or without its LF/CR). Raises a :class:`SiaError` subclass;
    never anything else, whatever the bytes."""
    if len(raw) > MAX_FRAME_BYTES:
        raise SiaLengthError(f"frame of {len(raw)} bytes exceeds {MAX_FRAME_BYTES}")
    raw = raw.removeprefix(b"\n").removesuffix(b"\r")
    if len(raw) < 9:
        raise SiaFormatError("frame shorter than its crc and length fields")
    try:
        head = raw[:8].decode("ascii")
        crc, length = int(head[:4], 16), int(head[4:], 16)
    except ValueError:
        raise SiaFormatError("crc/length field is not hex") from None
    if head[4] != "0" or not all(c in "0123456789ABCDEFabcdef" for c in head):
        raise SiaFormatError("crc/length field is not hex")
    body = raw[8:]
    if len(body) != length:
        raise SiaLengthError(f"length field says {length}, body has {len(body)} bytes")
    if crc16(body) != crc:
        raise SiaCrcError(f"CRC {crc:04X} != computed {crc16(body):04X}")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise SiaFormatError("non-ASCII byte in frame") from None
    m = _HEADER.match(text)
    if m is None:
        raise SiaFormatError("bad header (id, sequence, receiver, line, account)")
    token, encrypted = m["token"], bool(m["enc"])
    frame = SiaFrame(token, m["seq"], m["pref"], m["acct"] or "", receiver=m["rcvr"])
    rest = text[m.end() :]
    if token not in TOKENS:
        raise SiaUnsupported(f"unsupported id token {token!r}", frame)
    if encrypted:
        frame = SiaFrame(token, m["seq"], m["pref"], frame.account, "", m["rcvr"], True)
        if key is None:
            raise SiaUnsupported("encrypted frame but no key configured", frame)
        rest = decrypt(rest, key)
    t = _TAIL.fullmatch(rest)
    if t is None:
        raise SiaFormatError("bad data / extended data / timestamp", frame)
    data = t["data"]
    account = frame.account
    if data.startswith("#"):
        account = data[1:].split("|", 1)[0] or account
    if not account:
        raise SiaFormatError("no account in header or data", frame)
    ext = tuple(x[1:] for x in re.findall(r"\[[^\[\]]*", t["ext"]))
    ts = _parse_ts(t["ts"]) if t["ts"] else None
    frame = SiaFrame(token, m["seq"], m["pref"], account, data, m["rcvr"], encrypted, ext, ts)
    if encrypted and ts is None:
        raise SiaTimestampError("encrypted frame without timestamp", frame)
    return frame


def check_timestamp(
    frame: SiaFrame,
    now: float,
    past_s: float = DEFAULT_PAST_S,
    future_s: float = DEFAULT_FUTURE_S,
) -> None:
    """Raise :class:`SiaTimestampError` when the frame's time is outside the window."""
    if frame.timestamp is None:
        return
    skew = frame.timestamp.timestamp() - now
    if skew < -past_s or skew > future_s:
        raise SiaTimestampError(f"timestamp off by {skew:+.0f} s", frame)


def build_frame(
    token: str,
    seq: int | str,
    account: str,
    data: str,
    *,
    prefix: str = "0",
    receiver: str | None = None,
    key: bytes | None = None,
    now: float | None = None,
    extended: tuple[str, ...] = (),
    rng: Callable[[], float] = random.random,
) -> bytes:
    """Encode a frame as a panel would (tests, simulator). ``data`` is the text inside
    ``[...]``, e.g. ``#1234|Nri1/BA01``; ``now`` adds the timestamp (required with a key)."""
    head = f'"{"*" if key else ""}{token}"{int(seq):04d}'
    head += (f"R{receiver}" if receiver else "") + f"L{prefix}#{account}["
    tail = f"{data}]" + "".join(f"[{x}]" for x in extended)
    if now is not None:
        tail += format_timestamp(now)
    if key is not None:
        if now is None:
            raise ValueError("an encrypted frame needs a timestamp")
        tail = encrypt(tail if token == "NULL" and not data else "|" + tail, key, rng)
    return _envelope(head + tail)


def ack(
    frame: SiaFrame, now: float, key: bytes | None = None, rng: Callable[[], float] = random.random
) -> bytes:
    """ACK echoing seq, receiver, prefix and account; encrypted (with our time) when the frame
    was (DC-09 §5.5.2: the panel checks that the ACK decrypts with its key)."""
    rcvr = f"R{frame.receiver}" if frame.receiver else ""
    head = f"{frame.seq}{rcvr}L{frame.prefix}#{frame.account}["
    if frame.encrypted and key is not None:
        return _envelope(f'"*ACK"{head}' + encrypt("]" + format_timestamp(now), key, rng))
    return _envelope(f'"ACK"{head}]')


def nak(now: float) -> bytes:
    """NAK: never encrypted, carries the receiver's time so the panel can correct its clock."""
    return _envelope(f'"NAK"0000R0L0A0[]{format_timestamp(now)}')


def duh(frame: SiaFrame | None) -> bytes:
    """DUH ("don't understand"): echoes what could be read of the frame."""
    if frame is None:
        return _envelope('"DUH"0000R0L0A0[]')
    rcvr = f"R{frame.receiver}" if frame.receiver else ""
    return _envelope(f'"DUH"{frame.seq}{rcvr}L{frame.prefix}#{frame.account or "0"}[]')


_K = AlarmKind
#: SIA DC-03 event code → (kind, restores). Alarms, their restores, and troubles; any other
#: code (openings, closings, bypass, tests, access) becomes a PanelEvent (info).
SIA_CODES: dict[str, tuple[AlarmKind, AlarmKind | None]] = {
    "BA": (_K.INTRUSION, None),  # burglary alarm
    "BV": (_K.INTRUSION, None),  # burglary verified
    "BM": (_K.INTRUSION, None),  # burglary alarm, cross point
    "EA": (_K.INTRUSION, None),  # exit alarm
    "FA": (_K.FIRE, None),  # fire alarm
    "KA": (_K.FIRE, None),  # heat alarm
    "PA": (_K.PANIC, None),  # panic alarm
    "HA": (_K.PANIC, None),  # holdup (duress)
    "MA": (_K.PANIC, None),  # medical
    "QA": (_K.PANIC, None),  # emergency
    "TA": (_K.TAMPER, None),  # tamper alarm
    "ES": (_K.TAMPER, None),  # expansion device tamper
    "BR": (_K.RESTORE, _K.INTRUSION),  # burglary restoral
    "BH": (_K.RESTORE, _K.INTRUSION),  # burglary alarm restore
    "FR": (_K.RESTORE, _K.FIRE),
    "FH": (_K.RESTORE, _K.FIRE),
    "KR": (_K.RESTORE, _K.FIRE),
    "KH": (_K.RESTORE, _K.FIRE),
    "PR": (_K.RESTORE, _K.PANIC),
    "PH": (_K.RESTORE, _K.PANIC),
    "HR": (_K.RESTORE, _K.PANIC),
    "HH": (_K.RESTORE, _K.PANIC),
    "MR": (_K.RESTORE, _K.PANIC),
    "MH": (_K.RESTORE, _K.PANIC),
    "QR": (_K.RESTORE, _K.PANIC),
    "QH": (_K.RESTORE, _K.PANIC),
    "TR": (_K.RESTORE, _K.TAMPER),  # tamper restoral
    "EJ": (_K.RESTORE, _K.TAMPER),  # expansion tamper restore
    "BT": (_K.TROUBLE, None),  # burglary trouble
    "FT": (_K.TROUBLE, None),  # fire trouble
    "PT": (_K.TROUBLE, None),
    "HT": (_K.TROUBLE, None),
    "KT": (_K.TROUBLE, None),
    "UT": (_K.TROUBLE, None),  # untyped zone trouble
    "AT": (_K.TROUBLE, None),  # AC trouble (mains lost)
    "YT": (_K.TROUBLE, None),  # system battery trouble
    "YM": (_K.TROUBLE, None),  # system battery missing
    "YP": (_K.TROUBLE, None),  # power supply trouble
    "YC": (_K.TROUBLE, None),  # communications fail
    "LT": (_K.TROUBLE, None),  # phone line trouble
    "XT": (_K.TROUBLE, None),  # RF transmitter battery trouble
    "ET": (_K.TROUBLE, None),  # expansion trouble
    "EM": (_K.TROUBLE, None),  # expansion device missing
    "GA": (_K.TROUBLE, None),  # gas alarm: no kind of its own (see contact_id 15x)
    "WA": (_K.TROUBLE, None),  # water alarm
    "BJ": (_K.RESTORE, _K.TROUBLE),
    "FJ": (_K.RESTORE, _K.TROUBLE),
    "PJ": (_K.RESTORE, _K.TROUBLE),
    "HJ": (_K.RESTORE, _K.TROUBLE),
    "KJ": (_K.RESTORE, _K.TROUBLE),
    "UJ": (_K.RESTORE, _K.TROUBLE),
    "AR": (_K.RESTORE, _K.TROUBLE),  # AC restoral
    "YR": (_K.RESTORE, _K.TROUBLE),  # system battery restoral
    "YQ": (_K.RESTORE, _K.TROUBLE),  # power supply restored
    "YK": (_K.RESTORE, _K.TROUBLE),  # communications restoral
    "LR": (_K.RESTORE, _K.TROUBLE),  # phone line restoral
    "XR": (_K.RESTORE, _K.TROUBLE),  # RF transmitter battery restoral
    "ER": (_K.RESTORE, _K.TROUBLE),  # expansion restoral
    "EN": (_K.RESTORE, _K.TROUBLE),  # expansion missing restore
    "GR": (_K.RESTORE, _K.TROUBLE),
    "GH": (_K.RESTORE, _K.TROUBLE),
    "WR": (_K.RESTORE, _K.TROUBLE),
    "WH": (_K.RESTORE, _K.TROUBLE),
}

#: One element of a DC-03 data block: a modifier (``ri1``, ``ti10:30``, ``id12``) or an event
#: (``BA01``, ``CL0^text^``), optionally separated by ``/`` (DC-03 §4; pysiaalarm's regexes).
_SIA_ELEMENT = re.compile(
    r"/?(?:(?P<mod>[a-z]{2})(?P<mval>[^/A-Z^]*)"
    r"|(?P<code>[A-Z]{2})(?P<addr>[0-9A-Za-z]*)(?:\^(?P<text>[^^]*)\^?)?)"
)


def parse_sia_data(data: str) -> list[SiaEvent]:
    """Events of a ``SIA-DCS`` block (``#acct|Nri1/BA01/BA02``). Raises :class:`SiaFormatError`
    when the block holds no event or something that is not DC-03."""
    body = data.split("|", 1)[1] if data.startswith("#") and "|" in data else data
    body = body.removeprefix("|")
    if body[:1] in ("N", "O"):
        body = body[1:]  # DC-03 block function: N new event, O old (DC-09 data always has one)
    mods: dict[str, str] = {}
    events: list[SiaEvent] = []
    pos = 0
    while pos < len(body):
        m = _SIA_ELEMENT.match(body, pos)
        if m is None or m.end() == pos:
            raise SiaFormatError(f"not SIA DC-03 data at {body[pos : pos + 16]!r}")
        pos = m.end()
        if m["mod"]:
            mods[m["mod"]] = m["mval"]
            continue
        addr = m["addr"]
        area, user = mods.get("ri", ""), mods.get("id", "")
        events.append(
            SiaEvent(
                m["code"],
                zone=int(addr) if addr.isdigit() else 0,
                area=int(area) if area.isdigit() else None,
                user=int(user) if user.isdigit() else None,
                text=(m["text"] or "") if addr.isdigit() or not addr else addr + (m["text"] or ""),
                modifiers=dict(mods),
            )
        )
    if not events:
        raise SiaFormatError("SIA block without an event code")
    return events


def frame_events(frame: SiaFrame, device: str) -> list[Alarm | PanelEvent]:
    """Typed events of a parsed frame: alarms for the mapped codes, :class:`PanelEvent` for the
    rest. A NULL frame (link test) has none. Raises :class:`SiaError` on a bad payload."""
    src = AlarmSource.SIA_DC09
    base = {"account": frame.account, "seq": frame.seq}
    if frame.token == "NULL":
        return []
    if frame.token == "ADM-CID":
        payload = frame.data.split("|", 1)[1] if "|" in frame.data else frame.data
        try:
            msg = parse_event(payload, account=frame.account)
        except ContactIdError as err:
            raise SiaFormatError(f"bad ADM-CID payload: {err}", frame) from None
        ev = to_event(msg, device, src)
        ev.detail.update(base, format="ADM-CID")
        return [ev]
    out: list[Alarm | PanelEvent] = []
    for e in parse_sia_data(frame.data):
        d: dict[str, object] = dict(base, format="SIA-DCS", code=e.code)
        if e.area is not None:
            d["area"] = e.area
        if e.user is not None:
            d["user"] = e.user
        if e.text:
            d["text"] = e.text
        mapped = SIA_CODES.get(e.code)
        if mapped is None:
            d["zone_or_user"] = e.zone
            out.append(PanelEvent(device, src, d))
        else:
            out.append(Alarm(mapped[0], e.zone, src, device, restores=mapped[1], detail=d))
    return out
