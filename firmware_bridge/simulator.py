"""The village alarm board, simulated over a pty pair (no mocked serial port).

The simulator holds the master side of ``os.openpty()``; the edge opens :attr:`slave_path`
with pyserial as it would ``/dev/ttyUSB0``. The board's protocol is :class:`BoardCore`;
bytes in both directions are paced at the configured baud (8N1: baud/10 bytes per second,
11,520 B/s at 115200) so timing is realistic: the board reads at most RX_CHUNK bytes per line
interval and the rest waits in the pty buffer, as it would in a UART's (a pty ignores baud).

Firmware update: the board has a bootloader (:mod:`firmware_bridge.bootloader`) holding
``public_key``, two slots and a trial watchdog of ``trial_s``; with ``flash_dir`` its slots
and a partial image survive a restart of the simulator. Images built with
``shilian firmware sign --sim-behaviour no-heartbeat|crash`` fail their trial and roll back.

Faults it injects: ``cut(seconds)`` (both directions dropped, as an unplugged cable; the board
keeps running and queues what happens meanwhile), ``set_noise(rate)`` (each byte in either
direction gets one bit flipped with probability ``rate``), ``reboot()`` (new boot id, seqs from
1; unacknowledged events stay queued, as in flash, unless ``keep_queue=False``).

Tests use :func:`simulate_board`; ``shilian firmware-sim`` (``firmware_bridge/cli.py``) drives
it with a line script (see :data:`SCRIPT_HELP`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import random
import time
import tty
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from firmware_bridge.board import BoardCore
from firmware_bridge.bootloader import TRIAL_S, Bootloader
from firmware_bridge.framing import EventKey

#: Bytes taken from the board per pacing step (at least one whole frame): 64 bytes is
#: ~5.6 ms of line time at 115200 baud, like a small UART FIFO.
TX_CHUNK = 64
#: Bytes the board reads per line interval (host to board), like a small UART FIFO.
RX_CHUNK = 64
#: Shortest sleep of the board loop while an event waits for the paced writer.
MIN_WAIT_S = 0.002
#: Bits per byte on an 8N1 line (start + 8 data + stop).
BITS_PER_BYTE = 10

SCRIPT_HELP = """\
命令 / commands (one per line):
  press N [HOLD_S]   按下紧急按钮 N / press panic button N (released after HOLD_S, default 0.2)
  open N | close N   门磁 N 打开/关闭 / door contact N opens/closes
  pir N              红外 N 触发 / PIR N triggers (momentary)
  tamper N           防拆 N 触发 / tamper N active;   restore N: input N back to normal
  cid DIGITS         转发 Contact ID 报文 / relay a Contact ID message (16 digits)
  cut SECONDS        断线 / cut the line;   replug: end a cut now
  noise RATE         误码率（每字节）/ bit errors per byte, e.g. 0.01
  reboot [lose]      重启（lose：丢弃未确认事件）/ reboot (lose: drop unacked events)
  firmware           固件槽位与升级状态 / firmware slots and update state
  sleep SECONDS      等待 / wait;   status: 状态 / show state;   quit: 退出 / exit"""


class BoardSimulator:
    """One simulated board; create with :func:`simulate_board` (or call :meth:`run`)."""

    def __init__(
        self,
        *,
        n_inputs: int = 8,
        board_id: str = "SIM-0001",
        fw_version: str = "1.0.0",
        baudrate: int = 115200,
        noise: float = 0.0,
        seed: int | None = None,
        link_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        board_model: str = "SIM-BOARD",
        public_key: bytes | None = None,
        trial_s: float = TRIAL_S,
        flash_dir: Path | None = None,
        n_relays: int = 4,
    ) -> None:
        self._clock = clock
        self._rng = random.Random(seed)
        self.bootloader = Bootloader(
            public_key=public_key,
            board_model=board_model,
            factory_version=fw_version,
            trial_s=trial_s,
            flash_dir=flash_dir,
        )
        self.core = BoardCore(
            clock(),
            board_id=board_id,
            fw_version=fw_version,
            n_inputs=n_inputs,
            rng=lambda: self._rng.getrandbits(32),
            bootloader=self.bootloader,
            n_relays=n_relays,
        )
        self.bytes_per_s = baudrate / BITS_PER_BYTE
        self.noise = noise
        self.link_path = link_path
        self.bytes_out = 0
        self.bytes_in = 0
        self.bits_flipped = 0
        self._cut_until = 0.0
        self._master = -1
        self._slave = -1
        self.slave_path = ""
        self._tx_ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._timers: list[tuple[float, int, Callable[[], object]]] = []
        self._timer_seq = 0
        self._reading = False

    # -- script actions (call from the event loop's thread) ---------------------------------

    def press(self, input_no: int, hold_s: float = 0.0) -> EventKey | None:
        """Momentary input (panic button): active now, inactive after ``hold_s``."""
        now = self._clock()
        key = self.core.set_input(input_no, True, now)
        if hold_s <= 0:
            self.core.set_input(input_no, False, now)
        else:
            self._at(now + hold_s, lambda: self.core.set_input(input_no, False, self._clock()))
        self._kick()
        return key

    def set_input(self, input_no: int, active: bool) -> EventKey | None:
        key = self.core.set_input(input_no, active, self._clock())
        self._kick()
        return key

    def open_door(self, input_no: int) -> EventKey | None:
        return self.set_input(input_no, True)

    def close_door(self, input_no: int) -> EventKey | None:
        return self.set_input(input_no, False)

    def pir(self, input_no: int) -> EventKey | None:
        return self.press(input_no, hold_s=0.5)

    def tamper(self, input_no: int) -> EventKey | None:
        return self.set_input(input_no, True)

    def restore(self, input_no: int) -> EventKey | None:
        return self.set_input(input_no, False)

    def panel(self, raw: str) -> EventKey | None:
        """Relay a message from the local alarm panel (Contact ID: 16 digits)."""
        key = self.core.panel_message(raw, self._clock())
        self._kick()
        return key

    def cut(self, seconds: float) -> None:
        """Unplug the cable for ``seconds`` (bytes in flight are lost)."""
        self._cut_until = self._clock() + seconds
        self._kick()

    def replug(self) -> None:
        self._cut_until = 0.0
        self._kick()

    @property
    def is_cut(self) -> bool:
        return self._clock() < self._cut_until

    def set_noise(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("noise rate must be in 0..1")
        self.noise = rate

    def reboot(self, keep_queue: bool = True) -> None:
        self.core.reboot(self._clock(), keep_queue=keep_queue)
        self._kick()

    # -- the pty and the loop ---------------------------------------------------------------

    def open_pty(self) -> None:
        self._master, self._slave = os.openpty()
        # Raw: no echo, no line discipline (pyserial sets the same when it opens the slave).
        tty.setraw(self._slave)
        tty.setraw(self._master)
        os.set_blocking(self._master, False)
        self.slave_path = os.ttyname(self._slave)
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link_path.unlink()
            self.link_path.symlink_to(self.slave_path)

    def close_pty(self) -> None:
        if self.link_path is not None and self.link_path.is_symlink():
            self.link_path.unlink()
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1

    async def run(self) -> None:
        """Play the board until cancelled (the pty must be open)."""
        loop = asyncio.get_running_loop()
        self._reading = True
        loop.add_reader(self._master, self._on_readable)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._writer(), name="board-sim writer")
                await self._board_loop()
        finally:
            self._reading = False
            loop.remove_reader(self._master)

    def _kick(self) -> None:
        self._wake.set()

    def _at(self, due: float, action: Callable[[], object]) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (due, self._timer_seq, action))

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, RX_CHUNK)
        except (BlockingIOError, OSError):
            return
        if data:
            # Pace the host's bytes at line rate: read again after their line time.
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._master)
            loop.call_later(len(data) / self.bytes_per_s, self._resume_reading)
        if not data or self.is_cut:
            return
        self.bytes_in += len(data)
        self.core.receive_data(self._corrupt(data), self._clock())
        self._kick()

    def _resume_reading(self) -> None:
        if self._reading and self._master >= 0:
            asyncio.get_running_loop().add_reader(self._master, self._on_readable)

    async def _board_loop(self) -> None:
        while True:
            now = self._clock()
            while self._timers and self._timers[0][0] <= now:
                heapq.heappop(self._timers)[2]()
            self.core.on_timer(now)
            self._tx_ready.set()
            deadline = self.core.next_deadline()
            if self._timers:
                deadline = min(deadline, self._timers[0][0])
            if self.is_cut:
                deadline = min(deadline, self._cut_until)
            self._wake.clear()
            # Events due now wait for the paced writer: sleep at least MIN_WAIT_S.
            wait = max(MIN_WAIT_S, deadline - self._clock())
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            # that races with the wake-up, and the simulator would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _writer(self) -> None:
        """The UART: takes bytes from the board only when the line is free, at line rate."""
        loop = asyncio.get_running_loop()
        line_free_at = loop.time()
        while True:
            await self._tx_ready.wait()
            self._tx_ready.clear()
            while chunk := self.core.data_to_send(self._clock(), TX_CHUNK):
                if not self.is_cut:
                    # Nobody reading (pty buffer full): the bytes are lost, as on a real line.
                    with contextlib.suppress(BlockingIOError, OSError):
                        os.write(self._master, self._corrupt(chunk))
                self.bytes_out += len(chunk)
                line_free_at = max(line_free_at, loop.time()) + len(chunk) / self.bytes_per_s
                await asyncio.sleep(max(0.0, line_free_at - loop.time()))

    def _corrupt(self, data: bytes) -> bytes:
        if self.noise <= 0:
            return data
        out = bytearray(data)
        rnd = self._rng.random
        for i in range(len(out)):
            if rnd() < self.noise:
                out[i] ^= 1 << self._rng.randrange(8)
                self.bits_flipped += 1
        return bytes(out)

    def status(self) -> str:
        c = self.core
        return (
            f"state={c.state} boot={c.boot_id:08x} seq={c.seq} queued={len(c.queue)} "
            f"dropped={c.dropped} sent={c.sent_events} retransmits={c.retransmits} "
            f"rehandshakes={c.rehandshakes} fw={c.fw_version} "
            f"cut={self.is_cut} noise={self.noise} faults={dict(c.faults)} "
            f"relay_pulses={c.relays.pulses} relays_off={sorted(c.relays.off_until)}"
        )

    def firmware_status(self) -> str:
        b = self.bootloader
        slots = " ".join(
            f"{k}={v.version}{'*' if k == b.active else ''}" if v else f"{k}=-"
            for k, v in b.slots.items()
        )
        partial = f"{len(b.data)}/{b.partial.total}" if b.partial else "-"
        return (
            f"slots {slots} trial={b.trial} boot_state={b.boot_state} rollback={b.rollback} "
            f"receiving={partial} refused={b.refused}"
        )


@contextlib.asynccontextmanager
async def simulate_board(**kwargs: Any) -> AsyncIterator[BoardSimulator]:
    """A running :class:`BoardSimulator` (keyword arguments as its constructor); the pty is
    closed and every task ended on exit."""
    sim = BoardSimulator(**kwargs)
    sim.open_pty()
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(sim.run(), name="board-sim")
            try:
                yield sim
            finally:
                task.cancel()
    finally:
        sim.close_pty()


async def run_script(
    sim: BoardSimulator, lines: AsyncIterator[str], echo: Callable[[str], None]
) -> None:
    """Execute script lines until ``quit`` or the end of input."""
    async for raw in lines:
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        cmd, args = words[0].lower(), words[1:]
        try:
            if cmd == "quit":
                return
            if cmd == "sleep":
                await asyncio.sleep(float(args[0]))
                continue
            result = execute(sim, cmd, args)
        except (IndexError, ValueError) as e:
            echo(f"错误 / error: {raw.strip()!r}: {e or 'missing argument'}")
            continue
        echo(result)


def execute(sim: BoardSimulator, cmd: str, args: list[str]) -> str:
    """One script command (except ``sleep``/``quit``); returns a line for the operator."""
    if cmd == "press":
        key = sim.press(int(args[0]), float(args[1]) if len(args) > 1 else 0.2)
    elif cmd in ("open", "close", "tamper", "restore"):
        key = sim.set_input(int(args[0]), cmd in ("open", "tamper"))
    elif cmd == "pir":
        key = sim.pir(int(args[0]))
    elif cmd == "cid":
        key = sim.panel(args[0])
    elif cmd == "cut":
        sim.cut(float(args[0]))
        return f"断线 {args[0]} s / line cut"
    elif cmd == "replug":
        sim.replug()
        return "已接回 / replugged"
    elif cmd == "noise":
        sim.set_noise(float(args[0]))
        return f"误码率 / noise {sim.noise}"
    elif cmd == "reboot":
        sim.reboot(keep_queue=not args or args[0] != "lose")
        return f"已重启 / rebooted, boot {sim.core.boot_id:08x}"
    elif cmd == "status":
        return sim.status()
    elif cmd == "firmware":
        return sim.firmware_status()
    elif cmd == "help":
        return SCRIPT_HELP
    else:
        raise ValueError(f"unknown command {cmd!r} (help)")
    return (
        f"{cmd} {' '.join(args)} -> {key!r}"
        if key
        else f"{cmd} {' '.join(args)}: 无变化 / no change"
    )


async def _stdin_lines() -> AsyncIterator[str]:
    import stat
    import sys

    if stat.S_ISREG(os.fstat(sys.stdin.fileno()).st_mode):
        for line in sys.stdin:  # a script file redirected to stdin
            yield line
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while line := await reader.readline():
            yield line.decode("utf-8", "replace")
    finally:
        transport.close()


async def main(**kwargs: Any) -> None:
    """The ``sim`` command: run the board and the stdin script; ends on ``quit``/end of input."""

    def echo(line: str) -> None:
        print(line, flush=True)

    async with simulate_board(**kwargs) as sim:
        echo(f"模拟报警板 / simulated board on {sim.slave_path} (link {sim.link_path}); help")
        await run_script(sim, _stdin_lines(), echo)
