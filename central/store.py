"""Central's storage: SQLite (WAL) behind the small :class:`Store` protocol, so that PostgreSQL
can follow.

Durability: :meth:`SqliteStore.apply` commits a whole batch in one transaction with
``synchronous=FULL``; the link acknowledges a batch's messages to the broker (PUBACK) only after
it returns, so whatever central acknowledged survives a crash or a power cut, and whatever it did
not is redelivered by the broker (central's MQTT session is persistent) and deduplicated.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

#: Recent health reports kept per node (about an hour at the default 30 s interval); older rows
#: are pruned in the same transaction that adds new ones.
HEALTH_KEEP_PER_NODE = 120

#: How long a writer waits for a reader's lock before failing (readers are short API queries).
BUSY_TIMEOUT_MS = 5000

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes(
  node_id TEXT PRIMARY KEY, village TEXT NOT NULL, county TEXT NOT NULL,
  state TEXT NOT NULL, state_since REAL NOT NULL, state_reason TEXT NOT NULL,
  boot_id TEXT, birth_seq INTEGER NOT NULL DEFAULT 0,
  health_interval_s REAL NOT NULL, sw_version TEXT NOT NULL DEFAULT '',
  first_seen REAL NOT NULL, last_seen REAL NOT NULL,
  last_health TEXT);
CREATE INDEX IF NOT EXISTS nodes_village ON nodes(village);
CREATE INDEX IF NOT EXISTS nodes_county ON nodes(county);
CREATE TABLE IF NOT EXISTS state_history(id INTEGER PRIMARY KEY, node_id TEXT NOT NULL,
  state TEXT NOT NULL, start REAL NOT NULL, end REAL, reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS state_history_node ON state_history(node_id, start);
CREATE INDEX IF NOT EXISTS state_history_open ON state_history(node_id) WHERE end IS NULL;
CREATE TABLE IF NOT EXISTS health(id INTEGER PRIMARY KEY, node_id TEXT NOT NULL, ts REAL NOT NULL,
  recv_ts REAL NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS health_node ON health(node_id, id);
CREATE TABLE IF NOT EXISTS devices(node_id TEXT NOT NULL, device_id TEXT NOT NULL,
  kind TEXT NOT NULL, state TEXT NOT NULL, name TEXT, ts REAL NOT NULL,
  detail TEXT NOT NULL DEFAULT '{}', removed INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(node_id, device_id));
CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY, node_id TEXT NOT NULL,
  village TEXT NOT NULL, boot_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
  recv_ts REAL NOT NULL, priority TEXT NOT NULL, kind TEXT NOT NULL, device TEXT,
  data TEXT NOT NULL, UNIQUE(node_id, boot_id, seq));
CREATE INDEX IF NOT EXISTS events_node_ts ON events(node_id, ts);
CREATE INDEX IF NOT EXISTS events_village_ts ON events(village, ts);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE TABLE IF NOT EXISTS gaps(node_id TEXT NOT NULL, boot_id TEXT NOT NULL,
  first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, detected REAL NOT NULL);
CREATE INDEX IF NOT EXISTS gaps_node ON gaps(node_id, boot_id);
"""


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
    """A connection with central's pragmas (WAL, durable commits)."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class SqliteStore:
    """The default store. Not thread-safe: one writer at a time (the service serialises)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path)
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def load(self) -> Snapshot:
        c = self.conn
        nodes = {
            r[0]: NodeRow(*r)
            for r in c.execute(
                "SELECT node_id, village, county, state, state_since, state_reason, boot_id,"
                " birth_seq, health_interval_s, sw_version, first_seen, last_seen FROM nodes"
            )
        }
        seqs: dict[tuple[str, str], SeqState] = {}
        for node_id, boot_id, high in c.execute(
            "SELECT node_id, boot_id, MAX(seq) FROM events GROUP BY node_id, boot_id"
        ):
            seqs[(node_id, boot_id)] = SeqState(high)
        for node_id, boot_id, first, last, detected in c.execute(
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
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def stage(self, writes: Sequence[Write]) -> None:
        """Write ``writes`` in order inside a new transaction, left open for :meth:`commit`;
        rolled back if any write fails."""
        c = self.conn
        events: list[EventRow] = []
        health_nodes: set[str] = set()
        c.execute("BEGIN")
        try:
            for w in writes:
                if isinstance(w, EventRow):
                    events.append(w)
                elif isinstance(w, NodeRow):
                    c.execute(_UPSERT_NODE, _node_params(w))
                elif isinstance(w, HealthRow):
                    c.execute(
                        "INSERT INTO health(node_id, ts, recv_ts, body) VALUES (?,?,?,?)",
                        (w.node_id, w.ts, w.recv_ts, w.body),
                    )
                    health_nodes.add(w.node_id)
                elif isinstance(w, IntervalRow):
                    c.execute(
                        "UPDATE state_history SET end=? WHERE node_id=? AND end IS NULL",
                        (w.start, w.node_id),
                    )
                    c.execute(
                        "INSERT INTO state_history(node_id, state, start, reason) VALUES (?,?,?,?)",
                        (w.node_id, w.state, w.start, w.reason),
                    )
                elif isinstance(w, GapsRow):
                    c.execute(
                        "DELETE FROM gaps WHERE node_id=? AND boot_id=?", (w.node_id, w.boot_id)
                    )
                    c.executemany(
                        "INSERT INTO gaps VALUES (?,?,?,?,?)",
                        [(w.node_id, w.boot_id, a, b, d) for a, b, d in w.gaps],
                    )
                else:
                    c.execute(_UPSERT_DEVICE, _device_params(w))
            if events:
                # The in-memory dedupe decides; the UNIQUE key is the backstop (and only the
                # key: OR IGNORE would also swallow NOT NULL violations).
                c.executemany(
                    "INSERT INTO events(node_id, village, boot_id, seq, ts, recv_ts,"
                    " priority, kind, device, data) VALUES (?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT(node_id, boot_id, seq) DO NOTHING",
                    events,
                )
            for node_id in health_nodes:
                c.execute(_PRUNE_HEALTH, (node_id, node_id, HEALTH_KEEP_PER_NODE))
        except BaseException:
            c.execute("ROLLBACK")
            raise


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
  kind=CASE WHEN excluded.removed THEN devices.kind ELSE excluded.kind END,
  state=CASE WHEN excluded.removed THEN devices.state ELSE excluded.state END,
  name=CASE WHEN excluded.removed THEN devices.name ELSE excluded.name END,
  detail=CASE WHEN excluded.removed THEN devices.detail ELSE excluded.detail END,
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
