"""Ademco Contact ID (SIA DC-05), pure: parse and build the 16-digit message, map it to an
:class:`~firmware_bridge.alarms.Alarm`.

A message is ``ACCT MT Q XYZ GG CCC S`` (SIA DC-05-1999.09; spandsp ``ademco_contactid.c``):

- ``ACCT`` 4-digit account, ``MT`` message type (``18``, or ``98`` optional),
- ``Q`` qualifier: 1 new event / opening, 3 restore / closing, 6 previously reported (status),
- ``XYZ`` event code (1xx alarms, 3xx trouble, 4xx open/close, 5xx bypass, 6xx test...),
- ``GG`` group / partition (``00`` = none), ``CCC`` zone, or user for open/close and duress,
- ``S`` checksum: the digit values of all 16 digits sum to a multiple of 15.

Digits are hex ``0-9 B-F``. The digit 0 counts as 10 in the checksum and is also sent as ``A``
(DC-05 digit table; Ademco Express: "the digit A and 0 are equivalent"), so ``A`` is accepted
as 0. A checksum of 10 is written ``0``; a message whose digits already sum to a multiple of 15
carries ``F`` (never 0: spandsp ``encode_msg``).

The same mapping serves DC-09 ``ADM-CID`` payloads (``QXYZ GG CCC``, no account or checksum).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from firmware_bridge.alarms import Alarm, AlarmKind, AlarmSource
from wire import Priority

#: Length of a message on the wire (DC-05 §3: 4 + 2 + 1 + 3 + 2 + 3 + 1).
MESSAGE_DIGITS = 16

#: Value of each digit in the checksum (DC-05 digit table): 0 (and its alias A) is worth 10.
DIGIT_VALUE: dict[str, int] = {str(d): d for d in range(1, 10)} | {
    "0": 10,
    "A": 10,
    "B": 11,
    "C": 12,
    "D": 13,
    "E": 14,
    "F": 15,
}

QUALIFIER_NEW = 1  # new event or opening
QUALIFIER_RESTORE = 3  # restore or closing
QUALIFIER_STATUS = 6  # previously reported condition still present
QUALIFIERS = frozenset({QUALIFIER_NEW, QUALIFIER_RESTORE, QUALIFIER_STATUS})

#: Message types a receiver accepts as Contact ID (DC-05: 18 preferred, 98 optional).
MESSAGE_TYPES = frozenset({"18", "98"})

#: Kind of the non-alarm events (open/close, bypass, tests) that panels also report: the panel
#: needs them ACKed, operators want them in the log, they are never alarms.
PANEL_EVENT_KIND = "panel_event"


class ContactIdError(ValueError):
    """The peer sent a malformed Contact ID message. ``reason`` is the metric label."""

    reason = "format"


class BadLength(ContactIdError):
    reason = "length"


class BadDigit(ContactIdError):
    reason = "digit"


class BadChecksum(ContactIdError):
    reason = "checksum"


class BadField(ContactIdError):
    """Well-formed digits but a field outside the protocol (qualifier, message type)."""

    reason = "field"


@dataclass(frozen=True, slots=True)
class ContactIdMessage:
    """One decoded message. ``code`` is the 3-digit event code as sent (``"130"``);
    ``zone`` is CCC (a user number for open/close and duress codes)."""

    account: str
    qualifier: int
    code: str
    partition: int
    zone: int
    message_type: str = "18"

    @property
    def family(self) -> int:
        """The event code's hundreds (1 alarm, 3 trouble, 4 open/close...)."""
        return int(self.code[0], 16)


@dataclass(frozen=True, slots=True)
class PanelEvent:
    """A panel report that is not an alarm (arming, bypass, periodic test...). It is still
    stored and sent (priority info) so that an ACKed report is never silently dropped."""

    device: str
    source: AlarmSource
    detail: dict[str, Any] = field(default_factory=dict)
    kind: str = PANEL_EVENT_KIND

    @property
    def priority(self) -> Priority:
        return Priority.INFO

    def event_data(self) -> dict[str, Any]:
        return {"source": self.source.value, "detail": self.detail}


def _digit_values(digits: str) -> list[int]:
    try:
        return [DIGIT_VALUE[d] for d in digits]
    except KeyError as e:
        raise BadDigit(f"not a Contact ID digit: {e.args[0]!r}") from None


def checksum_digit(digits15: str) -> str:
    """The checksum digit for the first 15 digits (uppercase, ``0`` means 10)."""
    rem = sum(_digit_values(digits15.upper())) % 15
    s = 15 - rem  # 1..15: a sum already divisible by 15 takes F, never 0
    return "0" if s == 10 else format(s, "X")


