"""Alarm latency with snapshots on vs off: does taking pictures delay the alarm?

    python bench/snapshot_alarm.py [--rounds 6] [--per-round 30] [--cameras 4] [--gap-s 1.0]

Path measured, all real: board simulator on a pty (115200 baud) → edge agent (board source,
zones, durable outbox, and ``--cameras`` real RTSP cameras — one gst-rtsp-server process,
tests/rtsp_camera.py, 320x240 10 fps H.264, a key frame a second — all mapped to the pressed
zone) → private mosquitto → ``shilian central run`` (its own process, SQLite) → the alarm row
visible to a reader (bench/alarm_latency.py's watcher, 1 ms polls).

One agent, one broker, one central for both modes: snapshots are switched off and on
(``SnapshotTaker.enabled``). The run is ``--rounds`` rounds; each round is one block of
``--per-round`` presses in each mode, plain first in even rounds and snapshots first in odd
ones (ABBA), so machine noise and drift (a shared 2-core box) fall on both alike. Before every
block the bench waits until the pictures asked for so far are stored at central (or
:data:`SETTLE_S`), so a plain block never carries the previous block's pictures. With
snapshots on, every alarm asks each camera for its next key frame (up to a second away),
encodes a JPEG and stores it as an ``info`` event. Presses come ``--gap-s`` apart (default 1 s:
a village's alarms are far rarer, and at 1 s the pictures of one alarm are taken, stored, sent
and ingested while the next alarm fires); ``--gap-s 0`` presses as fast as alarms are stored
(a burst: a stress figure).

Prints one final JSON line: ``ratio`` — the median over rounds of each round's p99 ratio
(snap / plain, target ≤ 1.1): one noisy round cannot move it —, ``round_ratios``,
``alarm_p99_ms_snap`` and ``alarm_p99_ms_plain`` (all rounds pooled) and their
``pooled_ratio``, the p50s, ``alarms`` per mode, ``cameras``, ``gap_s``, ``snapshots_stored``
(rows in central's snapshots table) and the edge's snapshot outcomes.
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
#: Presses before measuring (handshake, first commits, cameras playing), snapshots on.
WARMUP = 10
#: A press is held this long (past the zone's 50 ms debounce) and released as long.
HOLD_S = 0.07
#: Before measuring, the cameras must be playing within this.
CAMERAS_PLAYING_S = 60.0
#: Healths of a camera whose session plays (the test pattern may be judged black).
PLAYING = ("ok", "black", "frozen")
#: At every block boundary (both modes alike): more than the cameras' key-frame interval (1 s),
#: so the pictures the last alarms asked for have been taken.
KEYFRAME_WAIT_S = 1.5
#: Longest wait after a snapshot block for its pictures to reach central.
SETTLE_S = 5.0
OUTCOMES = ("sent", "timeout", "queue_full", "undecodable", "outbox_refused")


def stored(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as c:
        try:
            return int(c.execute("SELECT count(*) FROM snapshots").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


Rounds = list[dict[bool, list[float]]]


async def measure(
    work: Path, broker_port: int, db: Path, args: argparse.Namespace
) -> tuple[Rounds, dict[str, int]]:
    watcher = Watcher(db)
    watcher.start()
    stop = asyncio.Event()
    rounds: Rounds = [{False: [], True: []} for _ in range(args.rounds)]
    try:
        with RtspCamera("ball", mounts=args.cameras) as cam:
            async with simulate_board(seed=1) as sim:
                cfg = parse_config(
                    {
                        "node_id": NODE,
                        "broker": {"port": broker_port},
                        "outbox": {"path": str(work / "outbox.sqlite3")},
                        "metrics": {"enabled": False},
                        "alarm_board": {
                            "device": sim.slave_path,
                            "zones": [{"input": 1, "kind": "panic"}],
                        },
                        "cameras": [
                            {"id": f"cam-{i}", "rtsp_url": cam.url(i), "zones": [1]}
                            for i in range(args.cameras)
                        ],
                        "snapshots": {"max_cameras": args.cameras},
                    }
                )
                agent = Agent(cfg, serve_metrics=False, serve_local_socket=False)
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(agent.run(stop))
                    try:
                        await asyncio.wait_for(agent.started.wait(), 60)
                        await _playing(agent, args.cameras)
                        await _presses(agent, sim, watcher, db, args, rounds)
                        await _settle(agent, db)  # the last block's pictures too
                        outcomes = {
                            o: int(
                                agent.registry.get_sample_value(
                                    "shilian_edge_snapshots_total", {"outcome": o}
                                )
                                or 0
                            )
                            for o in OUTCOMES
                        }
                    finally:
                        stop.set()
    finally:
        watcher.stop.set()
    return rounds, outcomes


async def _playing(agent: Agent, n: int) -> None:
    src: Any = next(s for s in agent.sources if s.name == "cameras")
    deadline = time.monotonic() + CAMERAS_PLAYING_S
    while len(src.reports) < n or any(r.health not in PLAYING for r in src.reports.values()):
        if time.monotonic() > deadline:
            raise RuntimeError("cameras not playing")
        await asyncio.sleep(0.1)


async def _presses(
    agent: Agent, sim: Any, watcher: Watcher, db: Path, args: argparse.Namespace, rounds: Rounds
) -> None:
    taker = agent.snapshots
    assert taker is not None
    pressed = 0

    async def press(into: list[float] | None) -> None:
        nonlocal pressed
        t0 = time.monotonic()
        sim.press(1, hold_s=HOLD_S)
        await asyncio.to_thread(watcher.wait_count, pressed + 1, ALARM_TIMEOUT_S)
        if into is not None:
            into.append(watcher.seen[pressed] - t0)
        pressed += 1
        for _ in range(RELEASE_POLLS):
            if not sim.core.inputs[0]:
                break
            await asyncio.sleep(0.001)
        else:
            raise RuntimeError("the simulator did not release the button")
        await asyncio.sleep(max(HOLD_S, args.gap_s))

    taker.enabled = True
    for _ in range(WARMUP):
        await press(None)
    for r, lat in enumerate(rounds):
        order = (False, True) if r % 2 == 0 else (True, False)  # ABBA
        for on in order:
            await _settle(agent, db)
            taker.enabled = on
            for _ in range(args.per_round):
                await press(lat[on])


async def _settle(agent: Agent, db: Path) -> None:
    """Until every picture asked for so far is stored at central (or SETTLE_S)."""
    await asyncio.sleep(KEYFRAME_WAIT_S)  # the last alarms' key frames arrive
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        sent = agent.registry.get_sample_value("shilian_edge_snapshots_total", {"outcome": "sent"})
        empty = agent.outbox is not None and agent.outbox.depth == 0
        if empty and await asyncio.to_thread(stored, db) >= (sent or 0):
            return
        await asyncio.sleep(0.05)


def p99(xs: list[float]) -> float:
    ms = sorted(x * 1000 for x in xs)
    return statistics.quantiles(ms, n=100, method="inclusive")[98]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="rounds of one block per mode")
    ap.add_argument("--per-round", type=int, default=30, help="alarms per mode and round")
    ap.add_argument("--cameras", type=int, default=4, help="cameras mapped to the zone")
    ap.add_argument("--gap-s", type=float, default=1.0, help="pause between presses")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Mosquitto() as broker:
        work = Path(tmp)
        central, db = start_central(work, broker.port)
        try:
            rounds, outcomes = asyncio.run(measure(work, broker.port, db, args))
            n_stored = stored(db)
        finally:
            central.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                central.wait(10)
            if central.poll() is None:
                central.kill()
                central.wait()
    plain = [x for r in rounds for x in r[False]]
    snap = [x for r in rounds for x in r[True]]
    round_ratios = [p99(r[True]) / p99(r[False]) for r in rounds]
    snap99, plain99 = p99(snap), p99(plain)
    out: dict[str, Any] = {
        "alarm_p50_ms_snap": round(statistics.median(snap) * 1000, 2),
        "alarm_p50_ms_plain": round(statistics.median(plain) * 1000, 2),
        "alarms": len(plain),
        "rounds": args.rounds,
        "cameras": args.cameras,
        "gap_s": args.gap_s,
        "snapshots_stored": n_stored,
        "edge_snapshot_outcomes": outcomes,
        "round_ratios": [round(x, 3) for x in round_ratios],
        "pooled_ratio": round(snap99 / plain99, 3),
        "alarm_p99_ms_snap": round(snap99, 2),
        "alarm_p99_ms_plain": round(plain99, 2),
        "ratio": round(statistics.median(round_ratios), 3),
    }
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
