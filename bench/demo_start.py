"""How long ``shilian demo`` takes from nothing to central answering, with the month of history
(shilian.demo_history) and without it (the baseline, in the same process), for Nanning.

    python bench/demo_start.py [--runs 3]

Each run: a fresh work directory, the demo's admin account, then (history runs only) the month
seeded and the demo's alert rules in central.toml, then ``shilian central run`` spawned and
polled until ``/healthz`` answers. Baseline and history runs alternate so the machine's noise
falls on both. The fleet is not started (it takes as long either way). Prints one JSON line
with the medians: ``baseline_s``, ``history_s``, ``seed_s`` (the seeding alone) and
``ratio`` (history / baseline).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shilian import demo
from shilian.broker import Mosquitto, free_port

CITY = "4501"
SHARE = 0.7688


def run_once(broker_port: int, history: bool) -> tuple[float, float]:
    """(seconds to /healthz, seconds of seeding)."""
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        work = Path(tmp)
        port = free_port()
        t0 = time.perf_counter()
        conf = demo._central_config(work, broker_port, port, CITY)
        if not history:  # the demo's config before it shipped rules
            text = conf.read_text(encoding="utf-8")
            conf.write_text(text[: text.index("[alerts]")], encoding="utf-8")
        demo._demo_admin(work / "central.sqlite3")
        seed_s = 0.0
        if history:
            t1 = time.perf_counter()
            demo.seed_history(work / "central.sqlite3", CITY, SHARE, time.time())
            seed_s = time.perf_counter() - t1
        p = subprocess.Popen(
            [sys.executable, "-m", "shilian", "central", "run", "--config", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                        break
                except OSError:
                    if p.poll() is not None:
                        raise RuntimeError("central exited") from None
                    time.sleep(0.05)
            return time.perf_counter() - t0, seed_s
        finally:
            p.terminate()
            p.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-demo-broker-") as tmp:
        broker = Mosquitto(workdir=Path(tmp))
        broker.start()
        try:
            base: list[float] = []
            hist: list[float] = []
            seeds: list[float] = []
            for _ in range(args.runs):
                base.append(run_once(broker.port, history=False)[0])
                total, seed_s = run_once(broker.port, history=True)
                hist.append(total)
                seeds.append(seed_s)
                print(f"baseline {base[-1]:.2f} s, history {total:.2f} s", file=sys.stderr)
        finally:
            broker.stop()
    b, h = statistics.median(base), statistics.median(hist)
    print(
        json.dumps(
            {
                "bench": "demo_start",
                "city": CITY,
                "runs": args.runs,
                "baseline_s": round(b, 3),
                "history_s": round(h, 3),
                "seed_s": round(statistics.median(seeds), 3),
                "ratio": round(h / b, 3),
                "baseline_runs": [round(x, 3) for x in base],
                "history_runs": [round(x, 3) for x in hist],
            }
        )
    )


if __name__ == "__main__":
    main()
