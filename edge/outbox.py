"""The durable outbox: every event is in SQLite before ``accept`` returns.

What survives a power cut: every accepted event (WAL, ``synchronous=FULL``: a commit is on disk
before the caller hears of it), the ``birth_seq`` counter, the eviction and dead-letter counters
and the dead letters themselves. An acknowledgement (delete after PUBACK) lost in a power cut
only means the event is sent again; central deduplicates by (node, boot_id, seq).

Idempotent accept: an event may carry a key naming it at its source (the alarm board's
``(board id, boot id, seq)``, a panel report's ``(account, receiver, line, seq)``). The key is
committed with the event (UNIQUE, in table ``idem``, kept after the event is sent, for the
key's time to live); accepting the same key again stores nothing and returns the first event.
So a source that crashed after the commit but before acknowledging its peer, and hears the
peer retransmit after the restart, stores the event once (issue 4).

All SQLite work runs on one writer thread shared by every outbox of the process (the demo runs
~1,800 agents in one process), serialised per outbox by ``run()``, which applies queued
operations in order and commits each batch in one transaction (group commit: concurrent
``accept`` calls share one fsync).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.outbox_policy import admit
from wire import Event, Priority, decode, encode

#: One writer thread for the whole process: SQLite commits are fsync-bound, more threads
#: would only contend for the same disk, and the demo must not start a thread per agent.
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-writer")

#: SQLite page cache per outbox (KiB). Access is append at the tail, read at the head of one
#: index: a small cache suffices, and the demo keeps ~1,800 outboxes open in one process.
CACHE_KIB = 256

#: Default time to live of an idempotency key: the longest a source's peer may hold an
#: unacknowledged event and retransmit it (a board keeps events in flash across an edge outage
#: of days). Sources with reused identities (SIA seq wraps at 9999) pass a shorter one.
DEFAULT_KEY_TTL_S = 30 * 86400.0
#: Keys kept at most, newest first: bounds the table if a source keys a flood of events.
MAX_KEYS = 100_000
#: Longest key accepted (keys are short ids; refuse rather than store an unbounded string).
MAX_KEY_LEN = 200

_RANKS = {p.rank: p for p in Priority}

#: Seconds between tries of those writes while the disk stays full.
DISK_FULL_RETRY_S = 1.0

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
    # 1: idempotency keys (issue 4: an alarm retransmitted after an edge crash is stored once).
    """
    CREATE TABLE idem(
        id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, expires REAL NOT NULL,
        payload BLOB NOT NULL);
    CREATE INDEX idem_expires ON idem(expires);
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
# -- :class:`_Batch` (the SQL of one kind stays in one place).


@dataclass(frozen=True, slots=True)
class _Accept:
    """Store ``event`` (seq assigned in the batch), idempotent under ``key`` for ``ttl`` s."""

    event: Event
    key: str | None
    ttl: float


@dataclass(frozen=True, slots=True)
class _Peek:
    n: int
    exclude: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Ack:
    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Dead:
    row_id: int
    reason: int
    now: float


@dataclass(frozen=True, slots=True)
class _Birth:
    pass


@dataclass(frozen=True, slots=True)
class _DeadList:
    pass


_Operation = _Accept | _Peek | _Ack | _Dead | _Birth | _DeadList
#: Writes that are retried (their callers wait) rather than failed while the disk is full:
#: deleting sent events, dead-lettering, the birth counter. Without them the sender or the
#: MQTT session would stop; new events are refused instead (their senders keep them).
_RETRY_WHEN_FULL = (_Ack, _Dead, _Birth)


@dataclass(slots=True)
class _Op:
    operation: _Operation
    fut: asyncio.Future[Any]