def _field(digits: str) -> int:
    """A numeric field (GG, CCC): decimal as panels print it; hex digits B-F read as hex."""
    d = digits.replace("A", "0")
    return int(d) if d.isdigit() else int(d, 16)


def parse(message: str | bytes) -> ContactIdMessage:
    """Decode one message (spaces allowed between groups, as receivers print them).

    Raises :class:`BadLength`, :class:`BadDigit`, :class:`BadChecksum` or :class:`BadField`."""
    if isinstance(message, bytes):
        try:
            message = message.decode("ascii")
        except UnicodeDecodeError:
            raise BadDigit("non-ASCII byte in Contact ID message") from None
    if len(message) > 2 * MESSAGE_DIGITS:  # checked before any per-digit work
        raise BadLength(f"Contact ID message too long: {len(message)} characters")
    digits = message.replace(" ", "").upper()
    if len(digits) != MESSAGE_DIGITS:
        raise BadLength(f"Contact ID message has {len(digits)} digits, expected 16")
    if sum(_digit_values(digits)) % 15 != 0:
        raise BadChecksum(f"Contact ID checksum mismatch in {digits}")
    mt = digits[4:6]
    if mt not in MESSAGE_TYPES:
        raise BadField(f"Contact ID message type {mt!r} is not 18 or 98")
    msg = parse_event(digits[6:15], account=digits[0:4].replace("A", "0"))
    return ContactIdMessage(
        msg.account, msg.qualifier, msg.code, msg.partition, msg.zone, message_type=mt
    )


def parse_event(payload: str, *, account: str) -> ContactIdMessage:
    """Decode ``QXYZ GG CCC`` (spaces optional), the part a DC-09 ``ADM-CID`` block carries."""
    if len(payload) > 2 * MESSAGE_DIGITS:
        raise BadLength(f"Contact ID event too long: {len(payload)} characters")
    digits = payload.replace(" ", "").upper()
    if len(digits) != 9:
        raise BadLength(f"Contact ID event has {len(digits)} digits, expected 9 (QXYZ GG CCC)")
    _digit_values(digits)
    q = int(digits[0]) if digits[0].isdigit() else -1
    if q not in QUALIFIERS:
        raise BadField(f"Contact ID qualifier {digits[0]!r} is not 1, 3 or 6")
    code = digits[1:4].replace("A", "0")
    return ContactIdMessage(account, q, code, _field(digits[4:6]), _field(digits[6:9]))


def build(
    account: str,
    qualifier: int,
    code: str | int,
    partition: int = 0,
    zone: int = 0,
    message_type: str = "18",
) -> str:
    """Encode a message with its checksum (for tests and the board simulator).

    ``code`` is ``"130"`` or ``130``; partition and zone are written in decimal, as panels do."""
    if qualifier not in QUALIFIERS:
        raise ValueError(f"qualifier must be 1, 3 or 6, not {qualifier}")
    code_s = f"{code:03d}" if isinstance(code, int) else code.upper()
    if not 0 <= partition <= 99 or not 0 <= zone <= 999:
        raise ValueError("partition must be 0..99 and zone 0..999")
    body = f"{account.upper()}{message_type}{qualifier}{code_s}{partition:02d}{zone:03d}"
    if len(body) != MESSAGE_DIGITS - 1:
        raise ValueError(f"account must be 4 digits and code 3: {body!r}")
    _digit_values(body)
    return body + checksum_digit(body)


#: Code → kind, by exact code first, then by the code's tens (DC-05 Appendix; spandsp table).
#: Anything not here (4xx open/close, 5xx bypass, 6xx test, 7xx+) is a :class:`PanelEvent`.
_KIND_BY_CODE: dict[str, AlarmKind] = {
    "137": AlarmKind.TAMPER,  # burglary: tamper
    "141": AlarmKind.TROUBLE,  # polling loop open
    "142": AlarmKind.TROUBLE,  # polling loop short
    "143": AlarmKind.TROUBLE,  # expansion module failure
    "144": AlarmKind.TAMPER,  # sensor tamper
    "145": AlarmKind.TAMPER,  # expansion module tamper
    "147": AlarmKind.TROUBLE,  # sensor supervision failure
    "102": AlarmKind.TROUBLE,  # fail to report in
    "341": AlarmKind.TAMPER,  # expansion module tamper
    "383": AlarmKind.TAMPER,  # sensor tamper
}
_KIND_BY_TENS: dict[str, AlarmKind] = {
    "10": AlarmKind.PANIC,  # medical / personal emergency (求助)
    "11": AlarmKind.FIRE,  # fire, smoke, heat, flame...
    "12": AlarmKind.PANIC,  # panic, duress, silent/audible
    "13": AlarmKind.INTRUSION,  # burglary: perimeter, interior, entry/exit...
    "14": AlarmKind.INTRUSION,  # general alarm, silent burglary
    # 15x/16x "24 hour non-burglary" (gas, water, temperature, CO) have no kind of their own in
    # AlarmKind: they are reported as trouble so they are never lost, with the description.
    "15": AlarmKind.TROUBLE,
    "16": AlarmKind.TROUBLE,
    "20": AlarmKind.TROUBLE,  # fire supervisory (sprinkler pressure, pumps)
}

