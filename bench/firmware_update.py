"""Firmware transfer time through a real pty at 115200 baud (the simulator paces both
directions at line rate), for a 64 KiB and a 256 KiB image, against the line's limit for the
bytes of the image alone. Also the same 64 KiB transfer with one 4 s line cut in the middle
(resumed from the board's point, so the extra time is about the cut plus a re-handshake).

Transfer = FW_BEGIN until VERIFIED; the trial (reboot, heartbeats, BOOT_CONFIRM, 3 s) is
reported apart. Prints one JSON line."""

from __future__ import annotations

import asyncio
import json
import time

from firmware_bridge import image as fi
from firmware_bridge.flasher import flash
from firmware_bridge.link import InputChanged
from firmware_bridge.simulator import BITS_PER_BYTE, simulate_board
from firmware_bridge.transport import BoardPort
from firmware_bridge.update import Phase, Progress

BAUD = 115200


async def run(size_kib: int, cut_at: float | None = None) -> dict[str, float]:
    priv, pub = fi.keygen()
    version = f"9.{size_kib}.0"
    img = fi.sign(
        fi.sim_payload(version, size_kib * 1024),
        board_model="SIM-BOARD",
        version=version,
        private_key=priv,
    )
    marks: dict[str, float] = {}
    async with (
        simulate_board(public_key=pub, baudrate=BAUD, seed=3) as sim,
        BoardPort.open(sim.slave_path, BAUD) as port,
    ):

        async def drain() -> None:
            async for ev in port.events():
                if isinstance(ev, InputChanged):
                    port.ack(ev.key)

        def on(p: Progress) -> None:
            now = time.monotonic()
            if p.phase is Phase.BEGIN and "begin" not in marks:
                marks["begin"] = now
            if p.phase is Phase.REBOOTING and "verified" not in marks:
                marks["verified"] = now
            if cut_at is not None and "cut" not in marks and p.sent >= p.total * cut_at:
                marks["cut"] = now
                sim.cut(4.0)

        async with asyncio.TaskGroup() as tg:
            d = tg.create_task(drain())
            result = await flash(port, img, on_progress=on)
            end = time.monotonic()
            d.cancel()
    assert result.result is not None and result.result.value == "success", result
    transfer = marks["verified"] - marks["begin"]
    line = len(img.signed) / (BAUD / BITS_PER_BYTE)
    return {
        "transfer_s": round(transfer, 2),
        "line_limit_s": round(line, 2),
        "efficiency": round(line / transfer, 3),
        "trial_and_confirm_s": round(end - marks["verified"], 2),
        "bytes_per_s": round(len(img.signed) / transfer),
    }


async def main() -> None:
    r64 = await run(64)
    r256 = await run(256)
    cut = await run(64, cut_at=0.5)
    print(
        json.dumps(
            {
                "baud": BAUD,
                "transfer_64k_s": r64["transfer_s"],
                "transfer_256k_s": r256["transfer_s"],
                "line_limit_64k_s": r64["line_limit_s"],
                "line_limit_256k_s": r256["line_limit_s"],
                "efficiency_256k": r256["efficiency"],
                "bytes_per_s_256k": r256["bytes_per_s"],
                "trial_and_confirm_s": r64["trial_and_confirm_s"],
                "transfer_64k_with_4s_cut_s": cut["transfer_s"],
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
