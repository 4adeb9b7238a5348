"""The village alarm board as an edge :class:`~edge.sources.EventSource`.

Opens the board's serial port (:mod:`firmware_bridge.transport`), turns its input changes and
relayed Contact ID messages into typed alarms (:mod:`firmware_bridge.zones`), and for each one
``await sink.emit(...)`` (durable: in the outbox on disk) and only THEN acknowledges the board
event. What survives what:

- the edge process dies before the emit returns: the board was not acknowledged and sends the
  event again to the next run (issue 4: "ACK only after the event is in the edge outbox");
- the line is cut or the board reboots: the board keeps unacknowledged events and retransmits;
  the link suppresses duplicates by (boot id, seq) and delivers in board order.

The board's state is published as the retained device state of ``device_id`` (kind
``alarm_board``): ``up`` with firmware version, board id, last heartbeat and the input bitmap on
link-up (refreshed at most every :data:`DEVICE_REFRESH_S`), ``down`` with the reason on
link-down or when the port cannot be opened. Publishing runs beside the alarm path so a slow
broker never delays an alarm reaching the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from edge.backoff import Backoff
from edge.commands import MAX_FIRMWARE_BYTES, FirmwareJob, FirmwareRefused
from edge.firmware_jobs import MAX_JOB_ATTEMPTS, JobStore, PendingJob
from edge.outbox import DISK_FULL_RETRY_S, OutboxDiskFull
from edge.sources import EventSink
from firmware_bridge.alarms import AlarmKind
from firmware_bridge.link import (
    BoardInfo,
    EventKey,
    Heartbeat,
    HostLink,
    InputChanged,
    LinkDown,
    LinkEvent,
    LinkUp,
    PanelMessage,
)
from firmware_bridge.transport import PortError
from firmware_bridge.zones import Debounce, Report, Zone, Zones

log = logging.getLogger("shilian.edge.board_source")

#: Device-state refresh while up: heartbeats come every second; a retained update every few
#: seconds keeps "last heartbeat" useful to an operator without a publish per heartbeat.
DEVICE_REFRESH_S = 5.0
#: Retry of a port that cannot be opened (unplugged USB adapter): backoff from 0.5 s, capped
#: at 5 s so a replugged board is back within seconds (issue 4: "up again on replug").
REOPEN_BASE_S = 0.5
REOPEN_CAP_S = 5.0
#: Link events buffered between the port reader and the alarm path (the board has at most a
#: few dozen events in flight; more means the outbox is stalled and the board holds the rest).
EVENT_QUEUE_MAX = 1024

DEVICE_KIND = "alarm_board"


class Port(Protocol):
    """What the source needs of :class:`firmware_bridge.transport.BoardPort`."""

    @property
    def board(self) -> BoardInfo | None: ...
    def events(self) -> AsyncIterator[LinkEvent]: ...
    def ack(self, key: EventKey) -> None: ...


Opener = Callable[[], AbstractAsyncContextManager[Port]]


def contact_id_parser(device: str, raw: str) -> Report:
    """Relayed Contact ID message → alarm or panel event (helper P's parser)."""
    from firmware_bridge import contact_id

    return contact_id.to_event(contact_id.parse(raw), device)


class BoardSource:
    """An :class:`~edge.sources.EventSource`; ``stats`` counts alarms and acks for operators."""

    name = "alarm_board"

    def __init__(
        self,
        zones: Sequence[Zone],
        *,
        device: str,
        baudrate: int = 115200,
        device_id: str = "alarm_board",
        clock: Callable[[], float] = time.monotonic,
        opener: Opener | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.device = device
        self.baudrate = baudrate
        self.device_id = device_id
        self.clock = clock
        self.zones: Zones[EventKey] = Zones(zones, device=device_id, panel_parser=contact_id_parser)
        self._opener = opener or self._open_serial
        self._backoff = backoff or Backoff(base=REOPEN_BASE_S, cap=REOPEN_CAP_S)
        self.stats: dict[str, int] = {"emitted": 0, "acked": 0, "link_up": 0, "link_down": 0}
        self._device_state: tuple[str, dict[str, Any]] | None = None
        self._device_changed = asyncio.Event()
        self._last_refresh = float("-inf")
        self._heartbeat: dict[str, Any] = {}
        #: Link counters of ports closed since start (each open has a fresh HostLink) and the
        #: current port's link; :meth:`link_counters` adds them up for the metrics.
        self._past_link: Counter[str] = Counter()
        self._link: HostLink | None = None
        self.link_downs: Counter[str] = Counter()
        self.board_id: str | None = None

    @classmethod
    def from_config(cls, cfg: Any, *, state_dir: Path | None = None) -> BoardSource:
        """From ``edge.config.AlarmBoardConfig`` (typed loosely: edge.config stays importable
        without this package); ``state_dir`` (the outbox's directory) keeps a firmware update
        job across restarts."""
        zones = [
            Zone(
                z.input,
                AlarmKind(z.kind),
                z.name,
                normally_closed=z.normally_closed,
                debounce_ms=z.debounce_ms,
                always_armed=z.always_armed,
                debounce=Debounce(z.debounce),
            )
            for z in cfg.zones
        ]
        src = cls(zones, device=cfg.device, baudrate=cfg.baudrate, device_id=cfg.device_id)
        src.firmware_key = getattr(cfg, "firmware_public_key", None)  # firmware update (H1)
        if state_dir is not None:
            src.firmware_store = JobStore(state_dir, cfg.device_id)
        return src

    def _open_serial(self) -> AbstractAsyncContextManager[Port]:
        from firmware_bridge.transport import BoardPort

        port: AbstractAsyncContextManager[Port] = BoardPort.open(
            self.device, self.baudrate, clock=self.clock
        )
        return port

    async def run(self, sink: EventSink) -> None:
        async with asyncio.TaskGroup() as tg:
            publisher = tg.create_task(self._publish_device(sink), name="alarm_board_state")
            updater = tg.create_task(self._firmware_worker(sink), name="alarm_board_firmware")
            try:
                await self._serve(sink)
            finally:
                publisher.cancel()
                updater.cancel()

    async def _serve(self, sink: EventSink) -> None:
        failing = False
        while True:
            try:
                async with self._opener() as port:
                    if failing:
                        log.info("board %s: port %s open again", self.device_id, self.device)
                    failing = False
                    self._backoff.reset()
                    await self._pump(port, sink)
            except (PortError, OSError) as e:  # no such device, unplugged, permission: retry
                if not failing:
                    log.warning(
                        "board %s: cannot use port %s (%s); retrying",
                        self.device_id,
                        self.device,
                        e,
                    )
                failing = True
                self._set_device("down", {"reason": "port_error", "error": str(e)[:200]})
            await asyncio.sleep(self._backoff.next())

    @property
    def link_up(self) -> bool:
        return self._device_state is not None and self._device_state[0] == "up"

    @property
    def heartbeat(self) -> dict[str, Any]:
        """The newest heartbeat's detail (``queued``, ``dropped``, ``inputs``), if any."""
        return self._heartbeat

    def link_counters(self) -> Counter[str]:
        """Link faults by reason (framing and protocol), ``duplicates`` (retransmissions of
        delivered events, suppressed) and ``naks_sent``, since the source started."""
        out = Counter(self._past_link)
        if self._link is not None:
            out.update(_link_counts(self._link))
        return out

    async def _pump(self, port: Port, sink: EventSink) -> None:
        queue: asyncio.Queue[LinkEvent | None] = asyncio.Queue(EVENT_QUEUE_MAX)
        link = getattr(port, "link", None)  # a BoardPort's HostLink (absent on test ports)
        self._link = link if isinstance(link, HostLink) else None

        async def read() -> None:
            async for ev in port.events():
                await queue.put(ev)
            await queue.put(None)  # the port's event stream ended (closed)

        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(read(), name="alarm_board_read")
            try:
                while (ev := await self._next_event(queue, port, sink)) is not None:
                    await self._handle(ev, port, sink)
            finally:
                reader.cancel()
                if self._link is not None:
                    self._past_link.update(_link_counts(self._link))
                    self._link = None

    async def _next_event(
        self, queue: asyncio.Queue[LinkEvent | None], port: Port, sink: EventSink
    ) -> LinkEvent | None:
        """The next link event; meanwhile settle debounced changes when they fall due."""
        while True:
            await self._settle(port, sink)
            deadline = self.zones.next_deadline()
            delay = None if deadline is None else max(0.0, deadline - self.clock())
            try:
                async with asyncio.timeout(delay):
                    return await queue.get()  # cancelling a get() loses nothing
            except TimeoutError:
                continue

    async def _handle(self, ev: LinkEvent, port: Port, sink: EventSink) -> None:
        now = self.clock()
        if isinstance(ev, InputChanged):
            self.zones.input_changed(
                ev.key, ev.input_no, ev.active, ev.board_ms, now, boot=ev.key.boot_id
            )
            self._heartbeat["inputs"] = _bitmap(ev.inputs)
        elif isinstance(ev, PanelMessage):
            self.zones.observe_clock(ev.key.boot_id, ev.board_ms, now)
            self.zones.panel_message(ev.key, ev.raw)
        elif isinstance(ev, Heartbeat):
            if port.board is not None:
                self.zones.observe_clock(port.board.boot_id, ev.board_ms, now)
            self._heartbeat = {
                "last_heartbeat": time.time(),
                "inputs": _bitmap(ev.inputs),
                "queued": ev.queued,
                "dropped": ev.dropped,
            }
            if now - self._last_refresh >= DEVICE_REFRESH_S:
                self._set_up(port.board)
        elif isinstance(ev, LinkUp):
            self.stats["link_up"] += 1
            self.board_id = ev.board.board_id
            log.debug(  # the transport logs the state change once, with the downtime
                "board %s: link up (board %s, firmware %s)",
                self.device_id,
                ev.board.board_id,
                ev.board.fw_version,
            )
            self._set_up(ev.board)
            if self._fw_link is not None:
                self._fw_link.set()  # a firmware job resumed at start waits for this
        elif isinstance(ev, LinkDown):
            self.stats["link_down"] += 1
            self.link_downs[ev.reason] += 1
            log.debug("board %s: link down (%s)", self.device_id, ev.reason)
            self._set_device("down", {"reason": ev.reason, **self._heartbeat})
        await self._settle(port, sink)

    async def _settle(self, port: Port, sink: EventSink) -> None:
        """Emit what the zones decided, each durably before its acks."""
        self.zones.on_timer(self.clock())
        for d in self.zones.decisions():
            if d.alarm is not None:
                a = d.alarm
                # The first board event behind the alarm names it: after an edge crash
                # between this commit and the ack, the board retransmits it and the outbox
                # returns the stored event instead of storing a second one.
                await _emit_waiting_for_room(
                    sink, a.priority, a.kind, a.device, a.event_data(), self._idem_key(d.acks[0])
                )
                self.stats["emitted"] += 1
            for key in d.acks:
                port.ack(key)  # after the emit: the alarm is in the outbox on disk
                self.stats["acked"] += 1

    # -- device state ---------------------------------------------------------------------------

    def _idem_key(self, key: EventKey) -> str:
        return f"board:{self.device_id}:{self.board_id or '?'}:{key.boot_id:08x}:{key.seq}"

    def _set_up(self, board: BoardInfo | None) -> None:
        detail: dict[str, Any] = dict(self._heartbeat)
        if board is not None:
            detail.update(
                board_id=board.board_id,
                fw_version=board.fw_version,
                protocol_version=board.protocol_version,
                n_inputs=board.n_inputs,
            )
        self._set_device("up", detail)

    def _set_device(self, state: str, detail: dict[str, Any]) -> None:
        self._device_state = (state, {**detail, **self._firmware_detail()})
        self._last_refresh = self.clock()
        self._device_changed.set()

    async def _publish_device(self, sink: EventSink) -> None:
        while True:
            await self._device_changed.wait()
            self._device_changed.clear()
            assert self._device_state is not None
            state, detail = self._device_state
            await sink.set_device(self.device_id, DEVICE_KIND, state, detail=detail)

    # -- firmware update (helper H1; issue 4 item 6) ---------------------------------------
    # One job at a time, queued by the firmware-update command or the local API and run here,
    # beside the alarm path on the same open port (firmware_bridge.flasher). Progress and
    # outcome are merged into this device's retained state (``firmware_version``, ``update``)
    # and the end is an event of kind ``firmware_update``. With a ``firmware_store`` (the
    # agent's, next to the outbox) an accepted job and its verified image are on disk until
    # the job ends: an agent that restarts mid-update resumes it once the board link is up.

    firmware_key: Path | None = None  # public key file (AlarmBoardConfig.firmware_public_key)
    firmware_store: JobStore | None = None
    _fw_jobs: asyncio.Queue[PendingJob] | None = None
    _fw_update: dict[str, Any] | None = None
    _fw_busy = False
    _fw_version: str | None = None
    _fw_link: asyncio.Event | None = None

    def firmware_start(self, job: FirmwareJob) -> None:
        """Queue an update (edge.commands.FirmwareTarget); FirmwareRefused if it cannot run.
        The job is on disk before this returns (the command's reply says "started")."""
        from firmware_bridge.transport import BoardPort

        if self.firmware_key is None:
            raise FirmwareRefused(
                "no_key", "未配置固件公钥，拒绝升级", "no firmware public key configured"
            )
        if self._fw_busy or self._fw_jobs is None:
            raise FirmwareRefused("busy", "已有升级在进行", "an update is already running")
        port = BoardPort.find(self.device)
        if port is None or port.board is None:
            raise FirmwareRefused("no_board", "报警板未连接", "the alarm board is not connected")
        pending = PendingJob.of(job, job_id=uuid.uuid4().hex)
        if self.firmware_store is not None:
            try:
                self.firmware_store.save(pending)
            except OSError as e:
                log.warning("board %s: cannot store the firmware job (%s)", self.device_id, e)
                raise FirmwareRefused(
                    "storage",
                    f"无法保存升级任务（{e.strerror or e}），请检查磁盘",
                    f"cannot store the update job ({e.strerror or e}); check the disk",
                ) from e
        self._fw_busy = True
        self._fw_update = {"state": "queued", "bytes": 0, "total": job.size, "result": None}
        self._fw_jobs.put_nowait(pending)

    def firmware_status(self) -> dict[str, Any]:
        return self._firmware_detail()

    def _firmware_detail(self) -> dict[str, Any]:
        from firmware_bridge.transport import BoardPort

        port = BoardPort.find(self.device) if self._fw_jobs is not None else None
        board = port.board if port is not None else None
        out: dict[str, Any] = {}
        if board is not None:
            self._fw_version = board.fw_version
            out["firmware_state"] = ("normal", "trial", "rolled_back")[min(board.boot_state, 2)]
            if board.rollback_reason:
                out["rollback_reason"] = board.rollback_reason
        if self._fw_version is not None:
            out["firmware_version"] = self._fw_version
        if self._fw_update is not None:
            out["update"] = dict(self._fw_update)
        return out

    def _republish(self) -> None:
        if self._device_state is not None:
            self._set_device(*self._device_state)

    async def _firmware_worker(self, sink: EventSink) -> None:
        self._fw_jobs = asyncio.Queue(1)
        self._fw_link = asyncio.Event()
        store = self.firmware_store
        pending = await asyncio.to_thread(store.load) if store is not None else None
        if store is not None and pending is not None:
            # Accepted by an earlier run and not finished: count this start (a job that keeps
            # killing the agent is given up), then run it as if just queued.
            pending = replace(pending, attempts=pending.attempts + 1)
            self._fw_busy = True
            self._fw_update = {
                "state": "queued",
                "bytes": 0,
                "total": pending.size,
                "result": None,
                "resumed": True,
            }
            if pending.attempts > MAX_JOB_ATTEMPTS:
                await self._firmware_end(sink, pending, "too_many_restarts", "", pending.version)
            else:
                try:
                    await asyncio.to_thread(store.save, pending)
                except OSError as e:  # run it anyway; only this start goes uncounted
                    log.warning("board %s: cannot update the firmware job (%s)", self.device_id, e)
                log.info(
                    "board %s: resuming firmware update %s (start %d)",
                    self.device_id,
                    pending.sha256,
                    pending.attempts,
                )
                self._fw_jobs.put_nowait(pending)
        while True:
            pending = await self._fw_jobs.get()
            if pending.attempts > 0:  # resumed: the port may not be open yet
                await self._fw_link.wait()
            try:
                result, detail, version = await self._firmware_job(pending)
            except Exception as e:  # a bug or an unexpected I/O error: report, keep running
                log.exception("board %s: firmware update failed", self.device_id)
                result, detail, version = "error", str(e)[:200], None
            await self._firmware_end(sink, pending, result, detail, version)

    async def _firmware_end(
        self, sink: EventSink, pending: PendingJob, result: str, detail: str, version: str | None
    ) -> None:
        """Report the outcome, then forget the job: a crash in between repeats the job (the
        board answers "already"), and the event's key keeps it single at central."""
        assert self._fw_update is not None
        self._fw_update.update(state="done", result=result, detail=detail)
        self._fw_busy = False
        self._republish()
        log.info("board %s: firmware update %s %s", self.device_id, result, detail)
        data = {"result": result, "detail": detail, "version": version, "sha256": pending.sha256}
        key = f"fw:{self.device_id}:{pending.job_id}" if pending.job_id else None
        await _emit_waiting_for_room(sink, "device", "firmware_update", self.device_id, data, key)
        if self.firmware_store is not None:
            await asyncio.to_thread(self.firmware_store.clear)

    async def _firmware_image(self, pending: PendingJob) -> bytes:
        """The image bytes: the stored copy of a resumed job, else downloaded (or read)."""
        store = self.firmware_store
        if store is not None and pending.state == "flashing":
            data = await asyncio.to_thread(store.load_image)
            if data is not None:
                return data
            log.warning("board %s: stored firmware image missing; downloading", self.device_id)
        return await asyncio.to_thread(_fetch_image, pending.job())

    async def _firmware_job(self, pending: PendingJob) -> tuple[str, str, str | None]:
        from firmware_bridge import image as fw_image
        from firmware_bridge.flasher import flash
        from firmware_bridge.transport import BoardPort
        from firmware_bridge.update import Progress

        assert self._fw_update is not None
        if self.firmware_key is None:  # resumed after the key was removed from the config
            return "no_key", "no firmware public key configured", None
        self._fw_update["state"] = "downloading"
        self._republish()
        try:
            data = await self._firmware_image(pending)
            key = fw_image.load_key(self.firmware_key, fw_image.PUBLIC_KEY_SIZE)
            img = fw_image.verify(data, key, image_id=pending.sha256)
        except fw_image.ImageError as e:
            return e.fault.value, str(e), None
        except (OSError, ValueError) as e:
            return "download_failed", str(e)[:200], None
        if self.firmware_store is not None and pending.state != "flashing":
            # Verified: keep it, so a restart from here on does not download again.
            try:
                await asyncio.to_thread(
                    self.firmware_store.save_image, data, replace(pending, version=img.version)
                )
            except OSError as e:  # flash anyway: a restart would download again
                log.warning("board %s: cannot store the firmware image (%s)", self.device_id, e)
        self._fw_update.update(version=img.version, sha256=img.image_id, total=len(img.signed))
        port = BoardPort.find(self.device)
        if port is None:
            return "no_board", "", img.version
        last = [0.0]

        def progress(p: Progress) -> None:
            assert self._fw_update is not None
            changed = self._fw_update.get("state") != p.phase.value
            self._fw_update.update(
                state=p.phase.value, bytes=p.sent, total=p.total, resumed_from=p.resumed_from
            )
            if changed or self.clock() - last[0] >= FIRMWARE_PROGRESS_S:
                last[0] = self.clock()
                self._republish()

        final = await flash(port, img, clock=self.clock, on_progress=progress)
        assert final.result is not None
        return final.result.value, final.detail, img.version


def _link_counts(link: HostLink) -> Counter[str]:
    out = Counter(link.faults)
    out["duplicates"] += link.duplicates
    out["naks_sent"] += link.naks_sent
    return out


# -- firmware update (H1): the image download -----------------------------------------------

#: Device-state publishes of update progress at most this often (plus every phase change).
FIRMWARE_PROGRESS_S = 2.0
#: Download timeout per socket operation.
FIRMWARE_HTTP_TIMEOUT_S = 30.0


def _fetch_image(job: FirmwareJob) -> bytes:
    """The image bytes (blocking: run in a thread). stdlib urllib: no extra import weight."""
    limit = job.size if job.size is not None else MAX_FIRMWARE_BYTES
    if job.path is not None:
        with open(job.path, "rb") as f:
            data = f.read(MAX_FIRMWARE_BYTES + 1)
    else:
        import urllib.request

        assert job.url is not None
        with urllib.request.urlopen(job.url, timeout=FIRMWARE_HTTP_TIMEOUT_S) as resp:
            data = resp.read(limit + 1)
    if len(data) > limit or (job.size is not None and len(data) != job.size):
        raise ValueError(f"下载大小不符 / size mismatch: {len(data)} bytes, expected {limit}")
    return bytes(data)


# -- end of firmware update (H1) ------------------------------------------------------------


def _bitmap(inputs: Sequence[bool]) -> int:
    """Inputs as an integer bitmap (bit ``n-1`` = input ``n`` active), compact in JSON."""
    return sum(1 << i for i, on in enumerate(inputs) if on)


async def _emit_waiting_for_room(
    sink: EventSink,
    priority: str,
    kind: str,
    device: str | None,
    data: dict[str, Any],
    key: str | None,
) -> None:
    """Emit; while the outbox disk is full, try again every second (the sink counts each
    refusal) instead of failing. The board is acknowledged only after this returns, so it keeps
    the event (and everything after it) meanwhile; the zones decided the alarm before the emit,
    so failing here would lose it. Sending stored events deletes them and makes the room."""
    while True:
        try:
            await sink.emit(priority, kind, device, data, key=key)
            return
        except OutboxDiskFull:
            await asyncio.sleep(DISK_FULL_RETRY_S)
