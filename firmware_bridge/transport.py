"""asyncio transport of the board link over a real serial port (pyserial opens and configures
the port; reads and writes go through the event loop on its file descriptor).

::

    async with BoardPort.open("/dev/ttyUSB0") as port:
        async for ev in port.events():
            if isinstance(ev, InputChanged):
                await sink.emit(...)      # durable in the outbox
                port.ack(ev.key)          # only now may the board forget it

If the port fails later (USB adapter unplugged, pty closed) the link goes down
(``LinkDown("port_error")``) and the port is reopened every REOPEN_S until it is back; only a
failure of the very first open reaches the caller (:class:`PortError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import ClassVar, Literal

import serial

from firmware_bridge.link import (
    BoardInfo,
    EventKey,
    FirmwareStatus,
    Heartbeat,
    HostLink,
    LinkDown,
    LinkEvent,
    LinkUp,
    RelayAnswer,
)
from firmware_bridge.relay_frames import RelayPulse, RelayStatus

log = logging.getLogger("shilian.firmware_bridge.transport")

#: Reopen attempts of a failed port: a local device, so a steady 1 s is enough (no fleet-wide
#: thundering herd to jitter away).
REOPEN_S = 1.0
#: Read size per wakeup: a pty/UART rarely holds more; 115200 baud is 11.5 KB/s.
READ_SIZE = 4096
#: Heartbeats waiting for a slow consumer beyond this are dropped (each one carries the full
#: state, so only the latest matters); events that need an ACK are never dropped here (the
#: board's window bounds them).
HEARTBEAT_BACKLOG = 16
#: A fault of the board is logged at most once per this many seconds per reason.
FAULT_LOG_INTERVAL_S = 60.0
#: A RELAY_PULSE is answered at once (a round trip on the line is ~5 ms): no answer within
#: this, the frame or its answer was lost (noise) and the pulse is repeated with the same id.
RELAY_ANSWER_S = 1.0
#: Sends of one pulse before giving up (~3 s: the link timeout would have declared it down).
RELAY_TRIES = 3


class RelayError(Exception):
    """A relay pulse got no answer (``code``: link_down, no_answer); str is zh / en."""

    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(f"{zh} / {en}")
        self.code = code


class PortError(Exception):
    """The serial port cannot be opened (wrong path, permissions, device gone)."""


Listener = Callable[[LinkEvent], None]


class BoardPort:
    """An open board link; see the module docstring.

    A firmware update runs beside the event consumer on the same open port: it finds the port
    with :meth:`find`, sees every link event through :meth:`add_listener` (FW_STATUS only goes
    there) and writes with :meth:`send_firmware` (queued behind ACKs)."""

    #: Open ports by device path: the agent owns the port; an update borrows it.
    _open_ports: ClassVar[dict[str, BoardPort]] = {}

    def __init__(self, device: str, baudrate: int, clock: Callable[[], float]) -> None:
        self.device = device
        self.baudrate = baudrate
        self._clock = clock
        self.link = HostLink(clock())
        self._queue: asyncio.Queue[LinkEvent] = asyncio.Queue()
        self._heartbeats_queued = 0
        self._wake = asyncio.Event()
        self._serial: serial.Serial | None = None
        self._tx = bytearray()
        self._port_failed = asyncio.Event()
        self._down_since: float | None = clock()
        self._fault_logged: dict[str, float] = {}
        self._faults_seen: Counter[str] = Counter()
        self._listeners: list[Listener] = []
        #: RELAY_PULSE command ids: from a random start, so a restarted edge never repeats an
        #: id the board still remembers (it would answer without pulsing).
        self._relay_id = random.getrandbits(32)

    @property
    def state(self) -> Literal["up", "down"]:
        return self.link.state

    @property
    def board(self) -> BoardInfo | None:
        return self.link.board if self.link.state == "up" else None

    @property
    def faults(self) -> Counter[str]:
        return self.link.faults

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        device: str,
        baudrate: int = 115200,
        clock: Callable[[], float] = time.monotonic,
    ) -> AsyncIterator[BoardPort]:
        port = cls(device, baudrate, clock)
        port._open_serial()  # a failure here reaches the caller
        cls._open_ports[device] = port
        try:
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(port._run(), name=f"board-port {device}")
                try:
                    yield port
                finally:
                    task.cancel()
        finally:
            if cls._open_ports.get(device) is port:
                del cls._open_ports[device]
            port._close_serial("port_closed")

    @classmethod
    def find(cls, device: str) -> BoardPort | None:
        """The open port of ``device`` in this process, if any."""
        return cls._open_ports.get(device)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every link event (synchronously, in the event loop);
        returns the function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def send_firmware(self, data: bytes) -> None:
        """Write encoded FW_* frames (after any pending ACKs)."""
        self.link.send_firmware(data)
        self._flush()

    async def pulse_relay(self, relay: int, off_ms: int) -> RelayStatus:
        """Pulse relay output ``relay`` for ``off_ms`` (power-cycle what it feeds); the board's
        answer. The pulse is repeated with the same command id (the board pulses once per id)
        every :data:`RELAY_ANSWER_S` up to :data:`RELAY_TRIES` times; :class:`RelayError`
        when the link is down or the board never answers."""
        self._relay_id = (self._relay_id + 1) & 0xFFFFFFFF
        pulse = RelayPulse(self._relay_id, relay, off_ms)
        answer: asyncio.Future[RelayStatus] = asyncio.get_running_loop().create_future()

        def listen(ev: LinkEvent) -> None:
            mine = isinstance(ev, RelayAnswer) and ev.status.command_id == pulse.command_id
            if mine and not answer.done():
                assert isinstance(ev, RelayAnswer)
                answer.set_result(ev.status)

        remove = self.add_listener(listen)
        try:
            for _ in range(RELAY_TRIES):
                if not self.link.send_relay(pulse):
                    raise RelayError("link_down", "报警板链路中断", "the board link is down")
                self._flush()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RELAY_ANSWER_S):
                        return await asyncio.shield(answer)
            raise RelayError("no_answer", "报警板未应答", "the board did not answer")
        finally:
            remove()

    def ack(self, key: EventKey) -> None:
        """The event is durable on the edge box: tell the board."""
        self.link.ack(key)
        self._flush()

    async def events(self) -> AsyncIterator[LinkEvent]:
        while True:
            ev = await self._queue.get()
            if isinstance(ev, Heartbeat):
                self._heartbeats_queued -= 1
            yield ev

    # -- internals --------------------------------------------------------------------------

    def _open_serial(self) -> None:
        try:
            ser = serial.Serial(self.device, self.baudrate, timeout=0, exclusive=True)
        except (serial.SerialException, OSError) as e:
            raise PortError(f"无法打开串口 {self.device} / cannot open serial port: {e}") from e
        self._serial = ser
        os.set_blocking(ser.fileno(), False)
        loop = asyncio.get_running_loop()
        loop.add_reader(ser.fileno(), self._on_readable)
        self.link.open(self._clock())
        self._flush()

    def _close_serial(self, reason: str) -> None:
        ser, self._serial = self._serial, None
        self._tx.clear()
        if ser is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(ser.fileno())
            loop.remove_writer(ser.fileno())
            with contextlib.suppress(OSError, serial.SerialException):
                ser.close()
        self.link.close(self._clock(), reason)
        self._drain_events()

    def _on_readable(self) -> None:
        if self._serial is None:
            return
        try:
            data = os.read(self._serial.fileno(), READ_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            self._fail(e)
            return
        if not data:
            self._fail(OSError("end of file on the serial port"))
            return
        self.link.receive_data(data, self._clock())
        self._flush()
        self._drain_events()
        self._wake.set()

    def _flush(self) -> None:
        self._tx += self.link.data_to_send()
        if self._serial is None or not self._tx:
            return
        fd = self._serial.fileno()
        try:
            n = os.write(fd, self._tx)
        except BlockingIOError:
            n = 0
        except OSError as e:
            self._fail(e)
            return
        del self._tx[:n]
        loop = asyncio.get_running_loop()
        if self._tx:
            loop.add_writer(fd, self._flush)
        else:
            loop.remove_writer(fd)

    def _fail(self, err: OSError) -> None:
        log.warning("serial port %s failed: %s", self.device, err)
        self._close_serial("port_error")
        self._port_failed.set()
        self._wake.set()

    def _drain_events(self) -> None:
        for ev in self.link.events():
            for listener in list(self._listeners):
                listener(ev)
            if isinstance(ev, FirmwareStatus | RelayAnswer):
                continue  # only the update, or the pulse waiting for its answer, listens
            if isinstance(ev, Heartbeat):
                if self._heartbeats_queued >= HEARTBEAT_BACKLOG:
                    continue
                self._heartbeats_queued += 1
            elif isinstance(ev, LinkUp):
                down = self._clock() - self._down_since if self._down_since is not None else 0
                self._down_since = None
                log.info(
                    "board link up: %s fw %s boot %08x (down %.1f s)",
                    ev.board.board_id,
                    ev.board.fw_version,
                    ev.board.boot_id,
                    down,
                )
            elif isinstance(ev, LinkDown):
                self._down_since = self._clock()
                log.warning("board link down on %s: %s", self.device, ev.reason)
            self._queue.put_nowait(ev)
        self._log_faults()

    def _log_faults(self) -> None:
        now = self._clock()
        for reason, count in self.link.faults.items():
            if count == self._faults_seen[reason]:
                continue
            if now - self._fault_logged.get(reason, -FAULT_LOG_INTERVAL_S) >= FAULT_LOG_INTERVAL_S:
                self._fault_logged[reason] = now
                log.warning("board link fault %s on %s (total %d)", reason, self.device, count)
            self._faults_seen[reason] = count

    async def _run(self) -> None:
        while True:
            if self._port_failed.is_set():
                await asyncio.sleep(REOPEN_S)
                try:
                    self._open_serial()
                except PortError as e:
                    log.debug("reopen failed: %s", e)
                    continue
                self._port_failed.clear()
                continue
            delay = max(0.0, self.link.next_deadline() - self._clock())
            self._wake.clear()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            # that races with the wake-up, and the port would never close.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self.link.on_timer(self._clock())
            self._flush()
            self._drain_events()
