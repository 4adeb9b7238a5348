"""The outbox's SQLite file (edge.outbox is its asyncio shell): the schema and its migrations,
opening, and the operations of one write transaction, applied on the writer thread.

Every method of :class:`Batch` only executes SQL on the transaction's cursor and changes copies
of the outbox's counters; the shell commits, and adopts the counters only once the commit
succeeded. The file is WAL with ``synchronous=FULL``: a committed event survives a power cut.
"""

from __future__ import annotations

import errno
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.outbox_policy import admit
from wire import Event, Priority, decode, encode
from wire.messages import BootStored

#: SQLite page cache per outbox (KiB). Access is append at the tail, read at the head of one
#: index: a small cache suffices, and the demo keeps ~1,800 outboxes open in one process.
CACHE_KIB = 256

#: Keys kept at most, newest first: bounds the table if a source keys a flood of events.
MAX_KEYS = 100_000
_RANKS = {p.rank: p for p in Priority}

#: The version-0 schema (files written before idempotency keys); :data:`_MIGRATIONS` bring a
#: file from ``PRAGMA user_version`` n-1 to n.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events(
    id INTEGER PRIMARY KEY, prio INTEGER NOT NULL, accepted REAL NOT NULL, payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS events_send_order ON events(prio DESC, id);
