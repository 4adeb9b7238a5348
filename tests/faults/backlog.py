"""A day of buffered history at many nodes, written straight into their outbox files with the
edge's own outbox code (``edge.outbox.Outbox``: same schema, same send order, same payloads as an
agent that was offline that long), and a reader that follows central's events table while the
backlog drains. Used by tests/faults/test_backlog_drain.py and bench/faults/backlog.py.

The history is what a village's box buffers while its uplink is gone: device health changes
(camera, terminal) and information events, timestamped over the hours they cover, at
``per_hour`` events an hour; alarms are not part of it (an alarm made while the uplink is down is
in the backlog too, but the measurement is of alarms made *during* the drain).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from edge.outbox import Outbox
from registry import Registry

#: The registry scope of tests.processes.Central: nodes must be villages central knows.
CITY = "4501"
#: One event every 30 s at every node for the whole outage: a day is 2,880 events a node. A
#: village box reports device health changes (cameras, the conference terminal, the alarm
#: board) and information events; twice a minute is a busy village's day, not a quiet one.
DEFAULT_PER_HOUR = 120
#: Accepts in flight while writing one outbox: several of the outbox's group-commit batches,
#: so the writing is bound by the writer thread, not by one await at a time.
FILL_CHUNK = 2_048
#: Kind of the alarms made during the drain (the reader recognises them by it).
PROBE_KIND = "probe_alarm"
#: How often the reader looks for new rows; each latency includes up to this much.
WATCH_INTERVAL_S = 0.01


def village_nodes(n: int) -> list[str]:
    """``n`` node ids of villages of :data:`CITY` (one box per village)."""
    villages = [u.code for u in Registry.from_package(CITY).villages()][:n]
    assert len(villages) == n, f"only {len(villages)} villages in {CITY}"
    return [f"{v}-a" for v in villages]


async def fill_outbox(
    path: Path, node_id: str, hours: float, per_hour: int, end: float | None = None
) -> int:
    """Write ``hours`` of history ending at ``end`` (default now) into the outbox at ``path``,
    as the node's previous run (its own boot id) would have; return the number of events."""
    end = time.time() if end is None else end
    n = int(hours * per_hour)
    step = 3600.0 / per_hour
    # The outbox stamps each event with its clock, read once per accept in the order they run:
    # the i-th event is stamped with the i-th instant of the outage.
    times = (end - (n - i) * step for i in range(n))
    outbox = await Outbox.open(
        path, node_id=node_id, boot_id=uuid.uuid4().hex, clock=lambda: next(times)
    )
    async with outbox.running():
        for start in range(0, n, FILL_CHUNK):
            accepts = []
            for i in range(start, min(n, start + FILL_CHUNK)):
                if i % 4 == 0:
                    accepts.append(outbox.accept("device", "camera_health", "cam-1", {"i": i}))
                else:
                    accepts.append(outbox.accept("info", "patrol", None, {"i": i}))
            await asyncio.gather(*accepts)
    return n


async def fill_outboxes(
    paths: dict[str, Path], hours: float, per_hour: int = DEFAULT_PER_HOUR
) -> int:
    """:func:`fill_outbox` for every ``node_id -> path``; the total number of events."""
    end = time.time()
    counts = await asyncio.gather(
        *(fill_outbox(p, node, hours, per_hour, end) for node, p in paths.items())
    )
    return sum(counts)


@dataclass
class Probe:
    """An alarm made during the drain, as central stored it."""

    node: str
    row_id: int
    seq: int
    emitted: float  # the event's ts: the edge's clock when it accepted the alarm
    received: float  # central's clock when its ingest took the alarm (before the commit)
    seen: float  # the reader's wall clock when the row was visible at central


@dataclass(eq=False)
class Drain(threading.Thread):
    """Follows central's events table (read-only, every :data:`WATCH_INTERVAL_S`): counts the
    history rows, records the alarms and when each became visible."""

    db: Path
    history: dict[str, int] = field(default_factory=dict)  # node -> history rows seen
    history_total: int = 0
    first_history: float | None = None
    last_history: float | None = None
    last_row: dict[str, int] = field(default_factory=dict)  # node -> id of its last history row
    probes: list[Probe] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        while not self.db.exists() and not self.stop.is_set():
            time.sleep(WATCH_INTERVAL_S)
        conn = sqlite3.connect(f"{self.db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        last = 0
        try:
            while not self.stop.is_set():
                try:
                    rows = conn.execute(
                        "SELECT id, node_id, kind, ts, recv_ts, seq FROM events"
                        " WHERE id > ? ORDER BY id",
                        (last,),
                    ).fetchall()
                except sqlite3.OperationalError:  # the table is not created yet
                    rows = []
                now = time.time()
                for row_id, node, kind, ts, recv, seq in rows:
                    if kind == PROBE_KIND:
                        probe = Probe(node, row_id, int(seq), float(ts), float(recv), now)
                        self.probes.append(probe)
                        continue
                    self.history[node] = self.history.get(node, 0) + 1
                    self.history_total += 1
                    self.last_row[node] = row_id
                    self.first_history = self.first_history or now
                    self.last_history = now
                if rows:
                    last = rows[-1][0]
                time.sleep(WATCH_INTERVAL_S)
        finally:
            conn.close()

    def wait(self, cond: object, timeout: float, what: str) -> None:
        assert callable(cond)
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout} s: {what}")
            time.sleep(0.05)


def stored_seqs(db: Path, kind: str | None = None) -> dict[tuple[str, str], list[int]]:
    """``(node, boot_id) -> seqs`` of the events central stored, in storage order: the alarms
    made during the drain if ``kind`` is :data:`PROBE_KIND`, else the history."""
    out: dict[tuple[str, str], list[int]] = {}
    op = "=" if kind == PROBE_KIND else "!="
    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5) as c:
        rows = c.execute(
            f"SELECT node_id, boot_id, seq FROM events WHERE kind {op} ? ORDER BY id",
            (PROBE_KIND,),
        )
        for node, boot, seq in rows:
            out.setdefault((node, boot), []).append(int(seq))
    return out
