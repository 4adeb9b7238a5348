"""Central's storage behind the small :class:`Store` protocol: SQLite (WAL), the embedded default,
here; PostgreSQL in :mod:`central.store_pg`. Both run the same SQL (portable: upserts with
``ON CONFLICT``, no date functions) on the tables :mod:`central.schema` defines and
:mod:`central.migrate` creates.

Durability: :meth:`SqlStore.apply` commits a whole batch in one transaction (SQLite with
``synchronous=FULL``; PostgreSQL: :mod:`central.store_pg`); the link acknowledges a batch's
messages to the broker (PUBACK) only after it returns, so whatever central acknowledged survives
a crash or a power cut, and whatever it did not is redelivered by the broker (central's MQTT
session is persistent) and deduplicated.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from central import migrate
from central.rows import DeviceRow as DeviceRow
from central.rows import EventRow as EventRow
from central.rows import GapsRow as GapsRow
from central.rows import HealthRow as HealthRow
from central.rows import IntervalRow as IntervalRow
from central.rows import NodeRow as NodeRow
from central.rows import Write as Write
from central.write_batch import FoldedBatch, HealthPrune, fold

#: Recent health reports kept per node (about an hour at the default 30 s interval); older rows
#: are pruned in the transaction of a batch that adds new ones.
HEALTH_KEEP_PER_NODE = 120

#: A node's health history is pruned at every this many of its reports, not at each: the prune
#: is an index walk and a delete per node, the report an append. A node holds at most
#: HEALTH_KEEP_PER_NODE + HEALTH_PRUNE_EVERY - 1 rows (``HealthPrune``: restarts add up to
#: HEALTH_PRUNE_EVERY - 1 more until the node's next prune), i.e. at most 15 minutes more.
HEALTH_PRUNE_EVERY = 30

#: How long a writer waits for a reader's lock before failing (readers are short API queries).
BUSY_TIMEOUT_MS = 5000


@dataclass(slots=True)
class SeqState:
    """Dedupe state of one (node, boot): highest seq stored and the open gaps below it."""

    high: int = 0
    gaps: list[tuple[int, int, float]] = field(default_factory=list)

    def accept(self, seq: int, now: float) -> tuple[bool, bool]:
        """(new, gaps_changed). A seq at or below ``high`` outside every gap is a duplicate."""
        if seq > self.high:
            opened = seq > self.high + 1
            if opened:
                self.gaps.append((self.high + 1, seq - 1, now))
            self.high = seq
            return True, opened
        for i, (first, last, detected) in enumerate(self.gaps):
            if first <= seq <= last:
                rest = [(a, b, detected) for a, b in ((first, seq - 1), (seq + 1, last)) if a <= b]
                self.gaps[i : i + 1] = rest
                return True, True
        return False, False

    def bound_gaps(self, limit: int) -> None:
        """Keep at most ``limit`` gaps by merging the closest neighbours (gaps are in seq order).
        A merged gap also covers seqs already stored between its parts: a repeat of one of
        those is taken as new here and dropped by the events table's unique key. Forgetting a
        gap instead would turn its late events into duplicates and lose them."""
        gaps = self.gaps
        while len(gaps) > limit:
            i = min(range(len(gaps) - 1), key=lambda k: gaps[k + 1][0] - gaps[k][1])
            (first, _, t1), (_, last, t2) = gaps[i], gaps[i + 1]
            gaps[i : i + 2] = [(first, last, min(t1, t2))]


@dataclass(slots=True)
class Snapshot:
    """What ingest needs at start: every node, and dedupe state per (node, boot)."""

    nodes: dict[str, NodeRow]
    seqs: dict[tuple[str, str], SeqState]


class Store(Protocol):
    def load(self) -> Snapshot: ...
    def apply(self, writes: Sequence[Write]) -> None: ...
    def stage(self, writes: Sequence[Write]) -> None: ...
    def commit(self) -> None: ...
    def close(self) -> None: ...


def connect(path: Path) -> sqlite3.Connection:
    """A connection with central's pragmas (WAL, durable commits) to the database at ``path``,
    brought to the newest schema first (central.migrate)."""
    migrate.ensure(path)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class SqlStore:
    """The store's logic over a DB-API connection in autocommit mode, which the subclasses open:
    transactions are explicit ``BEGIN``/``COMMIT``. Not thread-safe: one writer at a time (the
    service serialises). SQL is written with ``?`` placeholders; :meth:`_sql` adapts them."""

    def __init__(self) -> None:
        self._health_prune = HealthPrune(HEALTH_PRUNE_EVERY)

    def close(self) -> None:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql

    def _exec(self, sql: str, params: Sequence[object] = ()) -> Iterable[tuple[Any, ...]]:
        raise NotImplementedError

    def _many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        raise NotImplementedError

    def load(self) -> Snapshot:
        nodes = {
            r[0]: NodeRow(*r)
            for r in self._exec(
                "SELECT node_id, village, county, state, state_since, state_reason, boot_id,"
                " birth_seq, health_interval_s, sw_version, first_seen, last_seen FROM nodes"
            )
        }
        seqs: dict[tuple[str, str], SeqState] = {}
        for node_id, boot_id, high in self._exec(
            "SELECT node_id, boot_id, MAX(seq) FROM events GROUP BY node_id, boot_id"
        ):
            seqs[(node_id, boot_id)] = SeqState(high)
        for node_id, boot_id, first, last, detected in self._exec(
            "SELECT node_id, boot_id, first_seq, last_seq, detected FROM gaps ORDER BY first_seq"
        ):
            seqs.setdefault((node_id, boot_id), SeqState()).gaps.append((first, last, detected))
        return Snapshot(nodes, seqs)

    def apply(self, writes: Sequence[Write]) -> None:
        """Apply ``writes`` in order, in one transaction."""
        if writes:
            self.stage(writes)
            self.commit()

    def commit(self) -> None:
        """Commit what :meth:`stage` wrote. May run on another thread (the service does: the
        fsync then overlaps with parsing the next messages); nothing else may use the
        connection meanwhile."""
        try:
            self._exec("COMMIT")
        except BaseException:
            self._exec("ROLLBACK")
            raise

    def stage(self, writes: Sequence[Write]) -> None:
        """Write ``writes`` inside a new transaction, left open for :meth:`commit`; rolled back
        if any write fails. The database ends as if they were applied one by one in order
        (:func:`central.write_batch.fold`); the health history of the nodes whose prune is due
        (:class:`central.write_batch.HealthPrune`) is cut to :data:`HEALTH_KEEP_PER_NODE`."""
        batch = fold(writes)
        prune = self._health_prune.due(batch.health)
        self._exec("BEGIN")
        try:
            self._write(batch, prune)
        except BaseException:
            self._exec("ROLLBACK")
            raise

    def _write(self, batch: FoldedBatch, prune: Sequence[str]) -> None:
        """Write one folded batch in the open transaction: a statement per row, each kind in
        one ``executemany`` where it can (SQLite binds a row in microseconds; there is no round
        trip to save)."""
        sql = self._sql
        if batch.nodes:
            self._many(sql(_UPSERT_NODE), [_node_params(n) for n in batch.nodes])
        for w in batch.intervals:
            # "end" is a reserved word in PostgreSQL
            self._exec(
                sql('UPDATE state_history SET "end"=? WHERE node_id=? AND "end" IS NULL'),
                (w.start, w.node_id),
            )
            self._exec(
                sql("INSERT INTO state_history(node_id, state, start, reason) VALUES (?,?,?,?)"),
                (w.node_id, w.state, w.start, w.reason),
            )
        if batch.health:
            self._many(
                sql("INSERT INTO health(node_id, ts, recv_ts, body) VALUES (?,?,?,?)"),
                [(h.node_id, h.ts, h.recv_ts, h.body) for h in batch.health],
            )
        for g in batch.gaps:
            self._exec(
                sql("DELETE FROM gaps WHERE node_id=? AND boot_id=?"), (g.node_id, g.boot_id)
            )
            if g.gaps:
                self._many(
                    sql(
                        "INSERT INTO gaps(node_id, boot_id, first_seq, last_seq, detected)"
                        " VALUES (?,?,?,?,?)"
                    ),
                    [(g.node_id, g.boot_id, a, b, d) for a, b, d in g.gaps],
                )
        if batch.devices:
            self._many(sql(_UPSERT_DEVICE), [_device_params(d) for d in batch.devices])
        if batch.events:
            # The in-memory dedupe decides; the UNIQUE key is the backstop (and only the
            # key: OR IGNORE would also swallow NOT NULL violations).
            self._many(sql(_INSERT_EVENT), batch.events)
        if prune:
            self._many(sql(_PRUNE_HEALTH), [(n, n, HEALTH_KEEP_PER_NODE) for n in prune])


class SqliteStore(SqlStore):
    """The embedded default: one SQLite file, brought to the newest schema when opened."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.conn = connect(path)

    def close(self) -> None:
        self.conn.close()

    def _exec(self, sql: str, params: Sequence[object] = ()) -> Iterable[tuple[Any, ...]]:
        return self.conn.execute(sql, params)

    def _many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self.conn.executemany(sql, rows)


