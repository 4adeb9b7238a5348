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
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from edge.backoff import Backoff
from edge.sources import EventSink
from firmware_bridge.alarms import AlarmKind
from firmware_bridge.link import (
    BoardInfo,
    EventKey,
    Heartbeat,
    InputChanged,
    LinkDown,
    LinkEvent,
    LinkUp,
    PanelMessage,
)
from firmware_bridge.transport import PortError
from firmware_bridge.zones import Report, Zone, Zones

log = logging.getLogger("shilian.firmware_bridge.board_source")

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

    @classmethod
    def from_config(cls, cfg: Any) -> BoardSource:
        """From ``edge.config.AlarmBoardConfig`` (typed loosely: edge.config stays importable
        without this package)."""
        zones = [
            Zone(
                z.input,
                AlarmKind(z.kind),
                z.name,
                normally_closed=z.normally_closed,
                debounce_ms=z.debounce_ms,
                always_armed=z.always_armed,
            )
            for z in cfg.zones
        ]
        return cls(zones, device=cfg.device, baudrate=cfg.baudrate, device_id=cfg.device_id)

    def _open_serial(self) -> AbstractAsyncContextManager[Port]:
        from firmware_bridge.transport import BoardPort

        port: AbstractAsyncContextManager[Port] = BoardPort.open(
            self.device, self.baudrate, clock=self.clock
        )
        return port

    async def run(self, sink: EventSink) -> None:
        async with asyncio.TaskGroup() as tg:
            publisher = tg.create_task(self._publish_device(sink), name="alarm_board_state")
            try:
                await self._serve(sink)
            finally:
                publisher.cancel()

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

    async def _pump(self, port: Port, sink: EventSink) -> None:
        queue: asyncio.Queue[LinkEvent | None] = asyncio.Queue(EVENT_QUEUE_MAX)

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
            log.debug(  # the transport logs the state change once, with the downtime
                "board %s: link up (board %s, firmware %s)",
                self.device_id,
                ev.board.board_id,
                ev.board.fw_version,
            )
            self._set_up(ev.board)
        elif isinstance(ev, LinkDown):
            self.stats["link_down"] += 1
            log.debug("board %s: link down (%s)", self.device_id, ev.reason)
            self._set_device("down", {"reason": ev.reason, **self._heartbeat})
        await self._settle(port, sink)

    async def _settle(self, port: Port, sink: EventSink) -> None:
        """Emit what the zones decided, each durably before its acks."""
        self.zones.on_timer(self.clock())
        for d in self.zones.decisions():
            if d.alarm is not None:
                a = d.alarm
                await sink.emit(a.priority, a.kind, a.device, a.event_data())
                self.stats["emitted"] += 1
            for key in d.acks:
                port.ack(key)  # after the emit: the alarm is in the outbox on disk
                self.stats["acked"] += 1

    # -- device state ---------------------------------------------------------------------------

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
        self._device_state = (state, detail)
        self._last_refresh = self.clock()
        self._device_changed.set()

    async def _publish_device(self, sink: EventSink) -> None:
        while True:
            await self._device_changed.wait()
            self._device_changed.clear()
            assert self._device_state is not None
            state, detail = self._device_state
            await sink.set_device(self.device_id, DEVICE_KIND, state, detail=detail)


def _bitmap(inputs: Sequence[bool]) -> int:
    """Inputs as an integer bitmap (bit ``n-1`` = input ``n`` active), compact in JSON."""
    return sum(1 << i for i, on in enumerate(inputs) if on)
