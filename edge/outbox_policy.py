"""The outbox's pure rules: send order and what to evict when full (no I/O, unit-tested).

Order: alarms first, then device changes, then info; within a priority, acceptance order.
Bound: when the outbox holds ``max_events``, a new event makes room by evicting the oldest
event of the lowest priority class that is stored and not above the new event's priority
(info first, then device). Alarms are never evicted nor refused: they may exceed the bound.
A non-alarm event for which nothing can be evicted (the outbox is full of more important
events) is refused. Every eviction and refusal is counted by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from wire import Priority

#: Lowest first: the order in which classes give up room.
EVICTION_ORDER: tuple[Priority, ...] = (Priority.INFO, Priority.DEVICE)


@dataclass(frozen=True, slots=True)
class Admission:
    """What to do with one new event: evict the oldest event of ``evict`` first (if set);
    ``refuse``: do not store the new event at all."""

    evict: Priority | None = None
    refuse: bool = False


ADMIT = Admission()


def admit(new: Priority, counts: Mapping[Priority, int], max_events: int) -> Admission:
    """Decide how a new event of priority ``new`` enters an outbox holding ``counts``."""
    if sum(counts.values()) < max_events:
        return ADMIT
    for victim in EVICTION_ORDER:
        if victim.rank > new.rank and new is not Priority.ALARM:
            break
        if counts.get(victim, 0) > 0:
            return Admission(evict=victim)
    if new is Priority.ALARM:
        return ADMIT  # over the bound on purpose: an alarm is never lost
    return Admission(refuse=True)


def send_key(priority: Priority, row_id: int) -> tuple[int, int]:
    """Sort key of the send order (the SQL index mirrors it: ``prio DESC, id``)."""
    return (-priority.rank, row_id)
