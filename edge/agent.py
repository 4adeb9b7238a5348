"""The agent supervisor: one task group owning the outbox writer, MQTT session, sender, health
reporter, event sources, local API and metrics server.

Stop (``stop`` set; SIGTERM/SIGINT in the CLI) has stages: stop taking new events (sources and
local API end), send the outbox for up to ``shutdown_flush_s``, publish the retained
``offline/stopped``, DISCONNECT (no will), cancel the rest. :meth:`Agent.crash` ends as a power
cut would: TCP dropped without DISCONNECT (the broker publishes the will), nothing flushed.
Either way every accepted event is on disk and is sent by the next run.

Fault injection (tests only, docs/faults.md): with ``SHILIAN_FAULT_KILL_AFTER_COMMIT=1`` in its
environment the agent kills itself with SIGKILL right after the first keyed event (an alarm of
the board or of a panel) is committed to the outbox, before its source acknowledges the peer:
the crash that idempotency keys exist for, placed deterministically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from edge.commands import CommandHandler, FirmwareTarget
from edge.config import EdgeConfig
from edge.health import HostProbe
from edge.local_api import LocalApi
from edge.metrics import EdgeMetrics
from edge.metrics_http import MetricsServer
from edge.mqtt_link import LinkError, PublishRejected
from edge.outbox import DEFAULT_KEY_TTL_S, Outbox, OutboxDiskFull, OutboxError
from edge.sender import Sender
from edge.session import NodeSession
from edge.sources import EventSink, EventSource
from resilience.backoff import Backoff
from wire import DeviceState, Event, Health, Priority, Topics, encode
from wire.version import __version__

if TYPE_CHECKING:
    from edge.board_source import BoardSource
    from edge.meetings import MeetingDesk
    from edge.remediation import PowerCycler
    from edge.renew import CertRenewer
    from edge.snapshots import SnapshotTaker

log = logging.getLogger("shilian.edge.agent")


#: Announced in birth and health. The distribution's version, from its root package (not
#: importlib.metadata: that import alone costs an idle node ~1 MB).
SW_VERSION: str = __version__
#: Environment variable of the fault injection described in the module docstring.
FAULT_KILL_AFTER_COMMIT = "SHILIAN_FAULT_KILL_AFTER_COMMIT"
#: At most one "outbox disk full" log line per this many seconds (a source may retry often).
DISK_FULL_LOG_EVERY_S = 60.0
#: While the outbox disk is full, the board source's emit tries again this often.


class AgentNotRunning(OutboxError):
    """An event was offered while the agent is not running or is stopping."""


class _Sink:
    """The :class:`EventSink` of an agent."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def _disk_full(self, e: OutboxDiskFull) -> None:
        """Count a refused event, remember since when, log once a minute at most. The caller
        gets the error (local software hears it; the board source's sink waits and retries)."""
        a = self._agent
        now = a.clock()
        a.metrics.outbox_write_errors.labels("disk_full").inc()
        if a.disk_full_since is None:
            a.disk_full_since = now
        last = a.disk_full_logged
        if last is None or now - last >= DISK_FULL_LOG_EVERY_S:
            a.disk_full_logged = now
            log.error("node %s: %s (%s)", a.config.node_id, e, e.detail)

    async def emit(
        self,
        priority: Priority | str,
        kind: str,
        device: str | None = None,
        data: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        key_ttl_s: float | None = None,
    ) -> Event:
        a = self._agent
        if a.outbox is None or not a.accepting:
            raise AgentNotRunning("agent is not accepting events (starting or stopping)")
        ttl = DEFAULT_KEY_TTL_S if key_ttl_s is None else key_ttl_s
        try:
            stored = await a.outbox.store(priority, kind, device, data, key=key, key_ttl_s=ttl)
        except OutboxDiskFull as e:
            self._disk_full(e)
            raise
        if a.disk_full_since is not None:
            a.disk_full_since = a.disk_full_logged = None
            log.warning("node %s: 发件箱又可写入 / outbox accepts events again", a.config.node_id)
        if stored.duplicate:
            log.info(
                "node %s: %s event %s stored before (key %s); not stored again",
                a.config.node_id,
                kind,
                stored.event.seq,
                key,
            )
            return stored.event
        a.metrics.accepted.labels(stored.event.priority.value).inc()
        a.metrics.outbox_depth.set(a.outbox.depth)
        if a.snapshots is not None and stored.event.priority is Priority.ALARM:
            a.snapshots.alarm(stored.event)  # queued only: the alarm is already on disk
        if key is not None and a.kill_after_commit:
            log.warning("node %s: %s set: SIGKILL now", a.config.node_id, FAULT_KILL_AFTER_COMMIT)
            os.kill(os.getpid(), signal.SIGKILL)
        return stored.event

    async def set_device(
        self,
        device_id: str,
        kind: str,
        state: str,
        name: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        a = self._agent
        if a.session is None:
            raise AgentNotRunning("agent is not running")
        payload = DeviceState.model_validate(
            {
                "node": a.config.node_id,
                "ts": a.clock(),
                "kind": kind,
                "state": state,
                "name": name,
                "detail": detail or {},
            }
        )
        await a.session.set_device(device_id, payload)

    async def remove_device(self, device_id: str) -> None:
        a = self._agent
        if a.session is None:
            raise AgentNotRunning("agent is not running")
        await a.session.remove_device(device_id)


class Agent:
    def __init__(
        self,
        config: EdgeConfig,
        *,
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry | None = None,
        serve_metrics: bool = True,
        serve_local_socket: bool = True,
        sources: Sequence[EventSource] = (),
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.clock = clock  # wall: what events and reports are stamped with
        self.mono = mono  # timeouts and ages: a step of the wall clock moves none of them
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = EdgeMetrics(self.registry)
        self.serve_metrics = serve_metrics and config.metrics.enabled
        self.serve_local_socket = serve_local_socket
        self.sources = list(sources)
        #: Camera power-cycles through the board's relays (with cameras configured).
        self.power: PowerCycler | None = None
        board: BoardSource | None = None
        #: Pictures from the cameras of an alarm's zone, taken after the alarm is stored.
        self.snapshots: SnapshotTaker | None = None
        if config.alarm_board is not None:
            # Imported only when a board is configured: an edge without one stays small.
            from edge.board_source import BoardSource

            board = BoardSource.from_config(config.alarm_board, state_dir=config.outbox.path.parent)
            self.sources.append(board)
        if config.sia is not None:
            # Likewise the SIA receiver (and cryptography only with an encrypted account).
            from edge.sia_receiver import SiaReceiver, SiaReceiverConfig
            from edge.sia_slots import SlotLimits

            limits = SlotLimits(guest_timeout_s=config.sia.guest_timeout_s)
            receiver = SiaReceiver(SiaReceiverConfig.from_edge(config.sia), limits=limits)
            self.sources.append(receiver)
        if config.cameras:
            # Imported only with cameras configured: the frame check loads FFmpeg (PyAV).
            from edge.camera_source import CameraSource

            cameras = CameraSource.from_config(config)
            self.sources.append(cameras)
            from edge.remediation import PowerCycler

            self.power = PowerCycler.from_config(config, board, cameras)
            self.sources.append(self.power)
            if config.snapshots.enabled and any(c.zones for c in config.cameras):
                from edge.snapshots import SnapshotTaker

                self.snapshots = SnapshotTaker.from_config(config, cameras, clock, self.registry)
        if config.terminals or config.info_system is not None:
            from edge.terminal_source import TerminalSource

            self.sources.append(TerminalSource.from_config(config))
        if config.cameras or config.terminals or config.info_system is not None:
            from edge.device_metrics import DeviceMetrics

            self.registry.register(DeviceMetrics(self.sources))
        if any(s.name in ("alarm_board", "sia_receiver") for s in self.sources):
            from firmware_bridge.link_metrics import LinkMetrics

            self.registry.register(LinkMetrics(self.sources, lambda: self.outbox))
        self.kill_after_commit = os.environ.get(FAULT_KILL_AFTER_COMMIT) == "1"
        self._rng = rng
        self.topics = Topics(config.node_id)
        self.boot_id = uuid.uuid4().hex
        self.sink: EventSink = _Sink(self)
        self.outbox: Outbox | None = None
        self.session: NodeSession | None = None
        #: Certificate renewal (edge.renew) when [broker.tls] is set; the session holds it as
        #: its ``renewal`` hooks, the agent runs its task and reports its expiry in health.
        self.renewer: CertRenewer | None = None
        self.sender: Sender | None = None
        #: Meetings (edge.meetings) when [meetings] is enabled.
        self.meetings: MeetingDesk | None = None
        self.accepting = False
        #: Clock time of the first event refused because the outbox disk is full; None while
        #: events are stored (health and status report it).
        self.disk_full_since: float | None = None
        self.disk_full_logged: float | None = None  # clock time of the last such log line
        #: Set once the outbox is open and every task started (events may be emitted).
        self.started = asyncio.Event()
        self._crash = asyncio.Event()
        self._started_at = time.monotonic()

    @property
    def connected(self) -> bool:
        return self.session is not None and self.session.connected

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "node_id": self.config.node_id,
            "boot_id": self.boot_id,
            "connected": self.connected,
            "outbox_depth": self.outbox.depth if self.outbox else None,
            "birth_seq": self.session.birth_seq if self.session else None,
            "outbox_disk_full_since": self.disk_full_since,
        }
        board = next((s for s in self.sources if s.name == "alarm_board"), None)
        if board is not None:  # `shilian edge doctor` shows the board's link state
            st["alarm_board"] = {"state": "up" if getattr(board, "link_up", False) else "down"}
        return st

    async def crash(self) -> None:
        """End :meth:`run` as a power cut would (no clean offline, no flush): the TCP
        connection is dropped now, so the broker publishes the will even if the caller cancels
        :meth:`run` right after."""
        self.accepting = False
        self._crash.set()
        if self.session is not None:
            self.session.abort()

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        self.outbox = outbox = await Outbox.open(
            cfg.outbox.path,
            node_id=cfg.node_id,
            boot_id=self.boot_id,
            max_events=cfg.outbox.max_events,
            max_batch=cfg.outbox.max_batch,
            clock=self.clock,
            mono=self.mono,
            on_drop=lambda p: self.metrics.dropped.labels(p.value).inc(),
        )
        self.metrics.outbox_depth.set(outbox.depth)
        fw = next((s for s in self.sources if isinstance(s, FirmwareTarget)), None)
        commands = CommandHandler(
            self.topics, self.boot_id, cfg.redacted, self.clock, fw, self.power
        )
        self.session = session = NodeSession(
            cfg,
            self.topics,
            outbox,
            commands,
            self.metrics,
            boot_id=self.boot_id,
            sw_version=SW_VERSION,
            clock=self.clock,
            backoff=Backoff(self._rng),
        )
        self.sender = sender = Sender(session, outbox, self.metrics, self.clock, self.mono)
        if cfg.broker.tls is not None:  # certificate renewal over MQTT (edge.renew)
            from edge.renew import CertRenewer

            self.renewer = CertRenewer(cfg, self.topics, session, self.registry, self.clock)
            self.renewer.recover()
            session.renewal = self.renewer
        if cfg.meetings.enabled:  # aiortc itself is imported only when a call arrives
            from edge.meetings import MeetingDesk

            self.meetings = MeetingDesk(cfg, self.topics, self.registry, self.clock)
            session.meetings = self.meetings
        try:
            async with asyncio.TaskGroup() as tg:
                core = [
                    tg.create_task(outbox.run(), name="outbox"),
                    tg.create_task(session.run(), name="session"),
                    tg.create_task(sender.run(), name="sender"),
                    tg.create_task(self._health(), name="health"),
                ]
                if self.renewer is not None:
                    core.append(tg.create_task(self.renewer.run(), name="renew"))
                intake = [tg.create_task(s.run(self.sink), name=s.name) for s in self.sources]
                if self.meetings is not None:
                    intake.append(tg.create_task(self.meetings.run(session), name="meetings"))
                if self.snapshots is not None:
                    intake.append(tg.create_task(self.snapshots.run(self.sink), name="snapshots"))
                if self.serve_local_socket:
                    api = LocalApi(cfg.local_socket.path, self.sink, self.status, fw)
                    ready = asyncio.Event()
                    intake.append(tg.create_task(api.run(ready), name="local_api"))
                    await ready.wait()
                if self.serve_metrics:
                    srv = MetricsServer(self.registry, cfg.metrics.host, cfg.metrics.port)
                    core.append(tg.create_task(srv.run(), name="metrics"))
                self.accepting = True
                self.started.set()
                await _first(stop.wait(), self._crash.wait())
                self.accepting = False
                if self._crash.is_set():
                    session.abort()
                else:
                    if self.meetings is not None:
                        await self.meetings.stop()  # hang-ups go out before the link closes
                    for t in intake:
                        t.cancel()
                    await self._drain(outbox)
                    await session.shutdown()
                    log.info("node %s: stopped cleanly", cfg.node_id)
                for t in [*intake, *core]:
                    t.cancel()
        finally:
            self.accepting = False
            await outbox.close()

    async def _drain(self, outbox: Outbox) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(outbox.empty.wait(), self.config.shutdown_flush_s)
        if outbox.depth:
            log.warning(
                "node %s: %d events still in the outbox at stop; sent on the next start",
                self.config.node_id,
                outbox.depth,
            )

    async def _health(self) -> None:
        assert self.session is not None and self.outbox is not None and self.sender is not None
        probe = HostProbe(self.config.outbox.path.parent)
        probe.cpu_pct()  # first sample: the next reading is a rate over the interval
        interval = self.config.health_interval_s
        while True:
            link = await self.session.wait_link()
            last = self.sender.last_puback
            h = Health(
                node=self.config.node_id,
                boot_id=self.boot_id,
                ts=self.clock(),
                interval_s=interval,
                uptime_s=time.monotonic() - self._started_at,
                sw_version=SW_VERSION,
                cpu_pct=probe.cpu_pct(),
                mem_used_pct=probe.mem_used_pct(),
                disk_used_pct=probe.disk_used_pct(),
                temp_c=probe.temp_c(),
                outbox_depth=self.outbox.depth,
                last_publish_age_s=max(0.0, self.mono() - last) if last is not None else None,
                cert_not_after=self.renewer.not_after if self.renewer else None,
                outbox_disk_full_since=self.disk_full_since,
            )
            try:
                await link.publish(self.topics.health, encode(h))
            except LinkError:
                continue  # reconnecting; next report after the reconnect
            except PublishRejected as e:
                self.metrics.rejected.labels(str(e.reason)).inc()
            await asyncio.sleep(interval)


async def _first(*aws: Any) -> None:
    """Wait until the first of ``aws`` completes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
