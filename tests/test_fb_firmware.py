"""Firmware update against the board simulator over a real pty pair (real time).

The simulator paces both directions at its baud rate; these tests run it at 460800 (a pty
ignores baud, so only the pacing changes) with 64 KiB images, ~1.5 s of line time per
transfer; bench/firmware_update.py measures 115200. Conditions are awaited with deadlines;
nothing asserts timings."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge import image as fi
from firmware_bridge.flasher import flash
from firmware_bridge.framing import BOOT_NORMAL, BOOT_ROLLED_BACK, EventKey
from firmware_bridge.link import InputChanged
from firmware_bridge.simulator import BoardSimulator, simulate_board
from firmware_bridge.transport import BoardPort
from firmware_bridge.update import Progress, Result
from tests.test_fb_sim import until

BAUD = 460800
SIZE = 64 * 1024
MODEL = "SIM-BOARD"
#: Host confirms after 1.5 s of heartbeats; the board's trial watchdog is 5 s (tests only).
CONFIRM_S = 1.5
TRIAL_S = 5.0


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return fi.keygen()


def build(
    keys: tuple[bytes, bytes],
    version: str,
    behaviour: fi.SimBehaviour = fi.SimBehaviour.OK,
    size: int = SIZE,
) -> fi.Image:
    payload = fi.sim_payload(version, size, behaviour)
    return fi.sign(payload, board_model=MODEL, version=version, private_key=keys[0])


class Host:
    """The edge's side of the port: acks every board event (as after an outbox commit) and
    records each delivery."""

    def __init__(self, port: BoardPort) -> None:
        self.port = port
        self.delivered: list[EventKey] = []

    async def run(self) -> None:
        async for ev in self.port.events():
            if isinstance(ev, InputChanged):
                self.delivered.append(ev.key)
                self.port.ack(ev.key)


@asynccontextmanager
async def host_on(sim: BoardSimulator) -> AsyncIterator[Host]:
    async with BoardPort.open(sim.slave_path) as port:
        host = Host(port)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(host.run())
            try:
                await until(lambda: port.board is not None)
                yield host
            finally:
                task.cancel()


def board(keys: tuple[bytes, bytes], **kw: Any) -> AbstractAsyncContextManager[BoardSimulator]:
    return simulate_board(
        public_key=keys[1], baudrate=BAUD, trial_s=TRIAL_S, board_model=MODEL, seed=7, **kw
    )


async def run_flash(
    port: BoardPort, img: fi.Image, on: Callable[[Progress], None] | None = None
) -> Progress:
    return await asyncio.wait_for(
        flash(port, img, on_progress=on, confirm_after_s=CONFIRM_S, give_up_s=60), 120
    )


async def test_update_survives_line_cuts_and_a_board_reboot(keys: tuple[bytes, bytes]) -> None:
    """Cuts at random points (a short one that only loses chunks, a long one that takes the
    link down) and a board reboot mid-transfer: the transfer resumes, never restarts, and the
    board runs the new version, confirmed."""
    img = build(keys, "2.0.0")
    rng = random.Random(4)
    total = len(img.signed)
    # one fault in each third of the image, at a random byte
    faults = [rng.randrange(total * i // 3, total * (i + 1) // 3 - 1024) for i in range(3)]
    async with board(keys) as sim, host_on(sim) as host:
        held_before_fault: list[int] = []
        actions = [lambda: sim.cut(0.4), lambda: sim.cut(3.5), lambda: sim.reboot()]

        async def inject() -> None:
            for at, action in zip(faults, actions, strict=True):
                await until(lambda: len(sim.bootloader.data) >= at and not sim.is_cut)  # noqa: B023
                held_before_fault.append(len(sim.bootloader.data))
                action()

        injector = asyncio.create_task(inject())
        result = await run_flash(host.port, img)
        await injector
        assert len(held_before_fault) == 3, "every fault was injected during the transfer"
        assert result.result is Result.SUCCESS, result
        assert sim.core.fw_version == "2.0.0"
        assert sim.bootloader.boot_state == BOOT_NORMAL and not sim.bootloader.trial
        assert host.port.board is not None and host.port.board.fw_version == "2.0.0"
        # Resumed, never restarted: after the long cut and the reboot the board answered
        # FW_BEGIN with at least what it held when the fault hit.
        first, *resumes = result.resume_points
        assert first == 0 and len(resumes) >= 2, result.resume_points
        assert resumes[-2] >= held_before_fault[1] > 0
        assert resumes[-1] >= held_before_fault[2] > held_before_fault[1]
        await until(lambda: host.port.board is not None)


async def test_host_restart_resumes_from_the_board(keys: tuple[bytes, bytes]) -> None:
    """The edge side goes away mid-transfer (port closed, update cancelled); a new one sends
    the same image and starts at the board's resume point, not at 0."""
    img = build(keys, "2.1.0")
    async with board(keys) as sim:
        async with host_on(sim) as host:
            task = asyncio.create_task(run_flash(host.port, img))
            await until(lambda: len(sim.bootloader.data) > SIZE // 2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        held = len(sim.bootloader.data)
        async with host_on(sim) as host:
            result = await run_flash(host.port, img)
        assert result.result is Result.SUCCESS
        assert result.resumed_from >= held > 0
        assert sim.core.fw_version == "2.1.0"


async def test_tampered_image_refused_by_host_and_by_board(keys: tuple[bytes, bytes]) -> None:
    img = build(keys, "3.0.0", size=8 * 1024)
    bad = bytearray(img.to_bytes())
    bad[23] ^= 0x20  # version field: the payload digest still matches, the signature does not
    with pytest.raises(fi.ImageError) as e:
        fi.verify(bytes(bad), keys[1])
    assert e.value.fault is fi.ImageFault.SIGNATURE
    # A host that skipped its check (or another signer's image): the board refuses too.
    forged = fi.parse_image(bytes(bad))
    async with board(keys) as sim, host_on(sim) as host:
        result = await run_flash(host.port, forged)
        assert (result.result, result.detail) == (Result.REFUSED, "bad_signature")
        assert sim.core.fw_version == "1.0.0" and sim.bootloader.refused == 1
        assert sim.bootloader.partial is None  # erased, never booted
        # a wrong-model image, correctly signed
        other = fi.sign(
            fi.sim_payload("3.0.1", 4096), board_model="VB-2", version="3.0.1", private_key=keys[0]
        )
        result = await run_flash(host.port, other)
        assert (result.result, result.detail) == (Result.REFUSED, "wrong_model")
        assert sim.core.fw_version == "1.0.0"


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [(fi.SimBehaviour.NO_HEARTBEAT, "not_confirmed"), (fi.SimBehaviour.CRASH, "crash")],
)
async def test_bad_image_rolls_back(
    keys: tuple[bytes, bytes], behaviour: fi.SimBehaviour, reason: str
) -> None:
    """Signed correctly but fails in trial: the board's watchdog rolls back on its own, the old
    version runs again and the rollback (with its reason) reaches the host."""
    img = build(keys, "4.0.0", behaviour, size=8 * 1024)
    async with board(keys) as sim, host_on(sim) as host:
        result = await run_flash(host.port, img)
        assert (result.result, result.detail) == (Result.ROLLED_BACK, reason)
        assert sim.core.fw_version == "1.0.0"
        assert sim.bootloader.boot_state == BOOT_ROLLED_BACK
        await until(lambda: host.port.board is not None)
        info = host.port.board
        assert info is not None and info.fw_version == "1.0.0"
        assert info.rollback_reason == reason


