"""Board inputs → zones → typed alarms, sans-I/O: debouncing, restores, and which board events
may be acknowledged to the board when.

Each configured zone is one board input (panic button, door contact, PIR, smoke detector,
tamper switch). The board reports raw input changes ("contact closed" = ``active``) with its own
millisecond timestamp; a normally-closed zone is in alarm when its contact opens, a
normally-open one when it closes. A zone leaving alarm produces a RESTORE. Debouncing, per zone
(docs/edge.md "Debouncing"), measured on the board's clock:

- ``leading`` (default): the first transition into alarm is reported at once (the alarm
  latency target, p50 <= 20 ms in bench/alarm_latency.py, leaves no room for waiting); contact
  chatter that follows is suppressed, because the RESTORE is reported only once the input has
  stayed normal for the debounce time: a bounce back into alarm within that time cancels it
  (noise, no event).
- ``trailing``: every change, alarm or restore, counts only once the input has stayed in the
  new state for the debounce time; a glitch shorter than that produces nothing. For inputs
  whose short pulses are known to be noise (long unshielded runs, vibration sensors), at the
  price of the debounce time added to every alarm.

Acknowledgement rule (ACK only after the event is in the edge outbox): every board
event fed in is returned in exactly one :class:`Decision`'s ``acks``, together with the alarm it
produced, if any. The caller must emit the alarm durably first and only then ack the keys; a
bounce is acked without an alarm. So an input change that was acked is either in the outbox or
was found to be noise, and one that was not is retransmitted by the board after a restart.

Debounce deadlines are in board time (per board boot: the clock restarts on a reboot and wraps
at 2**32 ms), turned into host time by the offset seen on the newest board message. Time is
passed in: ``now`` is the host's monotonic clock in seconds. Board events must be fed in board
order (the link delivers them so).

Contact ID messages relayed by the board (16 raw digits from the local panel) are parsed by
:mod:`firmware_bridge.contact_id`; they are not debounced (the panel already decided).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from firmware_bridge.alarms import Alarm, AlarmKind, AlarmSource
from wire import Priority

log = logging.getLogger("shilian.firmware_bridge.zones")

#: Zone kinds an input can have: trouble and restore are produced, never configured.
ZONE_KINDS = (AlarmKind.PANIC, AlarmKind.INTRUSION, AlarmKind.FIRE, AlarmKind.TAMPER)
#: Default debounce: mechanical contacts and reed switches settle within ~20 ms; 50 ms of
#: stability rejects that chatter (with leading-edge zones it delays only the restore).
DEFAULT_DEBOUNCE_MS = 50
#: Longest debounce accepted: beyond a few seconds a "debounce" hides real alarms.
MAX_DEBOUNCE_MS = 10_000
#: Board inputs are numbered 1..MAX_INPUTS (the link's input bitmap is at most 64 bits wide).
MAX_INPUTS = 64
#: The board's millisecond clock wraps at 2**32 (~49.7 days of uptime).
BOARD_MS_WRAP = 2**32
#: Board boots whose clock offset is remembered: events of older boots still queued in the
#: board's flash arrive after a reboot, a few boots at most.
CLOCKS_MAX = 8


class Debounce(StrEnum):
    """How a zone's debounce time applies (module docstring)."""

    LEADING = "leading"  # alarm at once, restore after the input is stable
    TRAILING = "trailing"  # alarm and restore after the input is stable


#: The board event's identity, acknowledged back to the board (the link's ``EventKey``).
Key = TypeVar("Key", bound=Hashable)


class Report(Protocol):
    """What becomes one outbox event: an :class:`Alarm`, or a panel report that is not an
    alarm (``contact_id.PanelEvent``: arming, tests...), which is stored all the same."""

    @property
    def priority(self) -> Priority: ...
    @property
    def kind(self) -> str: ...
    @property
    def device(self) -> str: ...
    def event_data(self) -> dict[str, Any]: ...


