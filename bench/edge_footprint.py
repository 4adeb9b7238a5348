"""Edge footprint: idle RSS of ``shilian edge run`` and durable outbox accept throughput.

    python bench/edge_footprint.py [--idle-s 60] [--events 20000] [--concurrency 256]

Prints one final JSON line: idle_rss_mb (target <= 40), outbox_events_per_s (target >= 2,000),
outbox_serial_events_per_s (one caller at a time: no commit sharing, the baseline), plus the
settings used. The outbox figure is events accepted (committed, WAL, synchronous=FULL)
into a fresh file by many concurrent ``accept`` calls sharing group commits. The agent runs
byte-compiled, as installed (bench/camera_probe.py says why).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.camera_probe import compile_packages  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from shilian.broker import Mosquitto, free_port  # noqa: E402

NODE = "450102001001-a"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def idle_rss(workdir: Path, idle_s: float) -> tuple[float, bool]:
    with Mosquitto() as broker:
        cfg = workdir / "edge.toml"
        cfg.write_text(
            f'node_id = "{NODE}"\n'
            f"[broker]\nport = {broker.port}\n"
            f'[outbox]\npath = "{workdir / "outbox.sqlite3"}"\n'
            f"[metrics]\nport = {free_port()}\n"
            f'[local_socket]\npath = "{workdir / "edge.sock"}"\n'
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(cfg)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(idle_s)
            alive = proc.poll() is None
            rss = rss_mb(proc.pid) if alive else float("nan")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                clean = proc.wait(30) == 0
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                clean = False
        return rss, alive and clean


async def outbox_rate(workdir: Path, events: int, concurrency: int) -> float:
    ob = await Outbox.open(
        workdir / f"bench-outbox-{concurrency}.sqlite3",
        node_id=NODE,
        boot_id="b" * 32,
        max_events=events * 2,
        clock=time.time,
    )
    async with ob.running():
        queue = iter(range(events))

        async def worker() -> None:
            for i in queue:
                await ob.accept("info", "bench", data={"i": i, "zone": 3})

        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(worker())
        elapsed = time.perf_counter() - t0
        assert ob.depth == events
    return events / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle-s", type=float, default=60.0)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=256)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="shilian-edge-bench-") as d:
        work = Path(d)
        compile_packages()
        rss, clean = idle_rss(work, args.idle_s)
        rate = asyncio.run(outbox_rate(work, args.events, args.concurrency))
        # one caller at a time: every accept waits for its own fsync (the group-commit baseline)
        serial = asyncio.run(outbox_rate(work, max(200, args.events // 20), 1))
    print(
        json.dumps(
            {
                "idle_rss_mb": round(rss, 1),
                "idle_s": args.idle_s,
                "clean_exit": clean,
                "outbox_events_per_s": round(rate),
                "outbox_serial_events_per_s": round(serial),
                "events": args.events,
                "concurrency": args.concurrency,
                "targets": {"idle_rss_mb": 40, "outbox_events_per_s": 2000},
            }
        )
    )


if __name__ == "__main__":
    main()
