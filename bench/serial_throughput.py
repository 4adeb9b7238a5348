"""Board events per second through a real pty at 115200 baud (simulator -> BoardPort, every
event acknowledged), against the line's theoretical limit for that frame size.

Prints one JSON line: frames_per_s, line_limit_frames_per_s, frame_bytes, ratio, events,
plus the same under 1 % byte noise (frames_per_s_noise_1pct)."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from firmware_bridge.framing import InputEventMsg, encode_frame
from firmware_bridge.link import InputChanged, bitmap
from firmware_bridge.simulator import BITS_PER_BYTE, simulate_board
from firmware_bridge.transport import BoardPort

BAUD = 115200
#: Keep the board's queue (1024) from overflowing while pressing faster than the line.
QUEUE_HIGH = 512
EVENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000


async def run(noise: float) -> float:
    async with (
        simulate_board(seed=1, noise=noise, baudrate=BAUD) as sim,
        BoardPort.open(sim.slave_path, BAUD) as port,
    ):
        if True:
            got = 0
            done = asyncio.Event()

            async def consume() -> None:
                nonlocal got
                async for ev in port.events():
                    if isinstance(ev, InputChanged):
                        got += 1
                        port.ack(ev.key)
                        if got == EVENTS:
                            done.set()
                            return

            async with asyncio.TaskGroup() as tg:
                tg.create_task(consume())
                while port.state != "up":  # noqa: ASYNC110 (a bounded poll of a plain attribute)
                    await asyncio.sleep(0.01)
                t0 = time.perf_counter()
                for i in range(EVENTS // 2):  # a press is two input changes
                    while len(sim.core.queue) >= QUEUE_HIGH:  # noqa: ASYNC110
                        await asyncio.sleep(0.005)
                    sim.press(1 + i % 8)
                await done.wait()
                return EVENTS / (time.perf_counter() - t0)


def main() -> None:
    frame = encode_frame(
        InputEventMsg(100, 0x2265B1F5, 90, 123456, 3, True, bitmap([True] * 8)).to_frame()
    )
    limit = BAUD / BITS_PER_BYTE / len(frame)
    clean = asyncio.run(run(0.0))
    noisy = asyncio.run(run(0.01))
    print(
        json.dumps(
            {
                "frames_per_s": round(clean, 1),
                "line_limit_frames_per_s": round(limit, 1),
                "frame_bytes": len(frame),
                "ratio": round(clean / limit, 3),
                "frames_per_s_noise_1pct": round(noisy, 1),
                "events": EVENTS,
                "baud": BAUD,
            }
        )
    )


if __name__ == "__main__":
    main()