#: Descriptions (zh-CN, en) of the codes operators meet most; others show the code only.
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "100": ("医疗求助", "Medical"),
    "101": ("个人紧急求助", "Personal emergency"),
    "110": ("火警", "Fire"),
    "111": ("烟感报警", "Smoke"),
    "114": ("温感报警", "Heat"),
    "120": ("紧急求助", "Panic"),
    "121": ("胁迫报警", "Duress"),
    "122": ("无声求助", "Silent panic"),
    "123": ("有声求助", "Audible panic"),
    "130": ("入侵报警", "Burglary"),
    "131": ("周界入侵", "Perimeter burglary"),
    "132": ("室内入侵", "Interior burglary"),
    "133": ("24小时防区报警", "24 hour (safe)"),
    "134": ("出入口防区报警", "Entry/exit"),
    "137": ("防拆报警", "Tamper"),
    "144": ("探测器防拆", "Sensor tamper"),
    "151": ("燃气泄漏", "Gas detected"),
    "154": ("漏水", "Water leakage"),
    "158": ("高温", "High temperature"),
    "162": ("一氧化碳", "Carbon monoxide detected"),
    "301": ("交流电断电", "AC loss"),
    "302": ("主机电池电压低", "Low system battery"),
    "350": ("通讯故障", "Communication trouble"),
    "380": ("探测器故障", "Sensor trouble"),
    "381": ("无线探测器失去监控", "Loss of supervision - RF"),
    "383": ("探测器防拆", "Sensor tamper"),
    "384": ("无线探测器电池低", "RF low battery"),
    "401": ("用户布撤防", "Open/close by user"),
    "407": ("远程布撤防", "Remote arm/disarm"),
    "570": ("防区旁路", "Bypass"),
    "602": ("定时测试", "Periodic test"),
}


def kind_of(code: str) -> AlarmKind | None:
    """The alarm kind of an event code, or None when the code is not an alarm or trouble."""
    if code in _KIND_BY_CODE:
        return _KIND_BY_CODE[code]
    if code[:2] in _KIND_BY_TENS:
        return _KIND_BY_TENS[code[:2]]
    if code[0] == "3":  # 3xx: system, peripheral, communication, sensor trouble
        return AlarmKind.TROUBLE
    return None


def detail(msg: ContactIdMessage) -> dict[str, Any]:
    """The ``detail`` of the alarm: the message's own fields, for the operator and audits."""
    zh, en = DESCRIPTIONS.get(msg.code, ("", ""))
    d: dict[str, Any] = {
        "account": msg.account,
        "code": msg.code,
        "qualifier": msg.qualifier,
        "partition": msg.partition,
    }
    if zh:
        d["description"] = {"zh": zh, "en": en}
    if msg.qualifier == QUALIFIER_STATUS:
        d["status_report"] = True  # condition reported before and still present
    return d


def to_event(
    msg: ContactIdMessage, device: str, source: AlarmSource = AlarmSource.CONTACT_ID
) -> Alarm | PanelEvent:
    """Map a message to a typed alarm (qualifier 3 → RESTORE with ``restores``), or to a
    :class:`PanelEvent` for codes that are not alarms (open/close, bypass, tests)."""
    kind = kind_of(msg.code)
    d = detail(msg)
    if kind is None:
        d["zone_or_user"] = msg.zone
        return PanelEvent(device, source, d)
    if msg.qualifier == QUALIFIER_RESTORE:
        return Alarm(AlarmKind.RESTORE, msg.zone, source, device, restores=kind, detail=d)
    return Alarm(kind, msg.zone, source, device, detail=d)
