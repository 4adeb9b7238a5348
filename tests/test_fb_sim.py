"""The host transport against the board simulator over a real pty pair (real time, paced at
115200 baud). Conditions are awaited with a bounded poll; nothing asserts timings."""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from firmware_bridge.link import InputChanged, LinkDown, LinkEvent, LinkUp, PanelMessage
from firmware_bridge.simulator import BoardSimulator, simulate_board
from firmware_bridge.transport import BoardPort, PortError

#: Presses in the noisy-line test (unpaced, so at most what the board queue of 1,024 holds;
#: the 10,000-press soak is the paced tests/test_fb_soak.py, `make soak`).
PRESSES = 500


async def until(cond: Callable[[], bool], limit_s: float = 60.0) -> None:
    """Poll ``cond`` until true; fail after ``limit_s`` seconds (a bound, not a timing)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    while not cond():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.02)


class Host:
    """The edge's side: records every link event and acks board events (as after an outbox
    commit)."""

    def __init__(self, port: BoardPort) -> None:
        self.port = port
        self.log: list[LinkEvent] = []
        self.ack = True

    async def consume(self) -> None:
        async for ev in self.port.events():
            self.log.append(ev)
            if self.ack and isinstance(ev, InputChanged | PanelMessage):
                self.port.ack(ev.key)

    def of(self, kind: type) -> list[LinkEvent]:
        return [e for e in self.log if isinstance(e, kind)]

    def presses(self) -> list[InputChanged]:
        return [e for e in self.log if isinstance(e, InputChanged) and e.active]


@asynccontextmanager
async def rig(**sim_kwargs: object) -> AsyncIterator[tuple[BoardSimulator, Host]]:
    async with simulate_board(**sim_kwargs) as sim, BoardPort.open(sim.slave_path) as port:
        host = Host(port)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(host.consume())
            try:
                await until(lambda: port.state == "up")
                yield sim, host
            finally:
                task.cancel()


async def test_presses_arrive_with_board_info() -> None:
    async with rig(seed=1, board_id="VB-450102-07", fw_version="2.1.0") as (sim, host):
        assert host.port.board is not None
        assert host.port.board.board_id == "VB-450102-07"
        assert host.port.board.fw_version == "2.1.0"
        sim.press(3)
        sim.open_door(1)
        sim.panel("1234181113101001")
        await until(lambda: len(host.of(PanelMessage)) == 1)
        changes = host.of(InputChanged)
        assert [(e.input_no, e.active) for e in changes if isinstance(e, InputChanged)] == [
            (3, True),
            (3, False),
            (1, True),
        ]
        (msg,) = host.of(PanelMessage)
        assert isinstance(msg, PanelMessage) and msg.raw == "1234181113101001"
        await until(lambda: not sim.core.queue)  # every event acknowledged


@pytest.mark.slow
async def test_noise_and_line_cuts_every_press_exactly_once_in_order() -> None:
    rng = random.Random(7)
    async with rig(seed=7, noise=0.01) as (sim, host):
        pressed: list[int] = []
        for i in range(PRESSES):
            button = 1 + i % 4
            sim.press(button)
            pressed.append(button)
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # let the board drain its window
            if rng.random() < 0.004:
                sim.cut(rng.uniform(0.2, 1.5))
        await until(lambda: len(host.presses()) >= PRESSES, limit_s=60 + PRESSES * 0.05)
        await until(lambda: not sim.core.queue)
        await asyncio.sleep(0.5)  # anything more would be a duplicate
        presses = host.presses()
        assert len(presses) == PRESSES
        keys = [e.key for e in host.of(InputChanged) if isinstance(e, InputChanged)]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        for button in range(1, 5):
            assert sum(1 for e in presses if e.input_no == button) == pressed.count(button)
        assert sim.bits_flipped > 0


async def test_reboot_mid_stream_loses_and_duplicates_nothing() -> None:
    async with rig(seed=3) as (sim, host):
        host.ack = False  # the outbox is slow: events are delivered, not yet durable
        # 6 presses = 12 events: all within the board's window of 16 in flight.
        first = [sim.press(1 + i % 3) for i in range(6)]
        await until(lambda: len(host.presses()) == 6)
        sim.reboot()  # unacknowledged events stay in flash
        second = [sim.press(2) for _ in range(10)]
        await until(lambda: len(host.of(LinkUp)) == 2)
        host.ack = True
        for e in host.of(InputChanged):
            assert isinstance(e, InputChanged)
            host.port.ack(e.key)
        await until(lambda: len(host.presses()) == 16)
        await until(lambda: not sim.core.queue)
        await asyncio.sleep(0.5)
        keys = [e.key for e in host.presses()]
        assert keys == [*first, *second]
        assert host.of(LinkDown) == [LinkDown("board_rebooted")]


async def test_line_cut_reports_down_then_up_and_presses_during_cut_arrive() -> None:
    async with rig(seed=4) as (sim, host):
        sim.cut(5.0)
        await until(lambda: host.port.state == "down", limit_s=10)
        assert host.of(LinkDown) == [LinkDown("timeout")]
        during = [sim.press(5), sim.open_door(6)]
        await until(lambda: not sim.is_cut, limit_s=10)
        await until(lambda: len(host.of(LinkUp)) == 2, limit_s=10)
        await until(lambda: len(host.of(InputChanged)) == 3)
        assert [e.key for e in host.of(InputChanged) if isinstance(e, InputChanged)][::2] == during


async def test_port_that_does_not_exist_fails_at_open(tmp_path: Path) -> None:
    with pytest.raises(PortError):
        async with BoardPort.open(str(tmp_path / "nope")):
            pass


async def test_cli_simulator_with_a_line_script(tmp_path: Path) -> None:
    link = tmp_path / "board"
    code = "from firmware_bridge.cli import app; app()"
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-c", code, "sim", "--link-path", str(link)],
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None
        await until(link.is_symlink, limit_s=30)
        async with BoardPort.open(str(link)) as port:
            host = Host(port)
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(host.consume())
                await until(lambda: port.state == "up", limit_s=10)
                proc.stdin.write(b"press 2 0\ncid 1234181113101001\n")
                await proc.stdin.drain()
                await until(lambda: len(host.of(PanelMessage)) == 1)
                task.cancel()
        assert [e.input_no for e in host.presses()] == [2]
        out, _ = await asyncio.wait_for(proc.communicate(b"quit\n"), 30)
        assert proc.returncode == 0
        assert b"press 2 0" in out
        assert not link.exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