class _Batch:
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

    def apply(self, op: _Operation) -> Any:
        match op:
            case _Accept():
                return self.accept(op)
            case _Peek():
                return _peek(self.cur, op.n, op.exclude)
            case _Ack():
                return self.ack(op)
            case _Dead():
                return self.dead(op)
            case _Birth():
                return self.birth()
            case _DeadList():
                return self.dead_list()

    def _bump(self, name: str) -> int:
        self.meta[name] = self.meta.get(name, 0) + 1
        return self.meta[name]

    def accept(self, op: _Accept) -> tuple[Stored | OutboxFull, Priority | None]:
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
            "INSERT INTO events(prio, accepted, payload) VALUES (?, ?, ?)",
            (ev.priority.rank, ev.ts, payload),
        )
        if key is not None:  # same transaction: the key exists iff the event does
            cur.execute(
                "INSERT OR REPLACE INTO idem(key, expires, payload) VALUES (?, ?, ?)",
                (key, ev.ts + op.ttl, payload),
            )
        self.counts[ev.priority] = self.counts.get(ev.priority, 0) + 1
        return Stored(final), dropped

    def ack(self, op: _Ack) -> None:
        for row_id in op.ids:
            row = self.cur.execute(
                "DELETE FROM events WHERE id = ? RETURNING prio", (row_id,)
            ).fetchone()
            if row is not None:
                self.counts[_RANKS[row[0]]] -= 1

    def dead(self, op: _Dead) -> None:
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


