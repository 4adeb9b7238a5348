"""The HTTP API's reads (central.views.ReadViews) on PostgreSQL against SQLite (the baseline),
same process, same rows: what ``[store] url`` costs or gains for the dashboard and the API.

Both databases get the same rows through central's ingest store: ``--nodes`` nodes in the
Nanning villages with their health and ``--events`` events each. Then a mix of API reads runs
through one ReadViews per backend, ``--concurrency`` at a time (the API's 4 reader threads): a
page of the node list, a node's detail (one read transaction, six queries), one node's events,
the newest events of a county. The backends alternate per round (sqlite, postgresql,
postgresql, sqlite, ...); the figures are medians. PostgreSQL is the local server on
127.0.0.1:5432 (``SHILIAN_TEST_PG`` overrides the admin URL), in a database created for the run
and dropped after it.

    python bench/read_views.py [--nodes 1000] [--events 20] [--reads 2000] [--rounds 3]

Prints one JSON line: sqlite_reads_per_s, postgresql_reads_per_s, ratio_pg_vs_sqlite, every
round's figures, the load average and the set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from central import views
from central.db import Db, Target
from central.store import EventRow, HealthRow, NodeRow, SqliteStore, Write
from central.store_pg import PostgresStore
from registry import Registry
from tests.postgres import scratch_database

NANNING = Registry.from_package("4501")


def rows(nodes: int, events: int) -> list[Write]:
    villages = [u.code for u in NANNING.villages()]
    out: list[Write] = []
    for i in range(nodes):
        v = villages[i % len(villages)]
        node = f"{v}-{i // len(villages):x}"
        health = json.dumps({"cpu_pct": 3.0, "outbox_depth": i % 7})
        out.append(
            NodeRow(
                node,
                v,
                v[:6],
                "online" if i % 5 else "offline",
                1.0,
                "connect",
                "b",
                1,
                30.0,
                "1.0",
                1.0,
                2.0,
                health,
            )
        )
        out.extend(HealthRow(node, 10.0 + k, 10.5 + k, health) for k in range(3))
        out.extend(
            EventRow(node, v, "b", s, 100.0 + s, 100.5 + s, "info", "door", None, '{"z":1}')
            for s in range(1, events + 1)
        )
    return out


def node_ids(n: int) -> list[str]:
    villages = [u.code for u in NANNING.villages()]
    return [f"{villages[i % len(villages)]}-{i // len(villages):x}" for i in range(n)]


def queries(nodes: list[str], n: int) -> list[Callable[[Db], Any]]:
    out: list[Callable[[Db], Any]] = []
    for i in range(n):
        node = nodes[(i * 7919) % len(nodes)]
        kind = i % 4
        if kind == 0:
            f = views.NodeFilter(county=node[:6])
            out.append(functools.partial(views.list_nodes, f=f, limit=100, offset=0))
        elif kind == 1:
            out.append(functools.partial(views.node_detail, node_id=node))
        elif kind == 2:
            out.append(
                functools.partial(views.list_events, f=views.EventFilter(node=node), limit=50)
            )
        else:
            f3 = views.EventFilter(county=node[:6])
            out.append(functools.partial(views.list_events, f=f3, limit=50))
    return out


async def run(target: Target, work: list[Callable[[Db], Any]], concurrency: int) -> float:
    reads = views.ReadViews(target, workers=concurrency)
    sem = asyncio.Semaphore(concurrency)

    async def one(q: Callable[[Db], Any]) -> None:
        async with sem:
            await reads.run(q)

    try:
        await reads.run(work[0])  # the pool's first connection is not part of the figure
        t = time.perf_counter()
        await asyncio.gather(*(one(q) for q in work))
        return time.perf_counter() - t
    finally:
        reads.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--events", type=int, default=20)
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=views.READ_WORKERS)
    a = ap.parse_args()
    data = rows(a.nodes, a.events)
    work = queries(node_ids(a.nodes), a.reads)
    figures: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    with tempfile.TemporaryDirectory() as tmp, scratch_database() as url:
        path = Path(tmp) / "central.db"
        for store in (SqliteStore(path), PostgresStore(url)):
            store.apply(data)
            store.close()
        targets: dict[str, Target] = {"sqlite": path, "postgresql": url}
        for r in range(a.rounds):
            order = ("sqlite", "postgresql") if r % 2 == 0 else ("postgresql", "sqlite")
            for name in order:
                took = asyncio.run(run(targets[name], work, a.concurrency))
                figures[name].append(round(a.reads / took, 1))
    sqlite = statistics.median(figures["sqlite"])
    pg = statistics.median(figures["postgresql"])
    print(
        json.dumps(
            {
                "sqlite_reads_per_s": sqlite,
                "postgresql_reads_per_s": pg,
                "ratio_pg_vs_sqlite": round(pg / sqlite, 3),
                "rounds": figures,
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "nodes": a.nodes,
                "events_per_node": a.events,
                "reads": a.reads,
                "concurrency": a.concurrency,
            }
        )
    )


if __name__ == "__main__":
    main()
