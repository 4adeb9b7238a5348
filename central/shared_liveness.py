"""Who is overdue, for the leader of several ingest processes (docs/scale.md). Pure: the
rows and the time are passed in.

Each process stores what it hears; only the leader judges silence, from the database: a node
online since ``heard`` (its birth, or its latest health report, whichever process stored it) is
overdue once ``HEALTH_GRACE_FACTOR`` x its interval has passed since, as for the single process
(central/liveness.py), and never before ``hold_until``: the end of the hold after the leader's
own broker connection came up (no false collapse for silence that was the leader's deafness).
The times are wall-clock times stored by whichever process heard the node: the processes'
clocks are assumed NTP-synchronised (a step moves deadlines, unlike the single process's
monotonic ones).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from wire.limits import HEALTH_GRACE_FACTOR


@dataclass(frozen=True, slots=True)
class OnlineNode:
    """An online node as the leader reads it from the database."""

    node_id: str
    boot_id: str | None
    birth_seq: int
    health_interval_s: float
    heard: float


def overdue(
    nodes: Iterable[OnlineNode],
    now: float,
    hold_until: float,
    grace_factor: float = HEALTH_GRACE_FACTOR,
) -> list[OnlineNode]:
    """The nodes whose deadline has passed at ``now``."""
    if now < hold_until:
        return []
    return [n for n in nodes if now > n.heard + grace_factor * n.health_interval_s]