class Outbox:
    """Durable, bounded, priority-ordered store of events not yet acknowledged by the broker.

    Open with :meth:`open`; operations are applied by :meth:`run` (a task the owner supervises,
    or :meth:`running` for a self-contained scope).
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        node_id: str,
        boot_id: str,
        max_events: int,
        max_batch: int,
        clock: Callable[[], float],
        counts: dict[Priority, int],
        meta: dict[str, int],
        on_drop: Callable[[Priority], None] | None,
    ) -> None:
        self._conn = conn
        self.node_id = node_id
        self.boot_id = boot_id
        self.max_events = max_events
        self.max_batch = max_batch
        self._clock = clock
        self._counts = counts
        self._meta = meta
        self._seq = 0
        self._on_drop = on_drop
        self._ops: list[_Op] = []
        self._wake = asyncio.Event()
        self._closed = False
        #: Set after a commit that stored new events (the sender waits on it).
        self.new_events = asyncio.Event()
        #: Set while no event is stored (stop waits on it to end the flush early).
        self.empty = asyncio.Event()
        if not any(counts.values()):
            self.empty.set()

    # -- opening / running -----------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        node_id: str,
        boot_id: str,
        max_events: int = 100_000,
        max_batch: int = 512,
        clock: Callable[[], float],
        on_drop: Callable[[Priority], None] | None = None,
    ) -> Outbox:
        loop = asyncio.get_running_loop()
        conn, counts, meta = await loop.run_in_executor(_EXECUTOR, _open_db, path)
        return cls(
            conn,
            node_id=node_id,
            boot_id=boot_id,
            max_events=max_events,
            max_batch=max_batch,
            clock=clock,
            counts=counts,
            meta=meta,
            on_drop=on_drop,
        )

    async def run(self) -> None:
        """Apply queued operations in order, one transaction per batch, until cancelled."""
        loop = asyncio.get_running_loop()
        batch: list[_Op] = []
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._ops:
                    batch = self._ops[: self.max_batch]
                    del self._ops[: self.max_batch]
                    results = await loop.run_in_executor(_EXECUTOR, self._apply, batch)
                    self._settle(batch, results)
                    batch = []
        finally:
            # Cancelled mid-batch: the thread may still commit it; its callers just never hear.
            self._ops[:0] = batch
            self._fail_all(OutboxError("outbox closed"))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Outbox]:
        """Run the writer for the scope of a ``with`` block, then close (tests, benches)."""
        task = asyncio.create_task(self.run(), name="outbox-writer")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.close()

    async def close(self) -> None:
        """Close the database (after ``run`` has ended). Committed events stay on disk."""
        if self._closed:
            return
        self._closed = True
        self._fail_all(OutboxError("outbox closed"))
        await asyncio.get_running_loop().run_in_executor(_EXECUTOR, self._conn.close)

    # -- public operations -----------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Events stored and not yet acknowledged."""
        return sum(self._counts.values())

    def counts(self) -> dict[Priority, int]:
        return dict(self._counts)

    @property
    def evicted_total(self) -> int:
        """Events evicted or refused because the outbox was full (persisted)."""
        return self._meta.get("evicted_total", 0)

    @property
    def dead_total(self) -> int:
        """Events the broker rejected, kept in the dead-letter table (persisted)."""
        return self._meta.get("dead_total", 0)

    @property
    def birth_seq(self) -> int:
        return self._meta.get("birth_seq", 0)

    @property
    def duplicates_total(self) -> int:
        """Keyed events accepted again and not stored a second time (persisted)."""
        return self._meta.get("duplicates_total", 0)

    async def accept(
        self,
        priority: Priority | str,
        kind: str,
        device: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Event:
        """Store one event; returns it (with its seq) only once committed to disk.

        Raises ``pydantic.ValidationError`` or ``wire.LocalWireError`` for an invalid event
        (nothing stored), :class:`OutboxFull` when refused by the bound, :class:`OutboxError`
        when the disk write failed.
        """
        return (await self.store(priority, kind, device, data)).event

    async def store(
        self,
        priority: Priority | str,
        kind: str,
        device: str | None = None,
        data: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        key_ttl_s: float = DEFAULT_KEY_TTL_S,
    ) -> Stored:
        """:meth:`accept`, idempotent when ``key`` is given: if an event was stored under
        ``key`` less than ``key_ttl_s`` ago, nothing is stored and that first event is returned
        (``duplicate`` set). Raises ``ValueError`` for a key longer than :data:`MAX_KEY_LEN`."""
        if key is not None and not 0 < len(key) <= MAX_KEY_LEN:
            raise ValueError(f"idempotency key must be 1..{MAX_KEY_LEN} characters")
        ev = Event(
            node=self.node_id,
            boot_id=self.boot_id,
            seq=1,
            ts=self._clock(),
            priority=priority,  # type: ignore[arg-type]  # validated by pydantic
            kind=kind,
            device=device,
            data=data or {},
        )
        encode(ev)  # refuse an oversize event here, where the caller can be told
        result: Stored = await self._submit(_Accept(ev, key, key_ttl_s))
        return result

    async def peek(self, n: int, exclude: Collection[int] = ()) -> list[Pending]:
        """The next ``n`` events to send in send order, skipping ``exclude`` (in flight)."""
        result: list[Pending] = await self._submit(_Peek(n, tuple(exclude)))
        return result

    async def ack(self, ids: Collection[int]) -> None:
        """Delete events after their PUBACK. Unknown ids (already evicted) are ignored."""
        await self._submit(_Ack(tuple(ids)))

    async def dead_letter(self, row_id: int, reason: int) -> None:
        """Move an event the broker rejected (PUBACK reason >= 0x80) to the dead-letter table."""
        await self._submit(_Dead(row_id, reason, self._clock()))

    async def next_birth_seq(self) -> int:
        """Increment and persist the birth sequence (before every connect attempt)."""
        result: int = await self._submit(_Birth())
        return result

    async def dead_letters(self) -> list[tuple[int, int, bytes]]:
        """``(id, reason, payload)`` of every dead letter, oldest first."""
        result: list[tuple[int, int, bytes]] = await self._submit(_DeadList())
        return result

    # -- internals -------------------------------------------------------------------------

    def _submit(self, operation: _Operation) -> asyncio.Future[Any]:
        if self._closed:
            raise OutboxError("outbox closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ops.append(_Op(operation, fut))
        self._wake.set()
        return fut

    def _requeue(self, ops: list[_Op]) -> None:
        if self._closed:
            for op in ops:
                if not op.fut.done():
                    op.fut.set_exception(OutboxError("outbox closed"))
            return
        self._ops[:0] = ops  # before later operations: an ack still precedes what follows it
        self._wake.set()

    def _fail_all(self, exc: Exception) -> None:
        ops, self._ops = self._ops, []
        for op in ops:
            if not op.fut.done():
                op.fut.set_exception(exc)

    def _settle(self, batch: list[_Op], results: list[Any]) -> None:
        stored = False
        retry: list[_Op] = []
        for op, res in zip(batch, results, strict=True):
            if isinstance(op.operation, _RETRY_WHEN_FULL) and isinstance(res, OutboxDiskFull):
                retry.append(op)  # the caller waits: nothing sent is lost, the sender pauses
                continue
            if isinstance(op.operation, _Accept) and isinstance(res, tuple):  # (result, dropped)
                res, dropped = res
                stored = stored or (isinstance(res, Stored) and not res.duplicate)
                if self._on_drop is not None and dropped is not None:
                    self._on_drop(dropped)
            if op.fut.done():
                continue  # the caller was cancelled; the result stands on disk regardless
            if isinstance(res, BaseException):
                op.fut.set_exception(res)
            else:
                op.fut.set_result(res)
        if retry:
            asyncio.get_running_loop().call_later(DISK_FULL_RETRY_S, self._requeue, retry)
        if stored:
            self.new_events.set()
        if self.depth == 0:
            self.empty.set()
        else:
            self.empty.clear()

    def _apply(self, batch: list[_Op]) -> list[Any]:
        """Writer thread: apply ``batch`` in one transaction. In-memory state changes only
        once the commit succeeded."""
        results: list[Any] = []
        cur = self._conn.cursor()
        txn = _Batch(cur, dict(self._counts), dict(self._meta), self._seq, self.max_events)
        try:
            cur.execute("BEGIN IMMEDIATE")
            for op in batch:
                results.append(txn.apply(op.operation))
            txn.write_meta(self._meta)
            cur.execute("COMMIT")
        except (sqlite3.Error, OSError) as e:
            with contextlib.suppress(sqlite3.Error):
                cur.execute("ROLLBACK")
            if not _is_disk_full(e):
                err = OutboxError(f"outbox write failed: {e}")
                return [err for _ in batch]
            full = OutboxDiskFull(str(e))
            rest = [op for op in batch if not isinstance(op.operation, _Accept)]
            if rest and len(rest) < len(batch):
                # New events filled the disk; acks and reads need no new room (acks free it):
                # apply them alone so the sender keeps sending.
                done = iter(self._apply(rest))
                return [full if isinstance(op.operation, _Accept) else next(done) for op in batch]
            return [full for _ in batch]
        finally:
            cur.close()
        self._counts, self._meta, self._seq = txn.counts, txn.meta, txn.seq
        return results


def _is_disk_full(e: BaseException) -> bool:
    """SQLITE_FULL (disk full, or ``max_page_count`` reached) or ENOSPC."""
    if isinstance(e, sqlite3.Error):
        code = getattr(e, "sqlite_errorcode", None)  # Python >= 3.11
        return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(e)
    return isinstance(e, OSError) and e.errno == errno.ENOSPC


def _peek(cur: sqlite3.Cursor, n: int, exclude: tuple[int, ...]) -> list[Pending]:
    if exclude:
        marks = ",".join("?" * len(exclude))
        sql = (
            f"SELECT id, prio, accepted, payload FROM events WHERE id NOT IN ({marks}) "
            "ORDER BY prio DESC, id LIMIT ?"
        )
        rows = cur.execute(sql, (*exclude, n))
    else:
        rows = cur.execute(
            "SELECT id, prio, accepted, payload FROM events ORDER BY prio DESC, id LIMIT ?", (n,)
        )
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


def _open_db(path: Path) -> tuple[sqlite3.Connection, dict[Priority, int], dict[str, int]]:
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
