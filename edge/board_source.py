"""The village alarm board as an edge :class:`~edge.sources.EventSource`.

Opens the board's serial port (:mod:`firmware_bridge.transport`), turns its input changes and
relayed Contact ID messages into typed alarms (:mod:`firmware_bridge.zones`), and for each one
``await sink.emit(...)`` (durable: in the outbox on disk) and only THEN acknowledges the board
event. What survives what:

- the edge process dies before the emit returns: the board was not acknowledged and sends the
  event again to the next run (acknowledged only after the event is in the edge outbox);
- the line is cut or the board reboots: the board keeps unacknowledged events and retransmits;
  the link suppresses duplicates by (boot id, seq) and delivers in board order.

The board's state is published as the retained device state of ``device_id`` (kind
``alarm_board``): ``up`` with firmware version, board id, last heartbeat and the input bitmap on
link-up (refreshed at most every :data:`DEVICE_REFRESH_S`), ``down`` with the reason on
link-down or when the port cannot be opened. Publishing runs beside the alarm path so a slow
broker never delays an alarm reaching the outbox. Firmware updates of the board run beside
both (:mod:`edge.firmware_updater`); their progress is part of the device state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from edge.commands import FirmwareJob
from edge.firmware_job_store import JobStore
from edge.firmware_updater import FirmwareUpdater
from edge.sources import EventSink, emit_waiting_for_room
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
from resilience.backoff import Backoff

log = logging.getLogger("shilian.edge.board_source")

#: Device-state refresh while up: heartbeats come every second; a retained update every few
#: seconds keeps "last heartbeat" useful to an operator without a publish per heartbeat.
DEVICE_REFRESH_S = 5.0
#: Retry of a port that cannot be opened (unplugged USB adapter): backoff from 0.5 s, capped
#: at 5 s so a replugged board is back within seconds (up again soon after a replug).
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
    """Relayed Contact ID message → alarm or panel event (firmware_bridge.contact_id)."""
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
        firmware_key: Path | None = None,
        firmware_store: JobStore | None = None,
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
        #: Firmware updates of this board (edge.firmware_updater), run beside the alarm path;
        #: its progress is part of this device's state.
        self.firmware = FirmwareUpdater(
            device=device,
            device_id=device_id,
            clock=clock,
            key=firmware_key,
            store=firmware_store,
            on_change=self._republish,
        )

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
        return cls(
            zones,
            device=cfg.device,
            baudrate=cfg.baudrate,
            device_id=cfg.device_id,
            firmware_key=getattr(cfg, "firmware_public_key", None),
            firmware_store=JobStore(state_dir, cfg.device_id) if state_dir is not None else None,
        )

    def _open_serial(self) -> AbstractAsyncContextManager[Port]:
        from firmware_bridge.transport import BoardPort

        port: AbstractAsyncContextManager[Port] = BoardPort.open(
            self.device, self.baudrate, clock=self.clock
        )
        return port

    async def run(self, sink: EventSink) -> None:
        async with asyncio.TaskGroup() as tg:
            publisher = tg.create_task(self._publish_device(sink), name="alarm_board_state")
            updater = tg.create_task(self.firmware.run(sink), name="alarm_board_firmware")
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

    # -- firmware update (edge.commands.FirmwareTarget: the agent finds the board by these) ----

    def firmware_start(self, job: FirmwareJob) -> None:
        """Queue an update (:meth:`FirmwareUpdater.start`); FirmwareRefused if it cannot run."""
        self.firmware.start(job)

    def firmware_status(self) -> dict[str, Any]:
        return self.firmware.detail()

    # -- relays (edge.remediation.RelayBoard) ---------------------------------------------------

    async def pulse_relay(self, relay: int, off_ms: int) -> tuple[str, str]:
        """Pulse the board's relay output ``relay`` (power-cycle what it feeds):
        ``("acked", "")`` once the board confirmed it, else ``("failed", why zh / en)``."""
        from firmware_bridge.relay_frames import RESULT_TEXT, RelayResult
        from firmware_bridge.transport import BoardPort, RelayError

        port = BoardPort.find(self.device)
        if port is None or port.state != "up":
            return "failed", "报警板链路中断 / the board link is down"
        try:
            status = await port.pulse_relay(relay, off_ms)
        except RelayError as e:
            return "failed", str(e)
        if status.result is RelayResult.PULSING:
            return "acked", ""
        zh, en = RESULT_TEXT[status.result]
        return "failed", f"{zh} / {en}"

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
            self.firmware.link_up()  # a firmware job resumed at start waits for this
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
                await emit_waiting_for_room(
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
        self._device_state = (state, {**detail, **self.firmware.detail()})
        self._last_refresh = self.clock()
        self._device_changed.set()

    def _republish(self) -> None:
        if self._device_state is not None:
            self._set_device(*self._device_state)

    async def _publish_device(self, sink: EventSink) -> None:
        while True:
            await self._device_changed.wait()
            self._device_changed.clear()
            assert self._device_state is not None
            state, detail = self._device_state
            await sink.set_device(self.device_id, DEVICE_KIND, state, detail=detail)


def _link_counts(link: HostLink) -> Counter[str]:
    out = Counter(link.faults)
    out["duplicates"] += link.duplicates
    out["naks_sent"] += link.naks_sent
    return out


def _bitmap(inputs: Sequence[bool]) -> int:
    """Inputs as an integer bitmap (bit ``n-1`` = input ``n`` active), compact in JSON."""
    return sum(1 << i for i, on in enumerate(inputs) if on)
