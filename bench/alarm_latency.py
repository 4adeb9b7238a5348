"""Alarm latency: a button press in the board simulator → the alarm stored at central.

    python bench/alarm_latency.py [--alarms 1000] [--debounce-ms N] [--trailing]

Path measured, all real: simulator on a pty (paced at 115200 baud) → edge agent (board source,
zones, durable outbox) → private mosquitto → ``shilian central run`` (a separate process,
SQLite commit) → the row visible to a reader. The simulator and the edge agent share this
process (as the board and the edge box share a cable); central is its own process. A watcher
thread polls central's SQLite file every WATCH_INTERVAL_S for new alarm rows and timestamps
them, so each figure includes up to that much polling delay. Presses are one at a time (the
next after the previous one is stored): the figure is unloaded latency, as for one village.

Prints one final JSON line: p50_ms, p99_ms (targets 20 and 100 on loopback), max_ms, mean_ms,
alarms, debounce_ms, debounce. By default the zone is configured as a user would leave it (no
debounce settings: leading edge, 50 ms), so the alarm is reported at its first transition;
``--trailing`` measures a trailing-edge zone, whose debounce adds itself to every alarm.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.agent import Agent  # noqa: E402
from edge.config import ZoneConfig, parse_config  # noqa: E402
from firmware_bridge.simulator import simulate_board  # noqa: E402
from shilian.broker import Mosquitto, free_port  # noqa: E402

NODE = "450102001003-a"
#: How often the watcher looks for new rows: a 1 ms poll adds at most 1 ms to each figure.
WATCH_INTERVAL_S = 0.001
#: Give up on one alarm after this long (the whole run fails: something is broken).
ALARM_TIMEOUT_S = 30.0
#: 1 ms polls for the simulator's release of the button before the next press (a press while
#: still held is no change, and no alarm).
RELEASE_POLLS = 30_000
#: Presses to warm up (connections, first commits, the board handshake) before measuring.
WARMUP = 20


class Watcher(threading.Thread):
    """Timestamps (time.monotonic) each new panic row in central's events table."""

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.seen: list[float] = []
        self.stop = threading.Event()
        self.cond = threading.Condition()

    def run(self) -> None:
        while not self.db.exists():
            time.sleep(0.01)
        conn = sqlite3.connect(f"{self.db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        last = 0
        try:
            while not self.stop.is_set():
                try:
                    rows = conn.execute(
                        "SELECT id FROM events WHERE id > ? AND kind = 'panic' ORDER BY id",
                        (last,),
                    ).fetchall()
                except sqlite3.OperationalError:  # table not created yet
                    rows = []
                now = time.monotonic()
                if rows:
                    last = rows[-1][0]
                    with self.cond:
                        self.seen += [now] * len(rows)
                        self.cond.notify_all()
                time.sleep(WATCH_INTERVAL_S)
        finally:
            conn.close()

    def wait_count(self, n: int, timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.seen) >= n, timeout):
                raise RuntimeError(f"alarm {n} not stored within {timeout} s")


def start_central(work: Path, broker_port: int) -> tuple[subprocess.Popen[bytes], Path]:
    db = work / "central.sqlite3"
    http = free_port()
    conf = work / "central.toml"
    conf.write_text(
        f'[store]\npath = "{db}"\n[broker]\nport = {broker_port}\nclient_id = "central-bench"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http}\n',
        encoding="utf-8",
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "shilian", "central", "run", "--config", str(conf)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=1):
                return proc, db
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("central did not start") from None
            time.sleep(0.1)


async def measure(
    work: Path, broker_port: int, db: Path, alarms: int, zone: dict[str, object]
) -> list[float]:
    watcher = Watcher(db)
    watcher.start()
    stop = asyncio.Event()
    async with simulate_board(seed=1) as sim:
        cfg = parse_config(
            {
                "node_id": NODE,
                "broker": {"port": broker_port},
                "outbox": {"path": str(work / "outbox.sqlite3")},
                "metrics": {"enabled": False},
                "alarm_board": {
                    "device": sim.slave_path,
                    "zones": [zone],
                },
            }
        )
        agent = Agent(cfg, serve_metrics=False, serve_local_socket=False)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(agent.run(stop))
            try:
                await asyncio.wait_for(agent.started.wait(), 60)
                debounce = ZoneConfig.model_validate(zone).debounce_ms
                hold = (debounce + 20) / 1000  # held past the debounce, so it counts
                latencies: list[float] = []
                for i in range(WARMUP + alarms):
                    t0 = time.monotonic()
                    sim.press(1, hold_s=hold)
                    await asyncio.to_thread(watcher.wait_count, i + 1, ALARM_TIMEOUT_S)
                    if i >= WARMUP:
                        latencies.append(watcher.seen[i] - t0)
                    for _ in range(RELEASE_POLLS):  # released (a simulator timer) first
                        if not sim.core.inputs[0]:
                            break
                        await asyncio.sleep(0.001)
                    else:
                        raise RuntimeError("the simulator did not release the button")
                    # released for longer than the debounce, or the next press is the same alarm
                    await asyncio.sleep(hold)
                return latencies
            finally:
                stop.set()
                watcher.stop.set()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alarms", type=int, default=1000)
    ap.add_argument("--debounce-ms", type=int, default=None, help="default: the config's")
    ap.add_argument("--trailing", action="store_true", help="a trailing-edge zone")
    args = ap.parse_args()
    zone: dict[str, object] = {"input": 1, "kind": "panic"}
    if args.debounce_ms is not None:
        zone["debounce_ms"] = args.debounce_ms
    if args.trailing:
        zone["debounce"] = "trailing"
    zcfg = ZoneConfig.model_validate(zone)
    with tempfile.TemporaryDirectory() as tmp, Mosquitto() as broker:
        work = Path(tmp)
        central, db = start_central(work, broker.port)
        try:
            lat = asyncio.run(measure(work, broker.port, db, args.alarms, zone))
        finally:
            central.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                central.wait(10)
            if central.poll() is None:
                central.kill()
                central.wait()
    ms = sorted(x * 1000 for x in lat)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    print(
        json.dumps(
            {
                "p50_ms": round(statistics.median(ms), 2),
                "p99_ms": round(q[98], 2),
                "max_ms": round(ms[-1], 2),
                "mean_ms": round(statistics.fmean(ms), 2),
                "alarms": len(ms),
                "debounce_ms": zcfg.debounce_ms,
                "debounce": zcfg.debounce,
                "target_p50_ms": 20,
                "target_p99_ms": 100,
            }
        )
    )


if __name__ == "__main__":
    main()
