"""The coverage figure through a broker outage: does central ever show the city below the truth?

    python bench/broker_outage.py [--nodes 1856] [--outage 120] [--interval 30] [--scale 1]

Nanning's 1,856 villages, one node each, every node alive throughout (the truth is 1,856 at
every moment). Each node is a lightweight MQTT 5 client of the fleet simulator
(``shilian/simulate/node.py``) on its own connection: the same wire messages as the edge
(birth with its matching will, health every 30 s, a new birth per connection) and the edge's
own reconnect backoff (``resilience.backoff.Backoff``: 1 s doubling, full jitter, cap 60 s;
10 s connect timeout) — not the full edge agent, whose outbox, devices and commands the
figure does not depend on and which would cost ~1,856 SQLite files.
Central is the real ``CentralService`` (real MQTT link, ingest, liveness, coverage, SQLite) in
this process, retrying at once when the broker is back (the worst case: before any node), against
a real mosquitto (persistence on), which is stopped with SIGTERM (it publishes every node's will,
kept retained) and started again after the outage.

Two runs at the same moment, in this process, each with its own broker, central and fleet, the
same seeds: central as shipped (reconnect grace ``wire.limits.RECONNECT_GRACE_S``, 80 s) and the
baseline with the grace set to 0 (the former behaviour: 1.5 x interval from central's reconnect).
``--scale`` multiplies every duration, for a quick check of the script only: at 0.1 two fleets
reconnect within 6 s with a 1 s connect timeout, which this 2-core machine cannot serve (attempts
time out and back off again), so shortened figures say nothing about production's.

Final JSON line: ``worst_deficit_villages`` — the lowest city figure central reported minus the
truth, in villages, from the outage to the end (0: never below the truth; negative: a dip);
``worst_deficit_points`` the same in percentage points of the city's villages;
``seconds_to_exact`` — from the broker's return until the figure is exact and stays exact (0 if
it never left it); the same keys prefixed ``baseline_`` for the grace-0 run; and
``last_node_back_s``, the latest reconnect of a node after the broker's return.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from central.config import BrokerConfig, CentralConfig, HttpConfig, StoreConfig
from central.service import CentralService
from registry import Registry
from shilian.broker import Mosquitto
from shilian.simulate.node import SimNode, make_fleet
from wire.limits import (
    HEALTH_GRACE_FACTOR,
    NODE_OPERATION_TIMEOUT_S,
    RECONNECT_BASE_S,
    RECONNECT_CAP_S,
    reconnect_window_s,
)

CITY = "4501"
#: Coverage is read this often (in-process, from central's coverage index).
SAMPLE_S = 0.1
#: Nodes started per second at start-up (the demo fleet's rate: no connect storm at start).
START_RATE_PER_S = 300.0
#: Longest wait for a condition (every node online, central connected) on a loaded machine.
WAIT_S = 300.0


@dataclass
class Run:
    name: str
    grace_s: float
    samples: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, covered)
    broker_back: float = 0.0
    nodes: list[SimNode] = field(default_factory=list)
    reconnected_at: dict[str, float] = field(default_factory=dict)


async def _until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _scenario(run: Run, args: argparse.Namespace, villages: list[str], work: Path) -> None:
    s = args.scale
    interval = args.interval * s
    (work / "mosquitto").mkdir(parents=True)
    broker = Mosquitto(workdir=work / "mosquitto")
    broker.start()
    try:
        cfg = CentralConfig(
            broker=BrokerConfig(port=broker.port, client_id="central-bench", keepalive_s=5),
            store=StoreConfig(path=work / "central.db"),
            http=HttpConfig(port=0),
        )
        # Central retries at once after the outage (its own jitter drawn at 1 % of its window):
        # the worst case, central back before any node, so the figure shows what the nodes'
        # reconnect spread alone does to it.
        svc = CentralService(cfg, reconnect_grace_s=run.grace_s, rng=lambda: 0.01)
        central = asyncio.create_task(svc.run())
        run.nodes = make_fleet(
            [f"{v}-a" for v in villages],
            broker.port,
            interval_s=interval,
            backoff_base_s=RECONNECT_BASE_S * s,
            backoff_cap_s=RECONNECT_CAP_S * s,
            connect_timeout_s=NODE_OPERATION_TIMEOUT_S * s,
            seed=args.seed,
        )
        stop = asyncio.Event()
        n = len(run.nodes)
        try:
            async with asyncio.TaskGroup() as tg:
                await _until(lambda: svc._started.is_set() and svc.link.connected, "central")
                for i, node in enumerate(run.nodes):
                    tg.create_task(node.run(stop))
                    if i % 50 == 49:
                        await asyncio.sleep(50 / START_RATE_PER_S)
                await _until(lambda: svc.coverage.summary(CITY).covered == n, "all online")
                await asyncio.sleep(interval)  # a health round at steady state
                t0 = time.monotonic()
                await asyncio.to_thread(broker.stop)
                sampler = tg.create_task(_sample(run, svc, stop))
                await asyncio.sleep(args.outage * s - (time.monotonic() - t0))
                before = {node.node_id: node.connects for node in run.nodes}
                await asyncio.to_thread(broker.start)
                run.broker_back = time.monotonic()
                tg.create_task(_watch_reconnects(run, before, stop))
                await _until(lambda: svc.link.connected, "central reconnected")
                # Long enough for the hold to end and one more deadline after it.
                settle = reconnect_window_s() * s + HEALTH_GRACE_FACTOR * interval + 5.0 * s
                await asyncio.sleep(settle)
                stop.set()
                await sampler
        finally:
            stop.set()
            svc.stop()
            await central
    finally:
        broker.close()


async def _sample(run: Run, svc: CentralService, stop: asyncio.Event) -> None:
    while not stop.is_set():
        run.samples.append((time.monotonic(), svc.coverage.summary(CITY).covered))
        await asyncio.sleep(SAMPLE_S)


async def _watch_reconnects(run: Run, first: dict[str, int], stop: asyncio.Event) -> None:
    while not stop.is_set() and len(run.reconnected_at) < len(run.nodes):
        now = time.monotonic()
        for node in run.nodes:
            if node.node_id not in run.reconnected_at and node.connects > first[node.node_id]:
                run.reconnected_at[node.node_id] = now
        await asyncio.sleep(SAMPLE_S)


def _figures(run: Run, truth: int, villages_total: int) -> dict[str, float]:
    worst = min(c - truth for _, c in run.samples)
    off = [t for t, c in run.samples if c != truth]
    to_exact = max(0.0, max(off) + SAMPLE_S - run.broker_back) if off else 0.0
    return {
        "worst_deficit_villages": worst,
        "worst_deficit_points": round(100.0 * worst / villages_total, 2),
        "seconds_to_exact": round(to_exact, 1),
    }


async def _main(args: argparse.Namespace) -> dict[str, object]:
    registry = Registry.from_package(CITY)
    villages = [u.code for u in registry.villages()][: args.nodes]
    total = len(list(registry.villages()))
    shipped = Run("shipped", reconnect_window_s() * args.scale)
    baseline = Run("grace 0", 0.0)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="shilian-outage-") as tmp:
        await asyncio.gather(
            _scenario(shipped, args, villages, Path(tmp) / "shipped"),
            _scenario(baseline, args, villages, Path(tmp) / "baseline"),
        )
    a = _figures(shipped, len(villages), total)
    b = _figures(baseline, len(villages), total)
    back = [t - shipped.broker_back for t in shipped.reconnected_at.values()]
    return {
        "nodes": len(villages),
        "health_interval_s": args.interval * args.scale,
        "outage_s": args.outage * args.scale,
        "reconnect_grace_s": shipped.grace_s,
        "client": "shilian/simulate/node.py (wire messages + edge backoff), central in-process",
        **a,
        **{f"baseline_{k}": v for k, v in b.items()},
        "nodes_reconnected": len(shipped.reconnected_at),
        "last_node_back_s": round(max(back), 1) if back else None,
        "wall_s": round(time.monotonic() - started, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--nodes", type=int, default=1856)
    p.add_argument("--outage", type=float, default=120.0, help="seconds the broker is down")
    p.add_argument("--interval", type=float, default=30.0, help="health interval, seconds")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every duration")
    p.add_argument("--seed", type=int, default=12)
    args = p.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # two fleets' sockets
    result = asyncio.run(_main(args))
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
