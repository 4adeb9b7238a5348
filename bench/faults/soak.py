"""Soak: a fleet of simulated nodes at steady state for a long time against a real central; its
memory must not creep, nothing may be lost, coverage must stay the truth.

    python bench/faults/soak.py [--nodes 10000] [--minutes 30] [--warmup 300] [--sample 30]
                                [--event-interval 600] [--workers 0] [--results FILE]

``shilian simulate``'s steady scenario end to end with real processes: a real mosquitto (no
connection limit), a real central process (``shilian central run``) and the simulator's worker
processes, each node a real MQTT 5 connection (birth, will, health every 30 s, information
events at random, on average one every ``--event-interval`` seconds a node: 10,000 nodes make
about 17 events/s and 333 health reports/s). The simulator checks central's coverage against
the plan every few seconds for the whole run. Every ``--sample`` seconds the resident memory and
CPU time of central's process are read from /proc. A subscriber follows central's
stored-acknowledgements (``shilian/v1/+/ack``) for every node.

At the end, once the nodes have stopped (each sends its last events, then its goodbye): events
sent by the nodes (each node's seq), stored by central (distinct rows), acknowledged by central
(its last acknowledgement of each node's boot). ``not_yet_stored``: sent and not stored at the
cut-off (the moment the nodes have stopped: still on their way, or queued at the broker);
``lost``: sent and still not stored once central has drained (its stored count reached the sent
count, or stopped growing for NO_PROGRESS_S).

``--tracemalloc DIR`` runs central with ``SHILIAN_TRACEMALLOC=DIR`` (central/memtrace.py): a
snapshot after the warm-up, one a sample interval before the nodes stop, and the lines whose
allocations changed most between them (``tracemalloc_top``, KiB). Tracing slows central and its
tables count in its resident memory: compare such a run's figures only with another traced run.

Final JSON line: ``rss_growth_pct`` (central's resident memory, last sample against the first
one after ``--warmup`` seconds; target < 5 %), ``rss_mb_after_warmup``, ``rss_mb_end``,
``rss_mb_max``, ``rss_mb_every_5_min``, ``cpu_pct_mean`` / ``cpu_pct_max`` (of one core, per
sample interval, after the warm-up), ``lost``, ``not_yet_stored``, ``duplicated``,
``not_acked`` (sent and never covered by an acknowledgement), ``p50_delay_ms`` /
``p99_delay_ms`` / ``max_delay_ms`` (an event's timestamp on its node to central taking it:
same machine, same clock), ``coverage_ok`` (every sample of the run equal to the truth after
the first 10 s), ``mismatches``, ``events_sent``, ``health_stored``, ``catch_up_s`` (how
long central took after the nodes stopped to store their last events). No baseline in the
same process: the figures are against their targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.faults.report import append
from central import memtrace
from shilian.broker import Mosquitto
from shilian.simulate.check import CentralCoverage
from shilian.simulate.node import EVENT_KIND
from shilian.simulate.plan import Scenario, SimSpec
from shilian.simulate.runner import Simulation, default_workers
from tests.processes import ADMIN, ADMIN_PASSWORD, Central
from wire import decode
from wire.messages import StoredAck

CITY = "4501"
COVERAGE = 0.7688  # the 2022 report's figure for Nanning (bench/reconnect_storm.py)
#: After the nodes stop, central is given until its stored (then acknowledged) count stops
#: growing for this long: a central behind by minutes on a loaded machine is late, not lossy.
NO_PROGRESS_S = 30.0
#: ... and at most this long in all.
SETTLE_END_S = 900.0
_TICK = os.sysconf("SC_CLK_TCK")
#: Lines named in ``tracemalloc_top``.
TRACEMALLOC_TOP = 15


@dataclass
class Sample:
    t: float  # seconds after the start
    rss_kb: int
    cpu_s: float  # user + system CPU seconds of the process so far


def sample(pid: int, t: float) -> Sample:
    """Central's resident memory and CPU time, from /proc."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return Sample(t, rss, (int(fields[11]) + int(fields[12])) / _TICK)