#: Parses a relayed Contact ID message: (device id, raw digits) → report; raises ValueError (or
#: a subclass, e.g. ``contact_id.ContactIdError``) on a malformed message.
PanelParser = Callable[[str, str], Report]


@dataclass(frozen=True, slots=True)
class Zone:
    """One configured input. ``always_armed`` (24 小时防区): alarms even when the system is
    disarmed (panic, fire, tamper usually are; door and PIR zones usually are not)."""

    input_no: int
    kind: AlarmKind
    name: str = ""
    normally_closed: bool = False
    debounce_ms: int = DEFAULT_DEBOUNCE_MS
    always_armed: bool = True
    debounce: Debounce = Debounce.LEADING

    def __post_init__(self) -> None:
        if not 1 <= self.input_no <= MAX_INPUTS:
            raise ValueError(f"input_no must be 1..{MAX_INPUTS}")
        if self.kind not in ZONE_KINDS:
            raise ValueError(f"zone kind must be one of {[k.value for k in ZONE_KINDS]}")
        if not 0 <= self.debounce_ms <= MAX_DEBOUNCE_MS:
            raise ValueError(f"debounce_ms must be 0..{MAX_DEBOUNCE_MS}")

    def alarming(self, active: bool) -> bool:
        """Whether the raw input state means alarm (NC: contact open; NO: contact closed)."""
        return active != self.normally_closed


@dataclass(frozen=True, slots=True)
class Decision(Generic[Key]):
    """Emit ``alarm`` (durably) if set, then acknowledge ``acks`` to the board."""

    alarm: Report | None
    acks: tuple[Key, ...]


@dataclass(slots=True)
class _Pending(Generic[Key]):
    alarming: bool  # the state the input moved to
    board_ms: int  # when, on the board's clock
    boot: int  # which board boot's clock ``board_ms`` is on
    keys: list[Key] = field(default_factory=list)


@dataclass(slots=True)
class _ZoneState(Generic[Key]):
    zone: Zone
    alarming: bool = False  # the debounced (reported) state
    pending: _Pending[Key] | None = None


