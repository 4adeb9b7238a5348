"""Alarm latency with snapshots on vs off: does taking pictures delay the alarm?

    python bench/snapshot_alarm.py [--alarms 100] [--cameras 4] [--rounds 2] [--gap-s 1.0]

Path measured, all real: board simulator on a pty (115200 baud) → edge agent (board source,
zones, durable outbox, and ``--cameras`` real RTSP cameras — one gst-rtsp-server process,
tests/rtsp_camera.py, 320x240 10 fps H.264, a key frame a second — all mapped to the pressed
zone) → private mosquitto → ``shilian central run`` (its own process, SQLite) → the alarm row
visible to a reader (bench/alarm_latency.py's watcher, 1 ms polls). Both modes run the same
agent config but for ``[snapshots] enabled``, in alternating blocks (plain, snap, plain,
snap…) against the same broker and central, so machine noise falls on both alike. With
snapshots on, every alarm asks each camera for its next key frame (up to a second away),
encodes a JPEG and stores it as an ``info`` event. Presses come ``--gap-s`` apart (default
1 s: a village's alarms are far rarer, and at 1 s the pictures of one alarm are being taken,
encoded, stored and sent while the next alarm fires); ``--gap-s 0`` presses as fast as alarms
are stored (~7 alarms a second, each with ``--cameras`` pictures: a stress figure).

Prints one final JSON line: ``alarm_p99_ms_snap``, ``alarm_p99_ms_plain``, ``ratio``
(snap / plain, target ≤ 1.1), the p50s, ``alarms`` per mode, ``cameras``,
``snapshots_stored`` (rows in central's snapshots table) and the edge's snapshot outcomes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.alarm_latency import ALARM_TIMEOUT_S, RELEASE_POLLS, Watcher, start_central  # noqa: E402
from edge.agent import Agent  # noqa: E402
from edge.config import parse_config  # noqa: E402
from firmware_bridge.simulator import simulate_board  # noqa: E402
from shilian.broker import Mosquitto  # noqa: E402
from tests.camera_peers import RtspCamera  # noqa: E402

NODE = "450102001003-a"
#: Presses before measuring in each block (handshake, first commits, cameras playing).
WARMUP = 10
#: A press is held this long (past the zone's 50 ms debounce) and released as long.
HOLD_S = 0.07
#: Before a block, the cameras must be playing (health ok) within this.
CAMERAS_OK_S = 60.0


async def block(
    work: Path,
    broker_port: int,
    watcher: Watcher,
    cam: RtspCamera,
    n_cameras: int,
    alarms: int,
    snapshots: bool,
    outcomes: dict[str, float],
    gap_s: float,
) -> list[float]:
    """One agent run of ``alarms`` measured presses; latencies in seconds."""
    stop = asyncio.Event()
    tag = f"{'snap' if snapshots else 'plain'}-{time.monotonic_ns()}"
    async with simulate_board(seed=1) as sim:
        cfg = parse_config(
            {
                "node_id": NODE,
                "broker": {"port": broker_port},
                "outbox": {"path": str(work / f"outbox-{tag}.sqlite3")},
                "metrics": {"enabled": False},
                "alarm_board": {"device": sim.slave_path, "zones": [{"input": 1, "kind": "panic"}]},
                "cameras": [
                    {"id": f"cam-{i}", "rtsp_url": cam.url(i), "zones": [1]}
                    for i in range(n_cameras)
                ],
                "snapshots": {"enabled": snapshots, "max_cameras": n_cameras},
            }
        )
        agent = Agent(cfg, serve_metrics=False, serve_local_socket=False)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(agent.run(stop))
            try:
                await asyncio.wait_for(agent.started.wait(), 60)
                src: Any = next(s for s in agent.sources if s.name == "cameras")
                deadline = time.monotonic() + CAMERAS_OK_S
                while len(src.reports) < n_cameras or any(
                    r.health != "ok" for r in src.reports.values()
                ):
                    if time.monotonic() > deadline:
                        raise RuntimeError("cameras not ok")
                    await asyncio.sleep(0.1)
                base = len(watcher.seen)
                latencies: list[float] = []
                for i in range(WARMUP + alarms):
                    t0 = time.monotonic()
                    sim.press(1, hold_s=HOLD_S)
                    await asyncio.to_thread(watcher.wait_count, base + i + 1, ALARM_TIMEOUT_S)
                    if i >= WARMUP:
                        latencies.append(watcher.seen[base + i] - t0)
                    for _ in range(RELEASE_POLLS):
                        if not sim.core.inputs[0]:
                            break
                        await asyncio.sleep(0.001)
                    else:
                        raise RuntimeError("the simulator did not release the button")
                    await asyncio.sleep(max(HOLD_S, gap_s))
                if snapshots:
                    await asyncio.sleep(2)  # the last pictures reach central
                    for o in ("sent", "timeout", "queue_full", "undecodable", "outbox_refused"):
                        v = agent.registry.get_sample_value(
                            "shilian_edge_snapshots_total", {"outcome": o}
                        )
                        outcomes[o] = outcomes.get(o, 0) + (v or 0)
                return latencies
            finally:
                stop.set()


async def measure(
    work: Path, broker_port: int, db: Path, args: argparse.Namespace
) -> tuple[list[float], list[float], dict[str, float]]:
    watcher = Watcher(db)
    watcher.start()
    plain: list[float] = []
    snap: list[float] = []
    outcomes: dict[str, float] = {}
    per_block = max(1, args.alarms // args.rounds)
    try:
        with RtspCamera("ball", mounts=args.cameras) as cam:
            for _ in range(args.rounds):
                for on in (False, True):
                    lat = await block(
                        work, broker_port, watcher, cam, args.cameras, per_block, on, outcomes,
                        args.gap_s,
                    )  # fmt: skip
                    (snap if on else plain).extend(lat)
    finally:
        watcher.stop.set()
    return plain, snap, outcomes


def p99(xs: list[float]) -> float:
    ms = sorted(x * 1000 for x in xs)
    return statistics.quantiles(ms, n=100, method="inclusive")[98]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--alarms", type=int, default=100, help="measured alarms per mode")
    ap.add_argument("--gap-s", type=float, default=1.0, help="pause between presses")
    ap.add_argument("--cameras", type=int, default=4, help="cameras mapped to the zone")
    ap.add_argument("--rounds", type=int, default=2, help="plain/snap block pairs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Mosquitto() as broker:
        work = Path(tmp)
        central, db = start_central(work, broker.port)
        try:
            plain, snap, outcomes = asyncio.run(measure(work, broker.port, db, args))
            with contextlib.closing(sqlite3.connect(db)) as conn:
                stored = conn.execute("SELECT count(*) FROM snapshots").fetchone()[0]
        finally:
            central.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                central.wait(10)
            if central.poll() is None:
                central.kill()
                central.wait()
    snap99, plain99 = p99(snap), p99(plain)
    out: dict[str, Any] = {
        "alarm_p50_ms_snap": round(statistics.median(snap) * 1000, 2),
        "alarm_p50_ms_plain": round(statistics.median(plain) * 1000, 2),
        "alarms": len(plain),
        "cameras": args.cameras,
        "gap_s": args.gap_s,
        "snapshots_stored": stored,
        "edge_snapshot_outcomes": {k: int(v) for k, v in outcomes.items()},
        "alarm_p99_ms_snap": round(snap99, 2),
        "alarm_p99_ms_plain": round(plain99, 2),
        "ratio": round(snap99 / plain99, 3),
    }
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