@dataclass
class Acks:
    """Central's stored-acknowledgements as the nodes would hear them: per (node, boot), the
    number of events the last one covers."""

    covered: dict[tuple[str, str], int] = field(default_factory=dict)
    received: int = 0

    @property
    def total(self) -> int:
        return sum(self.covered.values())

    async def follow(self, port: int, subscribed: asyncio.Event) -> None:
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier="soak-acks", protocol=aiomqtt.ProtocolVersion.V5
        ) as client:
            await client.subscribe("shilian/v1/+/ack", qos=1)
            subscribed.set()
            async for msg in client.messages:
                ack = decode(StoredAck, bytes(msg.payload))
                self.received += 1
                for b in ack.boots:
                    n = b.upto - sum(last - first + 1 for first, last in b.missing)
                    key = (ack.node, b.boot_id)
                    self.covered[key] = max(n, self.covered.get(key, 0))


def stored(db: Path) -> tuple[int, int, int, list[float]]:
    """Rows and distinct events of the simulator's kind, health rows, and each event's delay
    (ms, its timestamp to central taking it)."""
    with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as c:
        rows, distinct = c.execute(
            "SELECT count(*), count(DISTINCT node_id || '/' || boot_id || '/' || seq)"
            " FROM events WHERE kind = ?",
            (EVENT_KIND,),
        ).fetchone()
        health = c.execute("SELECT count(*) FROM health").fetchone()[0]
        delays = [
            r[0] * 1000
            for r in c.execute("SELECT recv_ts - ts FROM events WHERE kind = ?", (EVENT_KIND,))
        ]
    return int(rows), int(distinct), int(health), delays


async def _sampler(
    pid: int, start: float, every: float, out: list[Sample], snapshots_at: list[float]
) -> None:
    """Sample every ``every`` s; at the first sample past each of ``snapshots_at``, ask central
    for a tracemalloc snapshot (SIGUSR2, central/memtrace.py)."""
    while True:
        out.append(sample(pid, time.time() - start))
        if snapshots_at and out[-1].t >= snapshots_at[0]:
            os.kill(pid, signal.SIGUSR2)
            snapshots_at = snapshots_at[1:]
        await asyncio.sleep(every)


async def _snapshot_diff(folder: Path, top: int) -> list[str]:
    """The ``top`` lines whose allocations changed most from the first snapshot (after the
    warm-up) to the second (the last sample interval before the nodes stop)."""
    first, last = folder / "snapshot-1.tracemalloc", folder / "snapshot-2.tracemalloc"
    async with asyncio.timeout(120):
        while not last.exists():  # noqa: ASYNC110 (written by another process)
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # let the dump finish
    diff = tracemalloc.Snapshot.load(str(last)).compare_to(
        tracemalloc.Snapshot.load(str(first)), "lineno"
    )
    return [
        f"{d.traceback[0].filename}:{d.traceback[0].lineno} "
        f"{d.size_diff / 1024:+.1f} KiB ({d.count_diff:+d} blocks)"
        for d in diff[:top]
    ]