class Zones(Generic[Key]):
    """The zones of one board. Feed :meth:`input_changed` / :meth:`panel_message`; take
    :meth:`decisions` after each feed and at :meth:`next_deadline` (host seconds)."""

    def __init__(
        self,
        zones: Iterable[Zone],
        *,
        device: str = "alarm_board",
        armed: bool = True,
        panel_parser: PanelParser | None = None,
    ) -> None:
        self.device = device
        self.armed = armed
        self._zones: dict[int, _ZoneState[Key]] = {}
        for z in zones:
            if z.input_no in self._zones:
                raise ValueError(f"input {z.input_no} configured twice")
            self._zones[z.input_no] = _ZoneState(z)
        self._panel_parser = panel_parser
        self._ready: list[Decision[Key]] = []
        #: Per board boot: (newest board ms seen, host ms - board ms at that message).
        self._clocks: dict[int, tuple[int, float]] = {}
        #: Board events that mapped to nothing (unconfigured input, bad panel message), by reason.
        self.ignored: dict[str, int] = {}

    @property
    def zones(self) -> Sequence[Zone]:
        return [s.zone for s in self._zones.values()]

    def observe_clock(self, boot: int, board_ms: int, now: float) -> None:
        """Learn the board clock of ``boot`` from a message sent at ``board_ms`` received at
        ``now`` (events and heartbeats). Only the newest message counts: an old one
        (retransmitted) arrived late and would push every deadline back."""
        seen = self._clocks.pop(boot, None)
        if seen is None or _delta(seen[0], board_ms) >= 0:
            seen = (board_ms, now * 1000.0 - board_ms)
        self._clocks[boot] = seen
        while len(self._clocks) > CLOCKS_MAX:
            del self._clocks[next(iter(self._clocks))]

    def input_changed(
        self, key: Key, input_no: int, active: bool, board_ms: int, now: float, boot: int = 0
    ) -> None:
        """Input ``input_no`` became ``active`` (contact closed) at ``board_ms`` of board boot
        ``boot``; ``key`` is acknowledged through a later :class:`Decision`."""
        self.observe_clock(boot, board_ms, now)
        s = self._zones.get(input_no)
        if s is None:
            self._ignore("unconfigured_input", key)
            return
        alarming = s.zone.alarming(active)
        p = s.pending
        if p is None:
            if alarming == s.alarming:
                self._ignore("no_change", key)  # e.g. a change that restated the current state
                return
        elif alarming == p.alarming:
            p.keys.append(key)  # restated while pending: keep the first time
            self._settle_due(now)
            return
        elif p.boot == boot and _delta(p.board_ms, board_ms) < s.zone.debounce_ms:
            # A bounce: back to the reported state before the debounce time. Noise only.
            self._ready.append(Decision(None, (*p.keys, key)))
            s.pending = None
            self._settle_due(now)
            return
        else:
            # It did stay long enough (we learned it late, or the board rebooted meanwhile):
            # report it, then the new change.
            self._settle(s)
        s.pending = _Pending(alarming, board_ms, boot, [key])
        if alarming and s.zone.debounce is Debounce.LEADING:
            self._settle(s)  # leading edge: the alarm now; chatter is caught by the restore
        self._settle_due(now)

    def panel_message(self, key: Key, raw: str) -> None:
        """A Contact ID message relayed by the board (not debounced)."""
        if self._panel_parser is None:
            self._ignore("no_contact_id_parser", key)
            log.warning("board %s: Contact ID message but no parser available", self.device)
            return
        try:
            alarm = self._panel_parser(self.device, raw)
        except ValueError as e:
            self._ignore("bad_contact_id", key)
            log.warning("board %s: bad Contact ID message %r: %s", self.device, raw[:40], e)
            return
        self._ready.append(Decision(alarm, (key,)))

    def on_timer(self, now: float) -> None:
        self._settle_due(now)

    def next_deadline(self) -> float | None:
        """Host time (seconds) at which a pending change settles, if any."""
        due = [self._due(s) for s in self._zones.values() if s.pending is not None]
        return min(due) if due else None

    def decisions(self) -> list[Decision[Key]]:
        out, self._ready = self._ready, []
        return out

    # -- internals --------------------------------------------------------------------------

    def _due(self, s: _ZoneState[Key]) -> float:
        assert s.pending is not None
        p = s.pending
        newest, offset = self._clocks.get(p.boot, (p.board_ms, 0.0))
        # Relative to the newest timestamp so that a clock wrap in between does not matter.
        due_ms = newest + _delta(newest, p.board_ms) + s.zone.debounce_ms + offset
        return due_ms / 1000.0

    def _settle_due(self, now: float) -> None:
        for s in self._zones.values():
            if s.pending is not None and self._due(s) <= now:
                self._settle(s)

    def _settle(self, s: _ZoneState[Key]) -> None:
        p = s.pending
        assert p is not None
        s.pending = None
        s.alarming = p.alarming
        z = s.zone
        alarm: Report | None = None
        if self.armed or z.always_armed:
            detail = {"input": z.input_no, "name": z.name, "board_ms": p.board_ms}
            if p.alarming:
                alarm = Alarm(z.kind, z.input_no, AlarmSource.BOARD, self.device, detail=detail)
            else:
                alarm = Alarm(
                    AlarmKind.RESTORE,
                    z.input_no,
                    AlarmSource.BOARD,
                    self.device,
                    restores=z.kind,
                    detail=detail,
                )
        self._ready.append(Decision(alarm, tuple(p.keys)))

    def _ignore(self, reason: str, key: Key) -> None:
        self.ignored[reason] = self.ignored.get(reason, 0) + 1
        self._ready.append(Decision(None, (key,)))


def _delta(a: int, b: int) -> int:
    """``b - a`` in board milliseconds, across a wrap of the board's 32-bit clock."""
    return (b - a + BOARD_MS_WRAP // 2) % BOARD_MS_WRAP - BOARD_MS_WRAP // 2
