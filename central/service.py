"""The running central: one supervisor (asyncio.TaskGroup) for the MQTT links + ingest, the
liveness ticker and the HTTP server (API and /metrics on one port).

Two MQTT sessions feed the one ingest: the main link (everything nodes send but alarms; commands
go out on it, and its connection is what "central hears the nodes" means for liveness) and the
alarm lane (alarm-priority events only, so that they never wait in the broker behind history).
Their batches are applied one at a time under the write lock, on the one event loop. A main
batch (up to 2,000 messages) is handled in slices of :data:`SLICE` with the loop free between
them; alarms received meanwhile join the transaction under way at the next slice boundary, and
it is committed at once, before the rest of the batch. So an alarm waits for at most a slice of
history and one commit, not for a whole batch of it.

Start-up: open the store, load the registry from the database (importing the configured default
scope when there is none), rebuild coverage from the ``nodes`` table, load the dedupe state.
Shutdown (SIGTERM/SIGINT, or :meth:`CentralService.stop`): stop taking messages, commit the batch
in progress, disconnect (the persistent sessions keep queueing for us), close the HTTP server.
A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import psycopg
from aiohttp import web

from central import memtrace, registry_store
from central.acks import ACK_INTERVAL_S, StoredAcks, caps_payload
from central.commands import CommandClient
from central.config import CentralConfig
from central.coverage import CoverageIndex
from central.db import open_db, opening, target
from central.device_feed import device_messages, load_devices
from central.device_metrics import DeviceCollector
from central.devices import DeviceIndex
from central.ingest import CLOCK_OFF_S, Ingest, Outcome
from central.link import ALARM_LANE, MAIN_LANE, SHARED_LANE, Inbound, LinkDown, MqttLink, Taken
from central.live import LiveHub
from central.liveness import Liveness
from central.metrics import CentralMetrics
from central.refusals import log_refused
from central.store import NodeRow, SqliteStore, Write
from central.store_pg import PostgresStore
from registry import Registry
from resilience.log_limiter import LogLimiter
from wire.limits import RECONNECT_GRACE_S
from wire.topics import CENTRAL_CAPS_TOPIC

if TYPE_CHECKING:
    from central.renewal import RenewalService
    from central.revocations import Revocations
    from central.snapshots import SnapshotRow

log = logging.getLogger("shilian.central")

#: How often silent nodes are checked. Adds at most this much to the 1.5 x interval detection.
LIVENESS_TICK_S = 0.25
#: The offline reasons (the API's ``state_reason``, the metric's ``reason`` label) in Chinese.
OFFLINE_REASONS_ZH = {
    "will": "遗嘱：连接中断或断电",
    "stopped": "正常停止",
    "health_timeout": "心跳超时",
}
#: Bad input from one node (or topic) for one reason is logged at most once per this window.
BAD_INPUT_LOG_WINDOW_S = 60.0
#: Messages of a batch handled between two looks at the alarm lane (a slice takes a few ms; a
#: whole batch of history, hundreds of ms, seconds on a loaded machine).
SLICE = 200
#: After the database connection is lost, the first wait before reconnecting; it doubles up to
#: the cap while the server stays away.
DB_RETRY_FIRST_S = 0.5
DB_RETRY_CAP_S = 10.0


class CentralService:
    """Central as one object; :meth:`run` until :meth:`stop`. Attributes set once running:
    ``registry``, ``coverage``, ``metrics``, ``commands``, ``link``, ``alarm_link`` (None when
    the alarm session has no certificate of its own), ``http_port``."""

    def __init__(
        self,
        cfg: CentralConfig,
        *,
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        reconnect_grace_s: float = RECONNECT_GRACE_S,
        rng: Callable[[], float] = random.random,
    ) -> None:
        """``clock``: wall time, stored and shown; ``mono``: the deadlines' clock (liveness),
        which a step of the wall clock does not move. ``reconnect_grace_s``: how long nodes are
        held after central's connection comes up (the nodes' reconnect window; tests and
        benchmarks with shortened node timings shorten it to match). ``rng``: the broker link's
        reconnect jitter."""
        self.cfg = cfg
        self.clock = clock
        self.mono = mono
        #: Wall minus monotonic time at the last liveness tick: a change is a wall-clock step.
        self._wall_offset: float | None = None
        self.reconnect_grace_s = reconnect_grace_s
        self._rng = rng
        self.metrics = CentralMetrics()
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self._write_lock = asyncio.Lock()
        #: Alarm-lane batches waiting for (or holding) the write lock.
        self._alarms_waiting = 0
        self._log_limiter = LogLimiter(BAD_INPUT_LOG_WINDOW_S)
        self.http_port: int | None = None
        self.renewal: RenewalService | None = None  # certificate renewal, when [ca] is set
        self.revocations: Revocations | None = None  # revoked nodes refused, when [ca] is set
        self.acks = StoredAcks()

    def stop(self) -> None:
        self._stop.set()

    async def started(self) -> None:
        """Wait until the store is loaded and the HTTP server listens."""
        await self._started.wait()

    async def run(self) -> None:
        cfg = self.cfg
        self.store = store = await asyncio.to_thread(self._open_store)
        #: One thread for the store's commits (one connection, one writer).
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="central-commit")
        try:
            self.registry = registry = await asyncio.to_thread(self._load_registry)
            snapshot = store.load()
            self.liveness = Liveness(reconnect_grace_s=self.reconnect_grace_s)
            # A node bound to a village a newer registry edition retired is still accepted
            # (and flagged in the API); only current villages count for coverage.
            self.ingest = Ingest(snapshot, registry.knows_village, self.liveness)
            self.coverage = coverage = CoverageIndex(registry)
            for n in snapshot.nodes.values():
                if registry.has_village(n.village):
                    coverage.set_node(n.node_id, n.state == "online")
            self.metrics.add_coverage(registry, coverage)
            self.metrics.counties_link_down.set(len(self.ingest.counties_down))
            self.metrics.nodes_held_county.set(self.ingest.held_nodes())
            from central.snapshots import SnapshotIntake

            self.snapshots = SnapshotIntake(store.conn, self.metrics.registry)
            self.devices = await asyncio.to_thread(self._load_devices, snapshot.nodes.values())
            self.metrics.registry.register(DeviceCollector(registry, self.devices))
            self.live = LiveHub(
                coverage, lambda v: (u.code for u in registry.ancestors(v)), self.clock
            )
            from central.alerting import AlertTask
            from central.history import HistoryTask

            db = target(cfg.store)
            self.history = HistoryTask(db, registry, coverage, self.clock)
            self.alerts = AlertTask(
                cfg.alerts, db, registry, coverage, lambda: self.ingest.nodes.values(),
                self.live, self.metrics.registry, self.clock, devices=self.devices,
            )  # fmt: skip
            # Under TLS the broker makes the certificate's CN the client id: the alarm session
            # needs a certificate of its own, or both sessions would keep taking each other over.
            tls = cfg.broker.tls
            lane_apart = tls is None or tls.alarm_lane
            if not lane_apart:
                log.warning(
                    "未配置告警会话证书，告警与历史共用一个会话，积压时可能延迟 / no certificate "
                    "for the alarm session (broker.tls.alarm_cert_file): alarms share the main "
                    "session and may queue behind a backlog of history"
                )
            self.link = link = MqttLink(
                cfg.broker,
                self._handle_batch,
                on_up=self._link_up,
                on_down=self._link_down,
                rng=self._rng,
                lane=MAIN_LANE if lane_apart else SHARED_LANE,
            )
            self.alarm_link = alarm_link = (
                MqttLink(cfg.broker, self._handle_alarms, rng=self._rng, lane=ALARM_LANE)
                if lane_apart
                else None
            )
            self.commands = CommandClient(
                lambda t, p, rt, cd, exp: link.publish(
                    t, p, response_topic=rt, correlation_data=cd, expiry_s=exp
                ),
                node_online=coverage.node_online,
            )
            from central.meetings import MeetingService

            self.meetings = MeetingService(
                lambda t, p, exp: link.publish(t, p, expiry_s=exp),
                coverage.node_online,
                db,
                self.clock,
                cfg.meetings,
            )
            if cfg.ca is not None:
                from central.renewal import RenewalService
                from central.revocations import Revocations

                # revoked nodes' messages are refused before anything else sees them
                self.revocations = Revocations(cfg.ca.dir, self.metrics.registry)

                self.renewal = RenewalService(
                    cfg.ca,
                    lambda t, p, cd: link.publish(t, p, correlation_data=cd),
                    self.metrics.registry,
                    self.clock,
                    self.mono,
                )
            runner = await self._start_http()
            try:
                self._started.set()
                log.info(
                    "中心已启动 / central running: scope %r, %d nodes known, http %s:%s",
                    registry.scope,
                    len(snapshot.nodes),
                    cfg.http.host,
                    self.http_port,
                )
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(link.run())
                    if alarm_link is not None:
                        tg.create_task(alarm_link.run())
                    tg.create_task(self._ticker())
                    tg.create_task(self._ack_flusher())
                    tg.create_task(self.history.run(self._stop))
                    tg.create_task(self.alerts.run(self._stop))
                    if self.renewal is not None:
                        tg.create_task(self.renewal.run(self._stop))
                    # calls a crash left open in the records: asked about, taken up or ended
                    reconcile = tg.create_task(self.meetings.reconcile())
                    await self._stop.wait()
                    reconcile.cancel()
                    await self.meetings.drain()  # hang-ups go out before the link closes
                    link.stop()
                    if alarm_link is not None:
                        alarm_link.stop()
            finally:
                await runner.cleanup()
                if hasattr(self, "meetings"):
                    self.meetings.close()
        finally:
            self._db_thread.shutdown(wait=True)
            store.close()
        log.info("中心已停止 / central stopped")

    # -- set-up -----------------------------------------------------------------------------------

    def _open_store(self) -> SqliteStore | PostgresStore:
        """Ingest's store on the configured database, brought to the newest schema first:
        before any route or ingest, as every module uses the tables this makes."""
        from central import migrate

        db = target(self.cfg.store)
        if isinstance(db, str):
            pg = db
            store: SqliteStore | PostgresStore = opening(pg, lambda: PostgresStore(pg))
            version = migrate.status(db).current
        else:
            version = migrate.ensure(db)
            store = SqliteStore(db)
        log.info("数据库版本 / database schema at version %s", version)
        return store

    def _load_registry(self) -> Registry:
        conn = open_db(target(self.cfg.store))
        try:
            registry = registry_store.load(conn)
            if registry is None:
                scope = self.cfg.registry.default_scope
                count = registry_store.import_registry(conn, scope)
                log.info("导入区划 / imported registry scope %r: %d villages", scope, count)
                registry = registry_store.load(conn)
                assert registry is not None  # just imported
            return registry
        finally:
            conn.close()

    def _load_devices(self, nodes: Iterable[NodeRow]) -> DeviceIndex:
        db = open_db(target(self.cfg.store))
        try:
            return load_devices(db, self.registry, nodes)
        finally:
            db.close()

    async def _start_http(self) -> web.AppRunner:
        from central.app import make_app
        from central.http import ApiContext

        ctx = ApiContext(
            db_path=self.cfg.store.path,
            registry=self.registry,
            coverage=self.coverage,
            metrics_registry=self.metrics.registry,
            commands=self.commands,
            clock=self.clock,
            auth=self.cfg.auth,
            devices=self.devices,
            body_timeout_s=self.cfg.http.body_timeout_s,
            clock_off=self.ingest.clock_off,
            db_url=self.cfg.store.url,
        )
        self.http_app = app = make_app(ctx)
        from central.dashboard import add_routes as add_dashboard_routes

        add_dashboard_routes(app, self.live)
        from central import alert_routes, commissioning_summary, reports

        alert_routes.add_routes(app, self.alerts)
        reports.add_routes(app, self.history)
        from central import device_routes

        device_routes.add_routes(app, self.devices)
        from central import meeting_routes

        meeting_routes.add_routes(app, self.meetings)
        from central import broadcast_routes

        broadcast_routes.add_routes(app)
        commissioning_summary.add_routes(app, target(self.cfg.store))
        from central import snapshot_routes

        snapshot_routes.add_routes(app)
        from central.commissioning import add_commissioning_routes

        add_commissioning_routes(app, target(self.cfg.store), self.registry, self.clock)
        if (fw := self.cfg.firmware) is not None:
            from central import firmware

            firmware.add_routes(app, firmware.FirmwareStore.from_config(fw.dir, fw.public_key))
        if self.cfg.ca is not None:
            from central.enrol import add_enrol_routes

            add_enrol_routes(app, self.cfg.ca, target(self.cfg.store), self.clock)
        from central import http_server

        runner = http_server.runner(
            app, access_log=None, keepalive_timeout=self.cfg.http.idle_timeout_s
        )
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.http.host, self.cfg.http.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.http_port = int(runner.addresses[0][1])
        return runner

    # -- link callbacks ---------------------------------------------------------------------------

    def _link_up(self) -> None:
        # Retained, on every connect: a broker that lost its saved state learns it again, and a
        # node reads it before it sends (docs/protocol.md, stored-acknowledgement).
        self.link.publish(CENTRAL_CAPS_TOPIC, caps_payload(self.clock()), retain=True)
        # No false collapse: every node believed online is held for the nodes' reconnect window.
        self.liveness.reset(self.mono(), self.ingest.online_nodes())
        self.metrics.connected.set(1)
        self.live.link_changed(True)
        self.meetings.link_up()
        if self.link.connects > 1:
            self.metrics.reconnects.inc()

    def _link_down(self) -> None:
        self.metrics.connected.set(0)
        self.live.link_changed(False)

    async def _handle_alarms(self, batch: list[Inbound]) -> None:
        """A batch of the alarm lane: ahead of the rest of any main batch under way."""
        self._alarms_waiting += 1
        try:
            await self._ingest(batch, alarms=True)
        finally:
            self._alarms_waiting -= 1

    async def _handle_batch(self, batch: list[Inbound]) -> None:
        """A batch of the main lane."""
        await self._ingest(batch, alarms=False)

    def _admit(self, batch: list[Inbound]) -> list[Inbound]:
        """What of ``batch`` goes to ingest: certificate requests, meeting answers and revoked
        nodes' messages are taken out first."""
        if self.renewal is not None:
            batch = self.renewal.take(batch)  # cert/req: answered by the renewal service
        batch = self.meetings.take(batch)  # meet/res: answers to operators' calls
        if self.revocations is not None:
            batch = self.revocations.take(batch)  # revoked nodes: counted, never stored
        return batch

    async def _ingest(self, batch: list[Inbound], *, alarms: bool) -> None:
        """Apply ``batch`` under the write lock, in transactions. A main-lane batch is handled in
        slices of :data:`SLICE`; at each slice boundary, alarms the alarm lane has received
        meanwhile join the transaction under way, which is committed at once (with the slices
        handled so far), and the rest of the batch goes on in a new one: an alarm waits for at
        most a slice of history and one commit. An alarm batch already waiting for the lock
        (taken off its link before this batch began a slice) goes next in a transaction of its
        own."""
        batch = self._admit(batch)
        alarm_link = None if alarms else self.alarm_link
        done = 0
        while done < len(batch) or not batch:
            async with self._write_lock:
                t0 = time.perf_counter()
                now, mono = self.clock(), self.mono()
                self.live.link.heard(now)
                handle = self.ingest.handle
                start, outcomes = done, []
                joined: Taken | None = None
                joined_msgs: list[Inbound] = []
                while done < len(batch):
                    if done > start and not alarms:
                        await asyncio.sleep(0)  # the loop reads the alarm lane meanwhile
                        if self._alarms_waiting:
                            break  # commit what is handled; the alarms take the lock next
                        joined = alarm_link.take_received() if alarm_link is not None else None
                        if joined is not None:
                            joined_msgs = self._admit(joined.messages)
                            at, at_mono = self.clock(), self.mono()
                            outcomes += [
                                handle(m.topic, m.payload, at, at_mono) for m in joined_msgs
                            ]
                            break  # commit now: the alarms with the slices handled so far
                    outcomes += [
                        handle(m.topic, m.payload, now, mono) for m in batch[done : done + SLICE]
                    ]
                    done = start + len(outcomes)
                writes, changes = self.ingest.take()
                acked = self.ingest.take_acks()
                await self._commit(writes, changes)
                # Only now, and still under the lock: the dedupe state is what was just
                # committed.
                self.acks.committed(acked, self.ingest.seqs)
                self._account(batch[start:done] + joined_msgs, outcomes, now)
                self._count_offline()
                self._county_links()
                self._note_clocks()
                self.metrics.batch_size.observe(done - start + len(joined_msgs))
                self.metrics.batch_latency.observe(time.perf_counter() - t0)
                if joined is not None and alarm_link is not None:
                    alarm_link.acknowledge(joined)
            if not batch:
                return

    async def _commit(self, writes: list[Write], changes: list[tuple[str, bool]]) -> None:
        if writes:
            # Rows are written on the loop (binding them needs the GIL row by row; a thread
            # would wait for it each time), but the commit's fsync runs on the store's thread,
            # so the loop goes on parsing the next messages meanwhile. Their PUBACKs still wait
            # for their own commit.
            writes, shots = self.snapshots.split(writes)  # pictures to their own table
            await self._write(writes, shots)
        changes = [c for c in changes if self.registry.has_village(c[0][:12])]
        for node_id, online in changes:
            self.coverage.set_node(node_id, online)
        villages = self.devices.apply(writes, changes)
        self.live.committed(writes, changes)
        if villages:
            self.live.publish(
                device_messages(villages)
            )  # after the store and coverage: pages re-read both

    async def _write(self, writes: list[Write], shots: list[SnapshotRow]) -> None:
        """Stage and commit one transaction. On PostgreSQL a connection the server ended (a
        restart) is replaced and the same rows written again, until they are committed or
        central stops: the batch's messages are acknowledged only after that, so the broker
        keeps them meanwhile, and ingest waits (nothing else is written in between)."""
        delay = DB_RETRY_FIRST_S
        while True:
            try:
                self.store.stage(writes)
                self.snapshots.stage(shots)
                await asyncio.get_running_loop().run_in_executor(self._db_thread, self.store.commit)
                return
            except psycopg.OperationalError as e:
                store = self.store
                if not isinstance(store, PostgresStore) or not store.lost or self._stop.is_set():
                    raise
                self.metrics.db_reconnects.inc()
                log.warning(
                    "数据库连接中断，%.1f 秒后重连并重写本批 / database connection lost (%s); "
                    "reconnecting in %.1f s to write the batch again",
                    delay, e, delay,
                )  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, DB_RETRY_CAP_S)
            try:
                await asyncio.get_running_loop().run_in_executor(self._db_thread, store.reconnect)
            except psycopg.OperationalError as e:
                log.warning("数据库仍不可用 / database still unreachable: %s", e)
                continue
            self.snapshots.rebind(store.conn)

    def _account(self, batch: list[Inbound], outcomes: list[Outcome], now: float) -> None:
        """Metrics (summed per batch: a labelled ``inc`` per message is measurable at 15k/s),
        rate-limited logs of refused input, and command replies."""
        counts: Counter[tuple[str, str]] = Counter()
        gaps = 0
        for m, out in zip(batch, outcomes, strict=True):
            if out.fault is not None:
                counts["invalid", out.fault.value] += 1
                log_refused(self._log_limiter, m.topic, out, now)
            elif out.ignored is not None:
                counts["ignored", out.ignored] += 1
            else:
                counts["ok", out.kind] += 1
                gaps += out.gaps_opened
                if out.response is not None and out.node_id is not None:
                    self.commands.on_response(out.node_id, m.correlation, out.response)
        mt = self.metrics
        for (what, label), n in counts.items():
            if what == "invalid":
                mt.invalid.labels(label).inc(n)
            elif label == "duplicate":
                mt.duplicates.inc(n)
            elif what == "ignored":
                mt.ignored.labels(label).inc(n)
            else:
                mt.messages.labels(label).inc(n)
        if gaps:
            mt.gaps.inc(gaps)

    async def _ticker(self) -> None:
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(LIVENESS_TICK_S):
                    await self._stop.wait()
            except TimeoutError:
                pass
            self._watch_own_clock()
            if not self.link.connected:
                continue  # central cannot hear anyone: silence is not the nodes' fault
            async with self._write_lock:
                if self.ingest.expire(self.clock(), self.mono()):
                    writes, changes = self.ingest.take()
                    await self._commit(writes, changes)
                    self._count_offline()

    async def _ack_flusher(self) -> None:
        """Every :data:`ACK_INTERVAL_S`, one stored-acknowledgement per node with newly stored
        events, on the main session. While central is not connected they wait (the newest per
        boot replaces older ones); one lost with the connection costs the node a re-send."""
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(ACK_INTERVAL_S):
                    await self._stop.wait()
            except TimeoutError:
                pass
            if not self.link.connected or not len(self.acks):
                continue
            for topic, payload in self.acks.take(self.clock()):
                try:
                    self.link.publish(topic, payload)
                except LinkDown:
                    break
                self.metrics.acks.inc()

    def _county_links(self) -> None:
        """Count and log each county bridge gone down or back (after the batch's commit)."""
        mt = self.metrics
        links = self.ingest.take_county_links()
        for c in links:
            if c.up:
                log.info(
                    "县级链路恢复 / county %s bridge back: %d nodes' health deadlines restart",
                    c.county,
                    c.nodes,
                )
            else:
                mt.county_link_drops.inc()
                log.warning(
                    "县级链路中断 / county %s bridge down: %d online nodes held (county_link_down)",
                    c.county,
                    c.nodes,
                )
        if links:
            mt.counties_link_down.set(len(self.ingest.counties_down))
            mt.nodes_held_county.set(self.ingest.held_nodes())

    def _watch_own_clock(self) -> None:
        """Log and count a step of central's own wall clock. Deadlines do not move with it
        (they run on the monotonic clock), but stored times and every node's clock offset
        (``clock_off_s``) are read against it."""
        offset = self.clock() - self.mono()
        last, self._wall_offset = self._wall_offset, offset
        if last is not None and abs(offset - last) > CLOCK_OFF_S:
            self.metrics.clock_steps.inc()
            log.warning(
                "中心系统时钟跳变 %+.0f 秒，请检查 NTP / central's wall clock stepped by %+.0f s: "
                "check NTP (timedatectl)",
                offset - last,
                offset - last,
            )

    def _note_clocks(self) -> None:
        """Log each node whose clock is newly off, or right again; keep the gauge current."""
        changes = self.ingest.take_clock_changes()
        for node_id, off in changes:
            if off is None:
                log.info("节点时钟已恢复 / node %s: clock right again", node_id)
            else:
                log.warning(
                    "节点时钟偏差 %+.0f 秒，事件时间不可信 / node %s: clock off central's by "
                    "%+.0f s, its event times are wrong",
                    off,
                    node_id,
                    off,
                )
        if changes:
            self.metrics.clock_off.set(len(self.ingest.clock_off))

    def _count_offline(self) -> None:
        """Count and log each node gone offline under the reason the API shows for it."""
        for node_id, reason in self.ingest.take_offline():
            self.metrics.offline.labels(reason).inc()
            log.info(
                "节点离线（%s）/ node %s offline: reason=%s",
                OFFLINE_REASONS_ZH.get(reason, reason),
                node_id,
                reason,
            )


async def serve(cfg: CentralConfig) -> int:
    """Run until SIGTERM/SIGINT; exit code 0 on a clean stop."""
    service = CentralService(cfg)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_signal() -> None:
        if service._stop.is_set():
            log.warning("再次收到信号，立即退出 / second signal: exiting now")
            if task is not None:
                task.cancel()
        else:
            log.info("收到停止信号 / stopping")
            service.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    memtrace.install(loop)
    try:
        await service.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0
