"""The durable outbox: every event is in SQLite before ``accept`` returns.

What survives a power cut: every accepted event (WAL, ``synchronous=FULL``: a commit is on disk
before the caller hears of it), the ``birth_seq`` counter, the eviction and dead-letter counters,
the dead letters themselves, and whether central acknowledges stored events.

When an event is deleted (docs/protocol.md, stored-acknowledgement): while central says it
acknowledges stored events (its retained capabilities, remembered here), an event is only marked
sent on its PUBACK and deleted once central's acknowledgement covers it, so a broker that dies
after its PUBACK and before it saved or delivered the event loses nothing; sent events are sent
again after a reconnect or when the acknowledgement is late. With an older central (no
capabilities seen) an event is deleted on its PUBACK, as before. Any deletion lost in a power
cut only means the event is sent again; central deduplicates by (node, boot_id, seq).

Idempotent accept: an event may carry a key naming it at its source (the alarm board's
``(board id, boot id, seq)``, a panel report's ``(account, receiver, line, seq)``). The key is
committed with the event (UNIQUE, in table ``idem``, kept after the event is sent, for the
key's time to live); accepting the same key again stores nothing and returns the first event.
So a source that crashed after the commit but before acknowledging its peer, and hears the
peer retransmit after the restart, stores the event once.

All SQLite work runs on one writer thread shared by every outbox of the process (the demo runs
~1,800 agents in one process; :mod:`edge.outbox_writer`), serialised per outbox by ``run()``,
which applies queued operations in order and commits each batch in one transaction (group
commit: concurrent ``accept`` calls share one fsync), except that queued alarm accepts go first,
in a transaction of their own (an alarm never waits behind queued snapshot pictures). On the
shared thread such a transaction, and the reads of the next events to send while an alarm is
stored, go ahead of the other outboxes' queued work. The SQL (schema, migrations, each
operation) is :mod:`edge.outbox_db`; this module queues, batches and settles.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.outbox_db import (
    SCHEMA_VERSION,
    Accept,
    Ack,
    Batch,
    Birth,
    Confirm,
    Confirmed,
    Dead,
    DeadList,
    Operation,
    OutboxDiskFull,
    OutboxError,
    OutboxFull,
    Peek,
    Pending,
    Probe,
    Sent,
    SetMeta,
    Stored,
    Unsend,
    is_disk_full,
    open_db,
    stored_runs,
    subtract_runs,
)
from edge.outbox_writer import UrgentFirstExecutor
from wire import Event, Priority, encode
from wire.messages import BootStored

__all__ = [
    "DEFAULT_KEY_TTL_S",
    "DISK_FULL_RETRY_S",
    "MAX_KEY_LEN",
    "SCHEMA_VERSION",
    "Outbox",
    "OutboxDiskFull",
    "OutboxError",
    "OutboxFull",
    "Pending",
    "Stored",
]

#: One writer thread for the whole process (edge.outbox_writer).
_EXECUTOR = UrgentFirstExecutor("outbox-writer")

#: Default time to live of an idempotency key: the longest a source's peer may hold an
#: unacknowledged event and retransmit it (a board keeps events in flash across an edge outage
#: of days). Sources with reused identities (SIA seq wraps at 9999) pass a shorter one.
DEFAULT_KEY_TTL_S = 30 * 86400.0
#: Longest key accepted (keys are short ids; refuse rather than store an unbounded string).
MAX_KEY_LEN = 200


#: Writes that are retried (their callers wait) rather than failed while the disk is full:
#: deleting or marking sent events, dead-lettering, the birth counter. Without them the sender
#: or the MQTT session would stop; new events are refused instead (their senders keep them).
_RETRY_WHEN_FULL = (Ack, Sent, Confirm, Unsend, Probe, SetMeta, Dead, Birth)
#: Meta key: 1 while central's last capabilities said it acknowledges stored events.
CENTRAL_ACKS = "central_acks"
#: Boots whose last acknowledgement is remembered (a node has one boot with events waiting,
#: a few across restarts); a boot forgotten is only applied in full again.
ACKED_BOOTS_KEPT = 16
#: Seconds between tries of those writes while the disk stays full.
DISK_FULL_RETRY_S = 1.0


@dataclass(slots=True)
class _Op:
    operation: Operation
    fut: asyncio.Future[Any]


class Outbox:
    """Durable, bounded, priority-ordered store of events not yet known to be delivered.

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
        mono: Callable[[], float] = time.monotonic,
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
        self._mono = mono
        self._counts = counts
        self._meta = meta
        self._seq = 0
        self._confirmed = 0
        #: Monotonic time of the last acknowledgement that deleted events of each lane (the key is
        #: whether it is the alarm lane); the sender probes a lane silent for too long.
        self.lane_progress: dict[bool, float] = {}
        #: Per boot, the seq runs the last applied acknowledgement covered: those events are
        #: gone, so the next one (cumulative, sent every 0.2 s) deletes only what it adds.
        self._acked_runs: dict[str, list[tuple[int, int]]] = {}
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
        mono: Callable[[], float] = time.monotonic,
        on_drop: Callable[[Priority], None] | None = None,
    ) -> Outbox:
        """``clock``: wall time, stamped on events (``ts``, ``accepted``); ``mono``: when an
        event went out and when central acknowledged a lane. Those stamps are compared with
        each other only within one process (every sent mark is cleared before a connection
        sends), so a step of the wall clock cannot reorder them."""
        loop = asyncio.get_running_loop()
        conn, counts, meta = await loop.run_in_executor(_EXECUTOR, open_db, path)
        return cls(
            conn,
            node_id=node_id,
            boot_id=boot_id,
            max_events=max_events,
            max_batch=max_batch,
            clock=clock,
            mono=mono,
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
                    batch = self._next_batch()
                    if self._urgent(batch):
                        job = _EXECUTOR.submit_urgent(self._apply, batch)
                        results = await asyncio.wrap_future(job, loop=loop)
                    else:
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
        """Events stored and not yet acknowledged (by central, or by the broker with an older
        central)."""
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
    def central_acks(self) -> bool:
        """Whether events wait for central's stored-acknowledgement (persisted)."""
        return bool(self._meta.get(CENTRAL_ACKS, 0))

    @property
    def confirmed_total(self) -> int:
        """Events deleted on central's acknowledgement since this outbox was opened."""
        return self._confirmed

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
        result: Stored = await self._submit(Accept(ev, key, key_ttl_s))
        return result

    async def peek(
        self, n: int, exclude: Collection[int] = (), *, alarms: int | None = None
    ) -> list[Pending]:
        """The next ``n`` events to send in send order, skipping ``exclude`` (in flight).
        With ``alarms``: up to that many alarm events, then up to ``n`` of the other
        priorities (so history cannot take an alarm's place, nor alarms history's)."""
        result: list[Pending] = await self._submit(Peek(n, tuple(exclude), alarms))
        return result

    async def ack(self, ids: Collection[int]) -> None:
        """Delete events after their PUBACK. Unknown ids (already evicted) are ignored."""
        await self.ack_nowait(ids)

    def ack_nowait(self, ids: Collection[int]) -> asyncio.Future[None]:
        """:meth:`ack` without waiting: the deletion is queued now, so any :meth:`peek` asked
        for afterwards sees it applied; the future says when it is committed (or why not)."""
        fut: asyncio.Future[None] = self._submit(Ack(tuple(ids)))
        return fut

    async def mark_sent(self, ids: Collection[int]) -> None:
        """The broker acknowledged these events: keep them until central's acknowledgement,
        and do not send them again unless they turn out lost (:meth:`confirm`, :meth:`probe`)
        or the connection is new (:meth:`resend`)."""
        await self._submit(Sent(tuple(ids), self._mono()))

    async def confirm(self, boots: Collection[BootStored]) -> Confirmed:
        """Central stored these events: delete every one the acknowledgement covers (sent or
        not; unknown ones are ignored), and make due again the events of a lane sent before
        one it covered (lost on the way: the lane is delivered in order)."""
        todo, covered = [], {}
        for boot in boots:
            runs = stored_runs(boot)
            covered[boot.boot_id] = runs
            fresh = subtract_runs(runs, self._acked_runs.get(boot.boot_id, []))
            todo.append((boot.boot_id, boot.upto, tuple(fresh)))
        result: Confirmed = await self._submit(Confirm(tuple(todo)))
        for boot_id, runs in covered.items():  # only once those events are deleted
            self._acked_runs.pop(boot_id, None)
            self._acked_runs[boot_id] = runs
        while len(self._acked_runs) > ACKED_BOOTS_KEPT:
            del self._acked_runs[next(iter(self._acked_runs))]
        self._confirmed += result.deleted
        now = self._mono()
        for lane in result.lanes:
            self.lane_progress[lane] = now
        if result.resent:
            self.new_events.set()
        return result

    async def resend(self) -> int:
        """Make every sent, unacknowledged event due again (after a reconnect); returns how
        many."""
        result: int = await self._submit(Unsend())
        if result:
            self.new_events.set()
        return result

    async def probe(self, alarm_lane: bool, sent_before: float) -> int:
        """Make the newest event of a lane sent before ``sent_before`` due again: one event
        asks a silent central whether it is there; its acknowledgement then shows every event
        of the lane sent before it and not stored as lost. Returns 1 or 0."""
        result: int = await self._submit(Probe(alarm_lane, sent_before))
        if result:
            self.new_events.set()
        return result

    async def set_central_acks(self, on: bool) -> None:
        """Remember (on disk) whether central acknowledges stored events."""
        if on != self.central_acks:
            await self._submit(SetMeta(CENTRAL_ACKS, int(on)))

    async def dead_letter(self, row_id: int, reason: int) -> None:
        """Move an event the broker rejected (PUBACK reason >= 0x80) to the dead-letter table."""
        await self._submit(Dead(row_id, reason, self._clock()))

    async def next_birth_seq(self) -> int:
        """Increment and persist the birth sequence (before every connect attempt)."""
        result: int = await self._submit(Birth())
        return result

    async def dead_letters(self) -> list[tuple[int, int, bytes]]:
        """``(id, reason, payload)`` of every dead letter, oldest first."""
        result: list[tuple[int, int, bytes]] = await self._submit(DeadList())
        return result

    # -- internals -------------------------------------------------------------------------

    def _submit(self, operation: Operation) -> asyncio.Future[Any]:
        if self._closed:
            raise OutboxError("outbox closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ops.append(_Op(operation, fut))
        self._wake.set()
        return fut

    def _next_batch(self) -> list[_Op]:
        """The operations of the next transaction, taken off the queue: queued alarm accepts
        first, in a transaction of their own, so an alarm never waits for other queued work
        (a burst of snapshot pictures, acks, reads) but only for the commit already under way.
        Alarms keep their order among themselves (their seqs follow acceptance order); other
        operations keep theirs."""
        alarms = [op for op in self._ops if _is_alarm(op.operation)][: self.max_batch]
        if alarms and len(alarms) < len(self._ops):
            taken = {id(op) for op in alarms}
            self._ops = [op for op in self._ops if id(op) not in taken]
            return alarms
        batch = self._ops[: self.max_batch]
        del self._ops[: self.max_batch]
        return batch

    def _urgent(self, batch: list[_Op]) -> bool:
        """Whether ``batch`` stores an alarm, or reads what to send while an alarm is stored."""
        if self._counts.get(Priority.ALARM):
            return any(isinstance(op.operation, (Accept, Peek)) for op in batch)
        return any(_is_alarm(op.operation) for op in batch)

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
            if isinstance(op.operation, Accept) and isinstance(res, tuple):  # (result, dropped)
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
        txn = Batch(cur, dict(self._counts), dict(self._meta), self._seq, self.max_events)
        try:
            cur.execute("BEGIN IMMEDIATE")
            for op in batch:
                results.append(txn.apply(op.operation))
            txn.write_meta(self._meta)
            cur.execute("COMMIT")
        except (sqlite3.Error, OSError) as e:
            with contextlib.suppress(sqlite3.Error):
                cur.execute("ROLLBACK")
            if not is_disk_full(e):
                err = OutboxError(f"outbox write failed: {e}")
                return [err for _ in batch]
            full = OutboxDiskFull(str(e))
            rest = [op for op in batch if not isinstance(op.operation, Accept)]
            if rest and len(rest) < len(batch):
                # New events filled the disk; acks and reads need no new room (acks free it):
                # apply them alone so the sender keeps sending.
                done = iter(self._apply(rest))
                return [full if isinstance(op.operation, Accept) else next(done) for op in batch]
            return [full for _ in batch]
        finally:
            cur.close()
        self._counts, self._meta, self._seq = txn.counts, txn.meta, txn.seq
        return results


def _is_alarm(operation: Operation) -> bool:
    return isinstance(operation, Accept) and operation.event.priority is Priority.ALARM