_UPSERT_NODE = """
INSERT INTO nodes(node_id, village, county, state, state_since, state_reason, boot_id, birth_seq,
  health_interval_s, sw_version, first_seen, last_seen, last_health)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT(node_id) DO UPDATE SET state=excluded.state, state_since=excluded.state_since,
  state_reason=excluded.state_reason, boot_id=excluded.boot_id, birth_seq=excluded.birth_seq,
  health_interval_s=excluded.health_interval_s, sw_version=excluded.sw_version,
  last_seen=excluded.last_seen, last_health=COALESCE(excluded.last_health, nodes.last_health)
"""

_UPSERT_DEVICE = """
INSERT INTO devices(node_id, device_id, kind, state, name, ts, detail, removed)
VALUES (?,?,?,?,?,?,?,?)
ON CONFLICT(node_id, device_id) DO UPDATE SET
  kind=CASE WHEN excluded.removed <> 0 THEN devices.kind ELSE excluded.kind END,
  state=CASE WHEN excluded.removed <> 0 THEN devices.state ELSE excluded.state END,
  name=CASE WHEN excluded.removed <> 0 THEN devices.name ELSE excluded.name END,
  detail=CASE WHEN excluded.removed <> 0 THEN devices.detail ELSE excluded.detail END,
  ts=excluded.ts, removed=excluded.removed
"""

_INSERT_EVENT = """
INSERT INTO events(node_id, village, boot_id, seq, ts, recv_ts, priority, kind, device, data)
VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(node_id, boot_id, seq) DO NOTHING
"""

_PRUNE_HEALTH = """
DELETE FROM health WHERE node_id=? AND id <= (
  SELECT id FROM health WHERE node_id=? ORDER BY id DESC LIMIT 1 OFFSET ?)
"""


def _node_params(n: NodeRow) -> tuple[object, ...]:
    return (
        n.node_id,
        n.village,
        n.county,
        n.state,
        n.state_since,
        n.state_reason,
        n.boot_id,
        n.birth_seq,
        n.health_interval_s,
        n.sw_version,
        n.first_seen,
        n.last_seen,
        n.last_health,
    )


def _device_params(d: DeviceRow) -> tuple[object, ...]:
    return (d.node_id, d.device_id, d.kind, d.state, d.name, d.ts, d.detail, d.removed)