async def _catch_up(count: Any, want: int) -> float:
    """Wait until ``count()`` reaches ``want``, or makes no progress for :data:`NO_PROGRESS_S`
    (or :data:`SETTLE_END_S` passed); the seconds it took."""
    t0 = last_move = time.monotonic()
    seen = count()
    while seen < want and time.monotonic() - t0 < SETTLE_END_S:
        await asyncio.sleep(0.5)
        now, n = time.monotonic(), count()
        if n > seen:
            seen, last_move = n, now
        elif now - last_move > NO_PROGRESS_S:
            break
    return time.monotonic() - t0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="shilian-soak-") as tmp:
        broker = Mosquitto(workdir=Path(tmp) / "mosquitto", extra_conf="max_connections -1\n")
        broker.workdir.mkdir(parents=True)
        broker.start()
        central = Central(Path(tmp) / "central", broker.port)
        if args.tracemalloc is not None:
            central.env[memtrace.ENV] = str(args.tracemalloc)
        central.start()
        assert central.p is not None
        pid = central.p.pid
        samples: list[Sample] = []
        acks = Acks()
        try:
            spec = SimSpec(
                scope=CITY,
                nodes=args.nodes,
                coverage=COVERAGE,
                scenario=Scenario.STEADY,
                phase_s=args.minutes * 60,
                settle_s=args.settle,
                event_interval_s=args.event_interval,
                port=broker.port,
                workers=args.workers or default_workers(args.nodes),
                seed=args.seed,
            )
            async with (
                CentralCoverage(central.api, user=ADMIN, password=ADMIN_PASSWORD) as api,
                asyncio.TaskGroup() as tg,
            ):
                subscribed = asyncio.Event()
                follow = tg.create_task(acks.follow(broker.port, subscribed))
                await subscribed.wait()
                sim = Simulation.of(spec, central=api, poll_s=args.poll)
                sim.log = lambda line: print(line, file=sys.stderr)
                sampler = None

                async def start_sampling() -> None:
                    nonlocal sampler
                    while sim.start is None:  # noqa: ASYNC110 (set by the simulation, no event)
                        await asyncio.sleep(0.5)
                    await asyncio.sleep(max(0.0, sim.start - time.time()))
                    snaps: list[float] = []
                    if args.tracemalloc is not None:
                        snaps = [args.warmup, args.minutes * 60 - 2 * args.sample]
                    sampler = tg.create_task(_sampler(pid, sim.start, args.sample, samples, snaps))

                tg.create_task(start_sampling())
                ok = await sim.run()
                if sampler is not None:
                    sampler.cancel()
                samples.append(sample(pid, time.time() - (sim.start or 0)))
                sent = sum(w.events for w in sim.workers)
                at_cutoff = stored(central.db)[1]
                if args.tracemalloc is not None:
                    grown = await _snapshot_diff(args.tracemalloc, TRACEMALLOC_TOP)
                catch_up = await _catch_up(lambda: stored(central.db)[1], sent)
                await _catch_up(lambda: acks.total, sent)
                follow.cancel()
            rows, distinct, health, delays = stored(central.db)
        finally:
            central.close()
            broker.close()
    assert sim.verdict is not None
    after = [s for s in samples if s.t >= args.warmup] or samples[-1:]
    first, last = after[0], after[-1]
    cpu = [
        100 * (b.cpu_s - a.cpu_s) / (b.t - a.t) for a, b in itertools.pairwise(after) if b.t > a.t
    ]
    delays.sort()
    return {
        "nodes": args.nodes,
        "minutes": args.minutes,
        "rss_growth_pct": round(100 * (last.rss_kb - first.rss_kb) / first.rss_kb, 2),
        "rss_mb_after_warmup": round(first.rss_kb / 1024, 1),
        "rss_mb_end": round(last.rss_kb / 1024, 1),
        "rss_mb_max": round(max(s.rss_kb for s in samples) / 1024, 1),
        # the curve, one sample every 5 minutes: levelling off or still climbing
        "rss_mb_every_5_min": [
            round(s.rss_kb / 1024, 1) for s in samples if s.t % 300 < args.sample
        ],
        "cpu_pct_mean": round(statistics.mean(cpu), 1) if cpu else None,
        "cpu_pct_max": round(max(cpu), 1) if cpu else None,
        "lost": sent - distinct,
        "not_yet_stored": sent - at_cutoff,
        "duplicated": rows - distinct,
        "not_acked": sent - acks.total,
        "p50_delay_ms": round(statistics.median(delays), 1) if delays else None,
        "p99_delay_ms": round(_p99(delays), 1) if delays else None,
        "max_delay_ms": round(delays[-1], 1) if delays else None,
        "coverage_ok": ok,
        "mismatches": sum(len(r.mismatches) for r in sim.verdict.results),
        "coverage_samples": sum(r.samples for r in sim.verdict.results),
        "catch_up_s": round(catch_up, 1),
        "events_sent": sent,
        "health_stored": health,
        "samples": len(samples),
        "warmup_s": args.warmup,
        "worker_peak_rss_mb": round(max(w.rss_kb for w in sim.workers) / 1024, 1),
        "wall_s": round(time.monotonic() - started, 1),
        **({"tracemalloc_top": grown} if args.tracemalloc is not None else {}),
    }


def _p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[98] if len(xs) > 1 else xs[0]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=300.0, help="seconds before memory counts")
    p.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    p.add_argument("--event-interval", type=float, default=600.0, help="mean s between events")
    p.add_argument("--settle", type=float, default=10.0, help="seconds central gets at start")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between coverage checks")
    p.add_argument("--workers", type=int, default=0, help="simulator processes (0: auto)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--results", type=Path, default=None)
    p.add_argument(
        "--tracemalloc", type=Path, default=None, help="snapshots' folder: trace central's memory"
    )
    return p


def main() -> None:
    args = parser().parse_args()
    # The broker inherits this limit: 10,000 connections need more than the usual 1,024 fds.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    figures = asyncio.run(run(args))
    if args.results is not None:
        append(args.results, "soak", figures)
    print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()