async def test_alarms_during_a_transfer_arrive_exactly_once(keys: tuple[bytes, bytes]) -> None:
    img = build(keys, "5.0.0")
    async with board(keys) as sim, host_on(sim) as host:
        flashing = asyncio.create_task(run_flash(host.port, img))
        pressed: list[EventKey] = []
        await until(lambda: len(sim.bootloader.data) > 0)
        while len(sim.bootloader.data) < SIZE * 3 // 4 and len(pressed) < 40:
            for key in (sim.set_input(3, True), sim.set_input(3, False)):
                assert key is not None
                pressed.append(key)
            await asyncio.sleep(0.02)
        assert len(pressed) >= 10
        assert not flashing.done()  # pressed during the transfer
        # delivered before the transfer ends: alarms interleave with chunks
        await until(lambda: set(pressed) <= set(host.delivered), 30)
        result = await flashing
        assert result.result is Result.SUCCESS
        await until(lambda: not sim.core.queue)
        assert sorted(host.delivered) == sorted(pressed)  # exactly once
        assert len(host.delivered) == len(set(host.delivered))


async def test_already_running_and_flash_dir_survives_restart(
    keys: tuple[bytes, bytes], tmp_path: Path
) -> None:
    img = build(keys, "6.0.0", size=8 * 1024)
    async with board(keys, flash_dir=tmp_path) as sim, host_on(sim) as host:
        assert (await run_flash(host.port, img)).result is Result.SUCCESS
    # a new simulator process with the same flash: runs 6.0.0; flashing it again is a no-op
    async with board(keys, flash_dir=tmp_path) as sim, host_on(sim) as host:
        assert sim.core.fw_version == "6.0.0"
        result = await run_flash(host.port, img)
        assert (result.result, result.detail) == (Result.ALREADY, "6.0.0")