CREATE TABLE IF NOT EXISTS dead(
    id INTEGER PRIMARY KEY, prio INTEGER NOT NULL, accepted REAL NOT NULL, rejected REAL NOT NULL,
    reason INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_MIGRATIONS: tuple[str, ...] = (
    # 1: idempotency keys (an alarm retransmitted after an edge crash is stored once).
    """
    CREATE TABLE idem(
        id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, expires REAL NOT NULL,
        payload BLOB NOT NULL);
    CREATE INDEX idem_expires ON idem(expires);
    """,
    # 2: central's stored-acknowledgements. An event is kept after its PUBACK (``sent`` set)
    # until central says it is stored; ``boot``/``seq`` are what those acknowledgements name.
    """
    ALTER TABLE events ADD COLUMN boot TEXT;
    ALTER TABLE events ADD COLUMN seq INTEGER;
    ALTER TABLE events ADD COLUMN sent REAL;
    UPDATE events SET boot = json_extract(CAST(payload AS TEXT), '$.boot_id'),
        seq = json_extract(CAST(payload AS TEXT), '$.seq');
    CREATE INDEX events_boot_seq ON events(boot, seq);
    CREATE INDEX events_unsent ON events(prio DESC, id) WHERE sent IS NULL;
    CREATE INDEX events_sent ON events(sent) WHERE sent IS NOT NULL;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


class OutboxError(Exception):
    """The outbox could not store or change events (disk full, I/O error, closed)."""


class OutboxDiskFull(OutboxError):
    """The disk (or the file's size limit) is full: nothing of the failed batch was stored.
    Not fatal: sending stored events deletes them and frees room."""

    MESSAGE = "发件箱所在磁盘已满，事件未保存 / outbox disk full: event not stored"

    def __init__(self, detail: str = "") -> None:
        super().__init__(self.MESSAGE)
        self.detail = detail


class OutboxFull(OutboxError):
    """A non-alarm event was refused: the outbox is full of more important events."""


@dataclass(frozen=True, slots=True)
class Stored:
    """The result of :meth:`Outbox.store`: the event, and whether its key was seen before (then
    ``event`` is the first event stored under it and nothing new was stored)."""

    event: Event
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Pending:
    """An event waiting for its PUBACK: row id, priority, accept time, encoded payload."""

    id: int
    priority: Priority
    accepted: float
    payload: bytes


# -- the operations queued for the writer thread: one dataclass per kind, one method each in
# -- :class:`Batch` (the SQL of one kind stays in one place).


@dataclass(frozen=True, slots=True)
class Accept:
    """Store ``event`` (seq assigned in the batch), idempotent under ``key`` for ``ttl`` s."""

    event: Event
    key: str | None
    ttl: float


@dataclass(frozen=True, slots=True)
class Peek:
    """The next ``n`` events due, in send order; with ``alarms`` set, up to ``alarms`` alarm
    events and then up to ``n`` of the others (each lane has its own window in the sender)."""

    n: int
    exclude: tuple[int, ...]
    alarms: int | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    ids: tuple[int, ...]


#: The lanes events travel on to central (docs/protocol.md, the alarm lane): alarm-priority
#: events on ``event/alarm`` and central's alarm session, the rest on ``event``. The broker
#: delivers each lane in the order it was published.
ALARM_LANE, MAIN_LANE = True, False
_ALARM_RANK = Priority.ALARM.rank


@dataclass(frozen=True, slots=True)
class Sent:
    """The broker acknowledged these events (PUBACK): keep them, not to be sent again unless
    central's acknowledgements show them lost (:class:`Confirm`, :class:`Probe`)."""

    ids: tuple[int, ...]
    now: float


@dataclass(frozen=True, slots=True)
class Confirm:
    """Central's stored-acknowledgement, per boot: ``upto`` (the highest seq it describes) and
    the seq ranges it newly covers. Delete every event in those ranges, sent or not; then make
    due again every event of a lane, at or below its boot's ``upto`` and not covered, that was
    PUBACKed before one of that lane deleted here: the lane is delivered in order, so central
    storing a later one means the earlier one was lost on the way."""

    boots: tuple[tuple[str, int, tuple[tuple[int, int], ...]], ...]


@dataclass(frozen=True, slots=True)
class Confirmed:
    """What a :class:`Confirm` did: events deleted, lanes they were on, events made due again."""

    deleted: int
    lanes: frozenset[bool]
    resent: int


@dataclass(frozen=True, slots=True)
class Unsend:
    """Make every sent event due again (after a reconnect)."""


@dataclass(frozen=True, slots=True)
class Probe:
    """Make the newest event of a lane sent before ``before`` due again (central silent)."""

    alarm_lane: bool
    before: float


@dataclass(frozen=True, slots=True)
class SetMeta:
    key: str
    value: int


@dataclass(frozen=True, slots=True)
class Dead:
    row_id: int
    reason: int
    now: float


@dataclass(frozen=True, slots=True)
class Birth:
    pass


@dataclass(frozen=True, slots=True)
class DeadList:
    pass


Operation = (
    Accept | Peek | Ack | Sent | Confirm | Unsend | Probe | SetMeta | Dead | Birth | DeadList
)


class Batch:
    """Writer thread: the operations of one transaction on ``cur``, each changing copies of the
    outbox's counters; the caller adopts them only once the commit succeeded."""

    def __init__(
        self,
        cur: sqlite3.Cursor,
        counts: dict[Priority, int],
        meta: dict[str, int],
        seq: int,
        max_events: int,
    ) -> None:
        self.cur = cur
        self.counts = counts
        self.meta = meta
        self.seq = seq
        self.max_events = max_events
        self._pruned = False

    def apply(self, op: Operation) -> Any:
        match op:
            case Accept():
                return self.accept(op)
            case Peek(alarms=None):
                return _peek(self.cur, op.n, op.exclude)
            case Peek():
                assert op.alarms is not None
                return [
                    *_peek(self.cur, op.alarms, op.exclude, "prio = ?", _ALARM_RANK),
                    *_peek(self.cur, op.n, op.exclude, "prio < ?", _ALARM_RANK),
                ]
            case Ack():
                return self.ack(op)
            case Sent():
                return self.sent(op)
            case Confirm():
                return self.confirm(op)
            case Unsend():
                return self.unsend()
            case Probe():
                return self.probe(op)
            case SetMeta():
                self.meta[op.key] = op.value
                return None
            case Dead():
                return self.dead(op)
            case Birth():
                return self.birth()
            case DeadList():
                return self.dead_list()

    def _bump(self, name: str) -> int:
        self.meta[name] = self.meta.get(name, 0) + 1
        return self.meta[name]

    def accept(self, op: Accept) -> tuple[Stored | OutboxFull, Priority | None]:
        """(the stored event, or its refusal; the priority of an event evicted for it)."""
        cur, ev, key = self.cur, op.event, op.key
        if key is not None:
            if not self._pruned:  # once per batch: expired keys, then the count bound
                _prune_keys(cur, ev.ts)
                self._pruned = True
            row = cur.execute(
                "SELECT payload FROM idem WHERE key = ? AND expires > ?", (key, ev.ts)
            ).fetchone()
            if row is not None:
                first = decode(Event, bytes(row[0]))
                self._bump("duplicates_total")
                return Stored(first, duplicate=True), None
        decision = admit(ev.priority, self.counts, self.max_events)
        if decision.refuse:
            self._bump("evicted_total")
            return OutboxFull("outbox full of more important events"), ev.priority
        dropped = None
        if decision.evict is not None:
            victim = decision.evict
            cur.execute(
                "DELETE FROM events WHERE id = "
                "(SELECT id FROM events WHERE prio = ? ORDER BY id LIMIT 1)",
                (victim.rank,),
            )
            self.counts[victim] -= cur.rowcount
            self._bump("evicted_total")
            dropped = victim
        self.seq += 1
        final = ev.model_copy(update={"seq": self.seq})
        payload = encode(final)
        cur.execute(
            "INSERT INTO events(prio, accepted, payload, boot, seq) VALUES (?, ?, ?, ?, ?)",
            (ev.priority.rank, ev.ts, payload, final.boot_id, final.seq),
        )
        if key is not None:  # same transaction: the key exists iff the event does
            cur.execute(
                "INSERT OR REPLACE INTO idem(key, expires, payload) VALUES (?, ?, ?)",
                (key, ev.ts + op.ttl, payload),
            )
        self.counts[ev.priority] = self.counts.get(ev.priority, 0) + 1
        return Stored(final), dropped

    def ack(self, op: Ack) -> None:
        for row_id in op.ids:
            row = self.cur.execute(
                "DELETE FROM events WHERE id = ? RETURNING prio", (row_id,)
            ).fetchone()
            if row is not None:
                self.counts[_RANKS[row[0]]] -= 1

    def sent(self, op: Sent) -> None:
        self.cur.executemany(
            "UPDATE events SET sent = ? WHERE id = ?", [(op.now, i) for i in op.ids]
        )

    def confirm(self, op: Confirm) -> Confirmed:
        """One range delete per run on the (boot, seq) index, and the lost ones found on the
        sent index: the cost follows what is deleted and what is in flight, not how much of the
        boot is still waiting (an alarm ahead of a day's history makes ``upto`` high)."""
        deleted = 0
        lanes: set[bool] = set()
        last_sent: dict[bool, float] = {}
        for boot_id, _, runs in op.boots:
            for first, last in runs:
                for prio, sent in self.cur.execute(
                    "DELETE FROM events WHERE boot = ? AND seq BETWEEN ? AND ? "
                    "RETURNING prio, sent",
                    (boot_id, first, last),
                ).fetchall():
                    self.counts[_RANKS[prio]] -= 1
                    deleted += 1
                    lane = prio == _ALARM_RANK
                    lanes.add(lane)
                    if sent is not None and sent > last_sent.get(lane, 0.0):
                        last_sent[lane] = sent
        resent = 0
        for lane, sent in last_sent.items():
            for boot_id, upto, _ in op.boots:
                self.cur.execute(
                    "UPDATE events INDEXED BY events_sent SET sent = NULL "
                    "WHERE sent < ? AND boot = ? AND seq <= ? AND (prio = ?) = ?",
                    (sent, boot_id, upto, _ALARM_RANK, lane),
                )
                resent += self.cur.rowcount
        return Confirmed(deleted, frozenset(lanes), resent)

    def unsend(self) -> int:
        self.cur.execute("UPDATE events SET sent = NULL WHERE sent IS NOT NULL")
        return self.cur.rowcount

    def probe(self, op: Probe) -> int:
        self.cur.execute(
            "UPDATE events SET sent = NULL WHERE id = (SELECT id FROM events "
            "WHERE sent < ? AND (prio = ?) = ? ORDER BY sent DESC, id DESC LIMIT 1)",
            (op.before, _ALARM_RANK, op.alarm_lane),
        )
        return self.cur.rowcount

    def dead(self, op: Dead) -> None:
        row = self.cur.execute(
            "DELETE FROM events WHERE id = ? RETURNING prio, accepted, payload",
            (op.row_id,),
        ).fetchone()
        if row is not None:
            self.counts[_RANKS[row[0]]] -= 1
            self.cur.execute(
                "INSERT OR REPLACE INTO dead VALUES (?, ?, ?, ?, ?, ?)",
                (op.row_id, row[0], row[1], op.now, op.reason, row[2]),
            )
            self._bump("dead_total")

    def birth(self) -> int:
        return self._bump("birth_seq")

    def dead_list(self) -> list[tuple[int, int, bytes]]:
        rows = self.cur.execute("SELECT id, reason, payload FROM dead ORDER BY id")
        return [(r[0], r[1], bytes(r[2])) for r in rows]

    def write_meta(self, before: dict[str, int]) -> None:
        """Persist the counters that changed in this batch (same transaction)."""
        for key, value in self.meta.items():
            if value != before.get(key):
                self.cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


def stored_runs(boot: BootStored) -> list[tuple[int, int]]:
    """The seq ranges an acknowledgement covers: 1..upto without its missing ranges."""
    runs = []
    nxt = 1
    for first, last in sorted(boot.missing):
        if first > nxt:
            runs.append((nxt, min(first - 1, boot.upto)))
        nxt = max(nxt, last + 1)
    if nxt <= boot.upto:
        runs.append((nxt, boot.upto))
    return [(a, b) for a, b in runs if a <= b]


def subtract_runs(
    runs: list[tuple[int, int]], minus: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """``runs`` without ``minus`` (both sorted, disjoint, inclusive ranges)."""
    out = []
    j = 0
    for first, last in runs:
        while j < len(minus) and minus[j][1] < first:
            j += 1
        k = j
        while first <= last:
            if k >= len(minus) or minus[k][0] > last:
                out.append((first, last))
                break
            a, b = minus[k]
            if a > first:
                out.append((first, a - 1))
            first = max(first, b + 1)
            k += 1
    return out


def is_disk_full(e: BaseException) -> bool:
    """SQLITE_FULL (disk full, or ``max_page_count`` reached) or ENOSPC."""
    if isinstance(e, sqlite3.Error):
        code = getattr(e, "sqlite_errorcode", None)  # Python >= 3.11
        return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(e)
    return isinstance(e, OSError) and e.errno == errno.ENOSPC


def _peek(
    cur: sqlite3.Cursor, n: int, exclude: tuple[int, ...], where: str = "1", *args: object
) -> list[Pending]:
    if n <= 0:
        return []
    marks = ",".join("?" * len(exclude))
    skip = f"AND id NOT IN ({marks}) " if exclude else ""
    sql = (
        "SELECT id, prio, accepted, payload FROM events "
        f"WHERE sent IS NULL AND {where} {skip}ORDER BY prio DESC, id LIMIT ?"
    )
    rows = cur.execute(sql, (*args, *exclude, n))
    return [Pending(r[0], _RANKS[r[1]], r[2], bytes(r[3])) for r in rows]


def _prune_keys(cur: sqlite3.Cursor, now: float) -> None:
    cur.execute("DELETE FROM idem WHERE expires <= ?", (now,))
    cur.execute("DELETE FROM idem WHERE id <= (SELECT max(id) FROM idem) - ?", (MAX_KEYS,))


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring an outbox file to :data:`SCHEMA_VERSION`, one transaction per step (a crash
    mid-way leaves a consistent older version, migrated again on the next open)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise OutboxError(
            f"发件箱文件 {path} 的格式版本 {version} 比本程序新（{SCHEMA_VERSION}）；"
            "请升级 shilian / "
            f"outbox file {path} has schema version {version}, newer than this program's "
            f"{SCHEMA_VERSION}: upgrade shilian"
        )
    for n in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _MIGRATIONS[n - 1].split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {n}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def open_db(path: Path) -> tuple[sqlite3.Connection, dict[Priority, int], dict[str, int]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # a committed event survives a power cut
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    conn.executescript(_SCHEMA)
    try:
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    counts = {p: 0 for p in Priority}
    for prio, n in conn.execute("SELECT prio, count(*) FROM events GROUP BY prio"):
        counts[_RANKS[prio]] = n
    meta = {k: int(v) for k, v in conn.execute("SELECT key, value FROM meta")}
    return conn, counts, meta
