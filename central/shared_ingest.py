"""One of several ingest processes sharing the load of the nodes' messages through an MQTT 5
shared subscription, against one PostgreSQL (``shilian central run --role ingest``;
docs/scale.md, "Several ingest processes").

- **Member sessions.** The group has ``[ingest] members`` persistent sessions, client ids
  ``<client_id>-m1`` … ``-mN``. A process owns a member while it holds that member's
  session-level advisory lock in PostgreSQL; it takes the first free one at start (waiting if
  none is). mosquitto 2.0 keeps a persistent member's unacknowledged and queued messages for
  that session, and goes on queueing to it while it is away; with session expiry 0 it drops
  them. So a member whose process died must be taken over:
- **Adoption.** PostgreSQL drops a dead process's locks when its connection closes (at once
  on ``kill -9``: the kernel closes the socket). Every second each process tries the other
  members' locks; the one that gets a lock connects with that member's client id, unsubscribes
  (the broker stops queueing to it), ingests what the session still holds (its in-flight
  messages are redelivered), and once it has been quiet and committed, ends the session
  (session expiry 0) and releases the lock: the member is free for a restarted process.
  Redelivered messages that were in fact committed are duplicates, and the events table's
  unique key drops them.
- **Leader.** One process holds the leader's advisory lock and alone judges silence
  (central/shared_liveness.py); a survivor takes the lock within a tick of the leader's death.
- **Wills.** The process that receives a node's will takes it offline ``WILL_CONFIRM_S`` later
  if its own broker connection stayed up meanwhile (a shutting-down broker sends every will just
  before it goes: central/liveness.py), and only if the node is still in the life the will
  ended (a newer birth, stored by any process, wins).
- Each batch is one transaction, its PUBACKs sent after the commit (central/link.py); per-node
  correctness across processes is :mod:`central.store_shared`'s.

A lost PostgreSQL connection ends the process (exit code 1): it could no longer store, and its
member lock is gone with the connection, so another process adopts its session.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg

import wire
from central.acks import ACK_INTERVAL_S, StoredAcks, caps_payload
from central.config import CentralConfig
from central.db import opening
from central.ingest import Ingest, Outcome
from central.link import Inbound, LinkDown, MqttLink, member_lane
from central.liveness import WILL_CONFIRM_S, Liveness
from central.refusals import log_refused
from central.shared_liveness import overdue
from central.store import EventRow, Snapshot
from central.store_pg import CONNECT_TIMEOUT_S
from central.store_shared import LOCK_LEADER, LOCK_MEMBER, SharedStore
from registry import Registry
from resilience.log_limiter import LogLimiter
from wire import Kind, RemoteWireError
from wire.topics import CENTRAL_CAPS_TOPIC

log = logging.getLogger("shilian.central.shared")

#: How often a process looks for members whose process died, and tries for the leader's lock.
#: Adds at most this to the redelivery of a dead member's messages and to a leader's takeover.
ADOPT_TICK_S = 1.0
#: How often the leader looks for silent nodes (adds at most this to the 1.5 x interval).
LEADER_TICK_S = 0.5
#: Bad input from one node for one reason is logged at most once per this window.
BAD_INPUT_LOG_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class PendingWill:
    """A will received: the life it ends, when it applies, and the connection it came in."""

    boot_id: str | None
    birth_seq: int
    due: float
    connects: int


class SharedIngest:
    """An ingest process of a shared group; :meth:`run` until :meth:`stop`."""

    def __init__(
        self,
        cfg: CentralConfig,
        *,
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        if cfg.store.url is None or cfg.ingest.shared_group is None:
            raise ValueError("shared ingest needs [store] url and [ingest] shared_group")
        self.cfg = cfg
        self.url: str = cfg.store.url
        self.group: str = cfg.ingest.shared_group
        self.clock = clock
        self.mono = mono
        self._stop = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-db")
        self._log_limiter = LogLimiter(BAD_INPUT_LOG_WINDOW_S)
        self.acks = StoredAcks()
        self.member: int | None = None
        self.leader = False
        self.link: MqttLink | None = None
        self._hold_until = float("inf")  # until the own member's session is up
        self._adopting: dict[int, asyncio.Task[None]] = {}
        self._retired: set[int] = set()
        self._wills: dict[str, PendingWill] = {}

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        name = f"shilian-ingest-{os.getpid()}"
        url = self.url
        self.store = store = await asyncio.to_thread(opening, url, lambda: SharedStore(url))
        # A connection of its own for the session-level member and leader locks: they last
        # exactly as long as it does.
        self._locks: psycopg.Connection[tuple[object, ...]] = await asyncio.to_thread(
            lambda: psycopg.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name=name
            )
        )
        store.conn.execute("SELECT set_config('application_name', %s, false)", (name,))
        try:
            registry = Registry.from_package(self.cfg.registry.default_scope)
            snapshot = Snapshot({}, {})  # rows are read per batch, under their locks
            self.ingest = Ingest(snapshot, registry.knows_village, Liveness())
            self.member = await self._claim_member()
            log.info("接入成员 / ingest member m%d of group %r", self.member, self.group)
            self.link = link = self._member_link(self.member, retire=False)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(link.run())
                tg.create_task(self._adopter(tg))
                tg.create_task(self._ticker())
                tg.create_task(self._ack_flusher())
                await self._stop.wait()
                link.stop()
                for t in self._adopting.values():
                    t.cancel()
        finally:
            self._db.shutdown(wait=True)
            store.close()
            self._locks.close()  # releases the member and leader locks
        log.info("接入进程已停止 / ingest process stopped")

    # -- members ----------------------------------------------------------------------------------

    def _try_lock(self, key: int, n: int) -> bool:
        row = self._locks.execute("SELECT pg_try_advisory_lock(%s, %s)", (key, n)).fetchone()
        return bool(row and row[0])

    def _unlock(self, key: int, n: int) -> None:
        self._locks.execute("SELECT pg_advisory_unlock(%s, %s)", (key, n))

    async def _claim_member(self) -> int:
        waiting = False
        while True:
            for k in range(1, self.cfg.ingest.members + 1):
                if await asyncio.to_thread(self._try_lock, LOCK_MEMBER, k):
                    return k
            if not waiting:
                waiting = True
                log.warning(
                    "所有 %d 个成员会话均被占用，等待 / all %d member sessions are taken; waiting "
                    "(raise [ingest] members)",
                    self.cfg.ingest.members,
                    self.cfg.ingest.members,
                )
            await asyncio.sleep(ADOPT_TICK_S)

    def _member_link(self, k: int, *, retire: bool) -> MqttLink:
        return MqttLink(
            self.cfg.broker,
            self._handle_batch,
            on_up=self._link_up if not retire else lambda: None,
            lane=member_lane(self.group, k),
            retire=retire,
        )

    def _link_up(self) -> None:
        assert self.link is not None
        self.link.publish(CENTRAL_CAPS_TOPIC, caps_payload(self.clock()), retain=True)
        # As the single process after its (re)connect: silence before it is our deafness.
        self._hold_until = self.clock() + self.cfg.ingest.reconnect_grace_s

    async def _adopter(self, tg: asyncio.TaskGroup) -> None:
        while not self._stop.is_set():
            await self._sleep(ADOPT_TICK_S)
            for k in range(1, self.cfg.ingest.members + 1):
                if k == self.member or k in self._adopting or self._stop.is_set():
                    continue
                if not await asyncio.to_thread(self._try_lock, LOCK_MEMBER, k):
                    self._retired.discard(k)  # in use again: its next death is news
                    continue
                if k in self._retired:  # ended by us, unused since: nothing to take
                    await asyncio.to_thread(self._unlock, LOCK_MEMBER, k)
                    continue
                log.warning("接管成员会话 / member m%d has no process: taking over its session", k)
                self._adopting[k] = tg.create_task(self._adopt(k))

    async def _adopt(self, k: int) -> None:
        try:
            await self._member_link(k, retire=True).run()
            self._retired.add(k)
        finally:
            del self._adopting[k]
            await asyncio.to_thread(self._unlock, LOCK_MEMBER, k)

    # -- liveness -------------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while not self._stop.is_set():
            await self._sleep(LEADER_TICK_S)
            if not self.leader and await asyncio.to_thread(self._try_lock, LOCK_LEADER, 0):
                self.leader = True
                log.info("成为主进程（在线判定）/ this process now judges liveness (leader)")
            if self.link is None or not self.link.connected:
                continue  # this process cannot hear the broker: silence is not the nodes'
            async with self._write_lock:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._db, self._expire)

    def _expire(self) -> None:
        """Wills due (any process), and, on the leader, nodes silent past their deadline."""
        now, mono = self.clock(), self.mono()
        assert self.link is not None
        for node_id, w in list(self._wills.items()):
            if w.due > mono:
                continue
            del self._wills[node_id]
            if w.connects != self.link.connects:
                continue  # our connection went meanwhile: maybe a broker's shutdown wills
            if self.store.take_offline(node_id, w.boot_id, w.birth_seq, "will", now):
                log.info("节点离线（遗嘱）/ node %s offline: reason=will", node_id)
        if not self.leader:
            return
        for n in overdue(self.store.online(), now, self._hold_until):
            if self.store.take_offline(n.node_id, n.boot_id, n.birth_seq, "health_timeout", now):
                log.info("节点离线（心跳超时）/ node %s offline: reason=health_timeout", n.node_id)

    # -- batches ----------------------------------------------------------------------------------

    async def _handle_batch(self, batch: list[Inbound]) -> None:
        async with self._write_lock:
            loop = asyncio.get_running_loop()
            outcomes = await loop.run_in_executor(self._db, self._apply, batch)
        now = self.clock()
        for m, out in zip(batch, outcomes, strict=True):
            if out.fault is not None:
                log_refused(self._log_limiter, m.topic, out, now)

    def _apply(self, batch: list[Inbound]) -> list[Outcome]:
        """One batch, one transaction (on the database thread)."""
        stateful: set[str] = set()
        for m in batch:
            try:
                route = wire.parse_topic(m.topic)
            except RemoteWireError:
                continue  # the core refuses it
            if route.kind not in (Kind.EVENT, Kind.EVENT_ALARM):
                stateful.add(route.node_id)
        store, ingest = self.store, self.ingest
        rows = store.begin_batch(stateful)
        for node_id in stateful:
            row = rows.get(node_id)
            if row is None:
                ingest.nodes.pop(node_id, None)
            else:
                ingest.nodes[node_id] = row
        now, mono = self.clock(), self.mono()
        outcomes = [ingest.handle(m.topic, m.payload, now, mono) for m in batch]
        writes, _ = ingest.take()
        connects = self.link.connects if self.link is not None else 0
        for node_id in stateful:
            if ingest.liveness.is_dying(node_id):
                n = ingest.nodes[node_id]
                self._wills[node_id] = PendingWill(
                    n.boot_id, n.birth_seq, mono + WILL_CONFIRM_S, connects
                )
                ingest.liveness.forget(node_id)
        lows: dict[tuple[str, str], int] = {}
        for w in writes:
            if isinstance(w, EventRow):
                key = (w.node_id, w.boot_id)
                lows[key] = min(w.seq, lows.get(key, w.seq))
        store.stage_shared(writes, lows, now)
        store.commit()
        keys = ingest.take_acks()
        # What is stored, whichever process stored it: the acknowledgements say no more.
        self.acks.committed(keys, store.load_seqs(keys))
        ingest.take_offline()
        ingest.take_county_links()
        ingest.take_clock_changes()
        return outcomes

    async def _ack_flusher(self) -> None:
        while not self._stop.is_set():
            await self._sleep(ACK_INTERVAL_S)
            link = self.link
            if link is None or not link.connected or not len(self.acks):
                continue
            for topic, payload in self.acks.take(self.clock()):
                try:
                    link.publish(topic, payload)
                except LinkDown:
                    break

    async def _sleep(self, s: float) -> None:
        try:
            async with asyncio.timeout(s):
                await self._stop.wait()
        except TimeoutError:
            pass


async def serve_ingest(cfg: CentralConfig) -> int:
    """Run one ingest process until SIGTERM/SIGINT; exit code 0 on a clean stop."""
    import signal

    proc = SharedIngest(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, proc.stop)
    await proc.run()
    return 0
