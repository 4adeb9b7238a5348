"""Events stored per second on PostgreSQL by one and by two ingest processes of a shared group
(``shilian central run --role ingest``, docs/scale.md), on the same broker and backlog.

Per phase: a scratch database; the group's member sessions are created (the processes start,
subscribe, and are killed: their persistent sessions stay), N valid events (pre-encoded, many
node ids, QoS 1) are published and queued by the broker round-robin to the members, the
processes start again and drain them. Stored msgs/s = (N - 1) / (last - first ``recv_ts`` in the
events table), so process start-up and migrations are not counted. Phases alternate the order
(1, 2, 2, 1, ...), ``--rounds`` rounds; the figures are medians.

    python bench/ingest_scaleout.py [--n 20000] [--nodes 200] [--rounds 2]

Prints one JSON line: ``one``, ``two`` (stored msgs/s), ``ratio`` (two / one), every phase's
figure, the set-up and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import make_payloads, publish_all
from shilian.broker import Mosquitto

ADMIN_URL = os.environ.get("SHILIAN_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
#: Generous bound for one phase on a shared 2-core machine.
PHASE_TIMEOUT_S = 600.0


def start(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as f:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shilian",
                "central",
                "run",
                "--role",
                "ingest",
                "-c",
                str(conf),
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
        )


def wait(cond: object, what: str, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while not cond():  # type: ignore[operator]
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"an ingest process exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def phase(broker: Mosquitto, work: Path, k: int, msgs: list[tuple[str, bytes]]) -> float:
    name = f"shilian_bench_{secrets.token_hex(5)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    d = work / name
    d.mkdir()
    conf = d / "central.toml"
    conf.write_text(
        f'[store]\nurl = "{url}"\n[registry]\ndefault_scope = "4501"\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {broker.port}\nclient_id = "{name}"\n'
        f'[ingest]\nshared_group = "{name}"\nmembers = {k}\n',
        encoding="utf-8",
    )
    logs = [d / f"ingest{i}.log" for i in range(k)]
    try:
        procs = [start(conf, log) for log in logs]
        wait(lambda: all("subscribed" in log.read_text() for log in logs), "subscribe", procs)
        for p in procs:  # killed at once: no survivor adopts (and ends) a member session
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait()
        publish_all(broker.port, msgs)
        procs = [start(conf, log) for log in logs]

        def stored() -> bool:
            with psycopg.connect(url) as c:
                row = c.execute("SELECT count(*) FROM events").fetchone()
            return bool(row and row[0] == len(msgs))

        wait(stored, "every event stored", procs)
        with psycopg.connect(url) as c:
            row = c.execute("SELECT min(recv_ts), max(recv_ts) FROM events").fetchone()
        assert row is not None
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        return (len(msgs) - 1) / (row[1] - row[0])
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    load_before = os.getloadavg()
    runs: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="shilian-scaleout-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "broker")
        (work / "broker").mkdir()
        broker.start()
        try:
            for r in range(args.rounds):
                for k in (1, 2) if r % 2 == 0 else (2, 1):
                    msgs = make_payloads(args.n, args.nodes)  # new boots: nothing deduplicated
                    rate = phase(broker, work, k, msgs)
                    runs[k].append(round(rate))
                    print(f"round {r + 1}: {k} process(es): {rate:,.0f} msg/s", file=sys.stderr)
        finally:
            broker.stop()
    one, two = statistics.median(runs[1]), statistics.median(runs[2])
    print(
        json.dumps(
            {
                "one": round(one),
                "two": round(two),
                "ratio": round(two / one, 2),
                "one_runs": runs[1],
                "two_runs": runs[2],
                "n": args.n,
                "nodes": args.nodes,
                "rounds": args.rounds,
                "cpus": os.cpu_count(),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            }
        )
    )


if __name__ == "__main__":
    main()
