"""A reconnect storm at scale: 10,000 simulated nodes after a broker restart.

    python bench/reconnect_storm.py [--nodes 10000] [--workers 2] [--steady 30] [--after 120]

``shilian simulate``'s broker-restart scenario, end to end with real processes: a real
mosquitto (persistence on, no connection limit), a real central process (``shilian central
run``, reconnect grace as shipped) and the simulator's worker processes, each node a real MQTT 5
connection speaking the wire contract with the edge's backoff (1 s doubling, full jitter, cap
60 s; 10 s connect timeout; health every 30 s). Nanning (4501) at 76.88 % coverage: 1,427
villages, about 7 nodes each. After a steady phase the broker is stopped with SIGTERM (it
publishes every node's will, kept retained) and started at once; the simulator samples central's
coverage API twice a second, and this script reads central's node list every few seconds.

Final JSON line: ``seconds_to_99pct`` — from the broker's return until central holds a new birth
(a higher ``birth_seq``) from 99 % of the nodes; ``seconds_to_99pct_connected`` the same as the
nodes see it (CONNACK); ``min_reported_coverage`` — the lowest city ratio central reported from
the restart to the end; ``truth_coverage`` — the true ratio throughout (every node stays up);
``mismatches`` — samples where central's city or county figures differed from the truth (the
simulator's own check); ``worker_peak_rss_mb`` — memory of the largest worker process.
No same-process baseline exists for this figure: ``bench/broker_outage.py`` compares the
reconnect grace with none at 1,856 nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shilian.broker import Mosquitto
from shilian.simulate.check import CentralCoverage
from shilian.simulate.plan import Scenario, SimSpec
from shilian.simulate.runner import Simulation
from tests.processes import ADMIN, ADMIN_PASSWORD, Central

CITY = "4501"
COVERAGE = 0.7688  # the 2022 report's figure for Nanning
#: Seconds between reads of central's whole node list (10 pages of 1,000 at 10,000 nodes).
NODES_READ_S = 2.0
PAGE = 1000


async def _reconnects(api: CentralCoverage) -> float:
    """Central's count of reconnections to the broker (its public /metrics)."""
    for line in (await api.text("/metrics")).splitlines():
        if line.startswith("shilian_broker_reconnects_total "):
            return float(line.split()[1])
    return 0.0


async def _birth_seqs(api: CentralCoverage) -> dict[str, int]:
    out: dict[str, int] = {}
    offset = 0
    while True:
        body: dict[str, Any] = await api.get(f"/api/v1/nodes?limit={PAGE}&offset={offset}")
        out.update({n["node_id"]: int(n["birth_seq"]) for n in body["nodes"]})
        offset += PAGE
        if offset >= body["total"]:
            return out


@dataclass
class Storm:
    """The broker restart, and when the nodes were back: ``before`` is every node's
    ``birth_seq`` at central just before the restart, ``back_at`` the broker's return (Unix)."""

    broker: Mosquitto
    api: CentralCoverage | None = None
    before: dict[str, int] = field(default_factory=dict)
    back_at: float = 0.0
    reconnects_before: float = 0.0
    down_s: float = 0.0
    restarted: asyncio.Event = field(default_factory=asyncio.Event)
    to_99_central: float | None = None
    to_99_connected: float | None = None
    central_back: float | None = None
    connects_before: int = 0

    async def restart(self) -> None:
        assert self.api is not None
        self.before = await _birth_seqs(self.api)
        self.reconnects_before = await _reconnects(self.api)
        down = time.time()
        await asyncio.to_thread(self.broker.stop)  # SIGTERM: wills published, state saved
        await asyncio.to_thread(self.broker.start)
        self.back_at = time.time()
        self.down_s = self.back_at - down
        self.restarted.set()

    async def watch(self, sim: Simulation) -> None:
        """Until 99 % of the nodes are back, at central (a new birth) and as they see it."""
        assert self.api is not None
        await self.restarted.wait()
        # Every node connected once before the restart; each connect after it is a return.
        self.connects_before = sum(w.connects for w in sim.workers)
        want = 0.99 * sim.spec.nodes
        while self.to_99_central is None or self.to_99_connected is None:
            returned = sum(w.connects for w in sim.workers) - self.connects_before
            if self.to_99_connected is None and returned >= want:
                self.to_99_connected = time.time() - self.back_at
            if self.central_back is None and await _reconnects(self.api) > self.reconnects_before:
                self.central_back = time.time() - self.back_at
            if self.to_99_central is None:
                seqs = await _birth_seqs(self.api)
                newer = sum(1 for n, s in seqs.items() if s > self.before.get(n, s))
                if newer >= want:
                    self.to_99_central = time.time() - self.back_at
            if time.time() - self.back_at > sim.spec.restart_s:
                return
            await asyncio.sleep(NODES_READ_S if self.to_99_central is None else 0.2)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="shilian-storm-") as tmp:
        broker = Mosquitto(workdir=Path(tmp) / "mosquitto", extra_conf="max_connections -1\n")
        broker.workdir.mkdir(parents=True)
        broker.start()
        central = Central(Path(tmp) / "central", broker.port)
        central.start()
        try:
            spec = SimSpec(
                scope=CITY,
                nodes=args.nodes,
                coverage=COVERAGE,
                scenario=Scenario.BROKER_RESTART,
                phase_s=args.steady,
                settle_s=args.settle,
                restart_s=args.after,
                port=broker.port,
                workers=args.workers,
                seed=args.seed,
            )
            storm = Storm(broker)
            async with CentralCoverage(central.api, user=ADMIN, password=ADMIN_PASSWORD) as api:
                storm.api = api
                sim = Simulation.of(spec, central=api, poll_s=0.5, restart=storm.restart)
                sim.log = lambda line: print(line, file=sys.stderr)
                async with asyncio.TaskGroup() as tg:
                    watch = tg.create_task(storm.watch(sim))
                    ok = await sim.run()
                    watch.cancel()
        finally:
            central.close()
            broker.close()
    assert sim.start is not None and sim.verdict is not None and sim.plan.restart_at is not None
    restart_t = storm.back_at - sim.start
    villages = sim.plan.villages[CITY]
    after = [f[CITY] for t, f in sim.samples if t >= restart_t and CITY in f]
    truth = sim.plan.truth[CITY]
    mismatches = sum(len(r.mismatches) for r in sim.verdict.results)
    return {
        "nodes": args.nodes,
        "workers": args.workers,
        "villages_covered_truth": truth,
        "seconds_to_99pct": _round(storm.to_99_central),
        "seconds_to_99pct_connected": _round(storm.to_99_connected),
        "central_reconnected_s": _round(storm.central_back),
        "broker_down_s": round(storm.down_s, 2),
        "min_reported_coverage": round(min(after) / villages, 4) if after else None,
        "truth_coverage": round(truth / villages, 4),
        "min_reported_villages": min(after) if after else None,
        "samples_after_restart": len(after),
        "mismatches": mismatches,
        "check_ok": ok,
        "worker_peak_rss_mb": round(max(w.rss_kb for w in sim.workers) / 1024, 1),
        "health_interval_s": spec.health_interval_s,
        "wall_s": round(time.monotonic() - started, 1),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steady", type=float, default=30.0, help="seconds before the restart")
    p.add_argument("--settle", type=float, default=10.0, help="seconds central gets at start")
    p.add_argument("--after", type=float, default=120.0, help="seconds checked after it")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    # The broker inherits this limit: 10,000 connections need more than the usual 1,024 fds.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(json.dumps(asyncio.run(_main(args)), ensure_ascii=False))


if __name__ == "__main__":
    main()
