"""The thin asyncio driver of :class:`firmware_bridge.update.FirmwareUpdate` over a board port.

:func:`flash` runs one update on an already open :class:`~firmware_bridge.transport.BoardPort`
(the edge agent's, borrowed while alarms keep flowing through it); :func:`flash_device` opens
the port itself (``shilian firmware flash --port``, no agent running).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from firmware_bridge.image import Image
from firmware_bridge.link import FirmwareStatus, Heartbeat, LinkDown, LinkEvent, LinkUp
from firmware_bridge.transport import BoardPort
from firmware_bridge.update import (
    CONFIRM_AFTER_S,
    GIVE_UP_S,
    FirmwareUpdate,
    Phase,
    Progress,
)

#: Progress callbacks at most this often (plus every phase change): a UI or a retained MQTT
#: state does not need more.
PROGRESS_INTERVAL_S = 0.5

ProgressCallback = Callable[[Progress], None]


async def flash(
    port: BoardPort,
    image: Image,
    *,
    clock: Callable[[], float] = time.monotonic,
    on_progress: ProgressCallback | None = None,
    confirm_after_s: float = CONFIRM_AFTER_S,
    give_up_s: float = GIVE_UP_S,
) -> Progress:
    """Update the board behind ``port`` to ``image`` (verified by the caller); returns the
    final progress (``result`` set). Cancelling stops sending; the board keeps what it holds."""
    core = FirmwareUpdate(image, clock(), confirm_after_s=confirm_after_s, give_up_s=give_up_s)
    wake = asyncio.Event()

    def on_event(ev: LinkEvent) -> None:
        now = clock()
        if isinstance(ev, FirmwareStatus):
            core.on_status(ev.status, now)
        elif isinstance(ev, Heartbeat):
            core.on_heartbeat(now)
        elif isinstance(ev, LinkUp):
            core.on_link_up(ev.board, now)
        elif isinstance(ev, LinkDown):
            core.on_link_down(now)
        if data := core.data_to_send():
            port.send_firmware(data)
        wake.set()

    remove = port.add_listener(on_event)
    last: tuple[Phase, float] = (Phase.WAITING_LINK, float("-inf"))
    try:
        if port.board is not None:
            core.on_link_up(port.board, clock())
        while True:
            if data := core.data_to_send():
                port.send_firmware(data)
            p = core.progress()
            now = clock()
            if on_progress is not None and (
                p.phase != last[0] or now - last[1] >= PROGRESS_INTERVAL_S or core.done
            ):
                on_progress(p)
                last = (p.phase, now)
            if core.done:
                return p
            delay = min(PROGRESS_INTERVAL_S, max(0.0, core.next_deadline() - clock()))
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await wake.wait()
            core.on_timer(clock())
    finally:
        remove()


async def flash_device(
    device: str,
    image: Image,
    *,
    baudrate: int = 115200,
    on_progress: ProgressCallback | None = None,
    confirm_after_s: float = CONFIRM_AFTER_S,
    give_up_s: float = GIVE_UP_S,
) -> Progress:
    """Open ``device`` (no agent may hold it) and update the board; board events are left
    unacknowledged: the board keeps them for the agent."""
    async with BoardPort.open(device, baudrate) as port:

        async def drain() -> None:
            async for _ in port.events():
                pass

        async with asyncio.TaskGroup() as tg:
            drainer = tg.create_task(drain(), name="flash-drain")
            try:
                return await flash(
                    port,
                    image,
                    on_progress=on_progress,
                    confirm_after_s=confirm_after_s,
                    give_up_s=give_up_s,
                )
            finally:
                drainer.cancel()
