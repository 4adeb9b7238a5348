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
from typing import Any, NamedTuple, Protocol

from central import migrate

#: Recent health reports kept per node (about an hour at the default 30 s interval); older rows
#: are pruned in the same transaction that adds new ones.
HEALTH_KEEP_PER_NODE = 120

#: How long a writer waits for a reader's lock before failing (readers are short API queries).
BUSY_TIMEOUT_MS = 5000


@dataclass(slots=True)
class NodeRow:
    """A row of ``nodes``; the ingest core keeps one per node, mutable, in memory."""

    node_id: str
    village: str
    county: str
    state: str
    state_since: float
    state_reason: str
    boot_id: str | None
    birth_seq: int
    health_interval_s: float
    sw_version: str
    first_seen: float
    last_seen: float
    last_health: str | None = None  # as a write: None keeps the stored value


@dataclass(frozen=True, slots=True)
class IntervalRow:
    """Close the node's open state interval at ``start`` and open a new one."""

    node_id: str
    state: str
    start: float
    reason: str


@dataclass(frozen=True, slots=True)
class HealthRow:
    node_id: str
    ts: float
    recv_ts: float
    body: str


class EventRow(NamedTuple):
    """A tuple so that a batch goes to ``executemany`` as it is (the hot path)."""

    node_id: str
    village: str
    boot_id: str
    seq: int
    ts: float
    recv_ts: float
    priority: str
    kind: str
    device: str | None
    data: str


@dataclass(frozen=True, slots=True)
class GapsRow:
    """The complete set of open gaps of one (node, boot): (first_seq, last_seq, detected)."""

    node_id: str
    boot_id: str
    gaps: tuple[tuple[int, int, float], ...]


@dataclass(frozen=True, slots=True)
class DeviceRow:
    node_id: str
    device_id: str
    kind: str
    state: str
    name: str | None
    ts: float
    detail: str
    removed: int


Write = NodeRow | IntervalRow | HealthRow | EventRow | GapsRow | DeviceRow


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
        """Write ``writes`` in order inside a new transaction, left open for :meth:`commit`;
        rolled back if any write fails."""
        sql = self._sql
        events: list[EventRow] = []
        health_nodes: set[str] = set()
        self._exec("BEGIN")
        try:
            for w in writes:
                if isinstance(w, EventRow):
                    events.append(w)
                elif isinstance(w, NodeRow):
                    self._exec(sql(_UPSERT_NODE), _node_params(w))
                elif isinstance(w, HealthRow):
                    self._exec(
                        sql("INSERT INTO health(node_id, ts, recv_ts, body) VALUES (?,?,?,?)"),
                        (w.node_id, w.ts, w.recv_ts, w.body),
                    )
                    health_nodes.add(w.node_id)
                elif isinstance(w, IntervalRow):
                    # "end" is a reserved word in PostgreSQL
                    self._exec(
                        sql('UPDATE state_history SET "end"=? WHERE node_id=? AND "end" IS NULL'),
                        (w.start, w.node_id),
                    )
                    self._exec(
                        sql(
                            "INSERT INTO state_history(node_id, state, start, reason)"
                            " VALUES (?,?,?,?)"
                        ),
                        (w.node_id, w.state, w.start, w.reason),
                    )
                elif isinstance(w, GapsRow):
                    self._exec(
                        sql("DELETE FROM gaps WHERE node_id=? AND boot_id=?"),
                        (w.node_id, w.boot_id),
                    )
                    if w.gaps:
                        self._many(
                            sql(
                                "INSERT INTO gaps(node_id, boot_id, first_seq, last_seq,"
                                " detected) VALUES (?,?,?,?,?)"
                            ),
                            [(w.node_id, w.boot_id, a, b, d) for a, b, d in w.gaps],
                        )
                else:
                    self._exec(sql(_UPSERT_DEVICE), _device_params(w))
            if events:
                # The in-memory dedupe decides; the UNIQUE key is the backstop (and only the
                # key: OR IGNORE would also swallow NOT NULL violations).
                self._many(
                    sql(
                        "INSERT INTO events(node_id, village, boot_id, seq, ts, recv_ts,"
                        " priority, kind, device, data) VALUES (?,?,?,?,?,?,?,?,?,?)"
                        " ON CONFLICT(node_id, boot_id, seq) DO NOTHING"
                    ),
                    events,
                )
            for node_id in health_nodes:
                self._exec(sql(_PRUNE_HEALTH), (node_id, node_id, HEALTH_KEEP_PER_NODE))
        except BaseException:
            self._exec("ROLLBACK")
            raise


class SqliteStore(SqlStore):
    """The embedded default: one SQLite file, brought to the newest schema when opened."""

    def __init__(self, path: Path) -> None:
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
