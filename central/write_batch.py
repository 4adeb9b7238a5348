"""A batch of ingest writes folded to what the database must end with (pure, no I/O).

The ingest core hands the store its writes in the order the messages came (central.ingest
``take``). Applied one by one, several writes to the same key only leave the last one's effect
(the upserts of ``nodes`` and ``devices``, the complete set of gaps of a (node, boot)). Folding
them first gives the same rows with one write per key, which is also what a set-based statement
needs: PostgreSQL's ``INSERT … ON CONFLICT DO UPDATE`` refuses to touch one row twice.

What is never folded: health reports and events (each is a row of its own; a repeated event is
dropped by the events table's unique key) and state intervals (each closes the one before it, so
a node's intervals keep their order: :func:`interval_rounds`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from central.rows import DeviceRow, EventRow, GapsRow, HealthRow, IntervalRow, NodeRow, Write


@dataclass(slots=True)
class FoldedBatch:
    """One batch's writes by kind: one row per key where the table keeps one."""

    nodes: list[NodeRow] = field(default_factory=list)
    intervals: list[IntervalRow] = field(default_factory=list)
    health: list[HealthRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    gaps: list[GapsRow] = field(default_factory=list)
    devices: list[DeviceRow] = field(default_factory=list)


def fold(writes: Iterable[Write]) -> FoldedBatch:
    """Fold ``writes`` (in arrival order) so that applying the result kind by kind leaves the
    database as applying ``writes`` one by one would.

    - Node upserts of one node become one: the first one's insert-only columns (``village``,
      ``county``, ``first_seen``: what an insert would have stored), the last one's others, and
      the latest ``last_health`` that is not None (None keeps the stored value).
    - Device upserts of one (node, device) become one; a removal keeps the description the row
      had before it (the stored one if the batch had none, else the batch's), as the upsert does.
    - Gap sets of one (node, boot): the last (each is the complete set).
    - Health reports, events and intervals: all of them, in order.
    """
    out = FoldedBatch()
    nodes: dict[str, NodeRow] = {}
    devices: dict[tuple[str, str], DeviceRow] = {}
    gaps: dict[tuple[str, str], GapsRow] = {}
    for w in writes:
        if isinstance(w, EventRow):
            out.events.append(w)
        elif isinstance(w, HealthRow):
            out.health.append(w)
        elif isinstance(w, NodeRow):
            prev = nodes.get(w.node_id)
            if prev is None:
                nodes[w.node_id] = w
            else:
                nodes[w.node_id] = replace(
                    w,
                    village=prev.village,
                    county=prev.county,
                    first_seen=prev.first_seen,
                    last_health=prev.last_health if w.last_health is None else w.last_health,
                )
        elif isinstance(w, IntervalRow):
            out.intervals.append(w)
        elif isinstance(w, GapsRow):
            gaps[(w.node_id, w.boot_id)] = w
        else:
            key = (w.node_id, w.device_id)
            had = devices.get(key)
            if had is not None and w.removed:
                w = replace(had, ts=w.ts, removed=w.removed)
            devices[key] = w
    out.nodes = list(nodes.values())
    out.gaps = list(gaps.values())
    out.devices = list(devices.values())
    return out


def interval_rounds(intervals: Iterable[IntervalRow]) -> list[list[IntervalRow]]:
    """Split ``intervals`` into rounds with at most one interval per node each, a node's k-th
    interval in round k: applied round after round, each node's intervals keep their order."""
    rounds: list[list[IntervalRow]] = []
    seen: dict[str, int] = {}
    for w in intervals:
        k = seen.get(w.node_id, 0)
        seen[w.node_id] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(w)
    return rounds


class HealthPrune:
    """Which nodes' health history to prune, so that pruning costs one statement per
    ``every`` reports of a node rather than one per report.

    A node is due at every ``every``-th report: pruned then to ``keep`` rows, it holds at most
    ``keep + every - 1`` rows while the process runs. With ``stagger``, a node's count starts
    at a fixed point of the cycle drawn from its id (CRC-32), so that the nodes, which all
    start counting when central starts and report at one interval, are not all due in the
    same interval: each batch prunes about ``1 / every`` of its nodes. Counts live in memory:
    after a restart a node's first prune comes at most ``every`` reports later, so up to
    ``every - 1`` more rows may wait until then (the same after a batch that was rolled back:
    its counts are not taken back).
    """

    def __init__(self, every: int, *, stagger: bool = True) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1, not {every}")
        self.every = every
        self.stagger = stagger
        self._count: dict[str, int] = {}

    def due(self, health: Iterable[HealthRow]) -> list[str]:
        """Count ``health`` (a batch's reports); the nodes whose history is due, each once."""
        count = self._count
        every = self.every
        out: list[str] = []
        for h in health:
            n = count.get(h.node_id)
            if n is None:
                n = zlib.crc32(h.node_id.encode()) % every if self.stagger else 0
            n += 1
            if n >= every:
                n = 0
                out.append(h.node_id)
            count[h.node_id] = n
        return list(dict.fromkeys(out))
