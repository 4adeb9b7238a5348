"""The ingest store's write rate on PostgreSQL against SQLite (the baseline), same process, same
batches: what ``[store] url`` costs or gains on the hot path.

Two workloads, batches as central's ingest makes them, applied with :meth:`SqlStore.apply` (one
transaction each, durable commit: SQLite WAL ``synchronous=FULL``; PostgreSQL
``synchronous_commit=on``):

- **events**: per batch one node upsert for each of 10 nodes and ``--batch`` events;
- **health**: per batch ``--health-batch`` health reports of as many nodes (a node upsert with
  its ``last_health`` and a health row each), the nodes taken in turn from ``--health-nodes``,
  so that every node's history reaches its bound and is pruned as in production.

Three stores, each on its own empty database: ``sqlite``; ``postgresql`` (the store as shipped:
one set-based statement per kind of row); ``postgresql_rowwise``, the PostgreSQL write path
before it, kept here as the baseline: a statement per row, pipelined, every reporting node's
health pruned in every batch, ``nodes`` at the default fillfactor. The order of the stores
rotates each round; figures are medians. PostgreSQL is the local server on 127.0.0.1:5432
(``SHILIAN_TEST_PG`` overrides the admin URL), in databases created for the run and dropped
after it.

    python bench/store_backends.py [--batches 200] [--batch 100] [--health-batches 120]
        [--health-batch 500] [--health-nodes 1000] [--rounds 3]

Prints one JSON line: per workload and store the rate (events/s, health reports/s), the ratios
against SQLite and against the row-wise path, every round's figures, the load average before
and after, and the set-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from central.store import EventRow, HealthRow, NodeRow, SqliteStore, SqlStore, Write
from central.store_pg import PostgresStore
from central.write_batch import FoldedBatch, HealthPrune
from tests.postgres import scratch_database

#: Nodes whose events share a batch (central's batches mix nodes).
NODES_PER_BATCH = 10


def batches(n: int, size: int, first_seq: int) -> list[list[Write]]:
    out: list[list[Write]] = []
    seq = first_seq
    for b in range(n):
        writes: list[Write] = []
        for k in range(NODES_PER_BATCH):
            node = f"450102001{k:03d}-a"
            row = NodeRow(node, node[:12], node[:6], "online", 1.0, "connect", "b", 1, 30.0,
                          "1.0", 1.0, float(b))  # fmt: skip
            writes.append(row)
        for i in range(size):
            node = f"450102001{i % NODES_PER_BATCH:03d}-a"
            seq += 1
            data = '{"zone":3,"text":"门磁打开"}'
            writes.append(EventRow(node, node[:12], "b", seq, 1.0, 1.0, "info", "k", None, data))
        out.append(writes)
    return out


def health_batches(n: int, size: int, nodes: int, first: int) -> list[list[Write]]:
    """``n`` batches of ``size`` reports, nodes in turn; report ``first + i`` at time ``i``."""
    out: list[list[Write]] = []
    k = first
    for _ in range(n):
        writes: list[Write] = []
        for _ in range(size):
            node = f"4501{k % nodes:08d}-a"
            t = float(k)
            body = f'{{"uptime_s":{k},"disk_free_pct":71.5,"cpu_pct":3.2}}'
            writes.append(NodeRow(node, node[:12], node[:6], "online", 1.0, "connect", "b", 1,
                                  30.0, "1.0", 1.0, t, body))  # fmt: skip
            writes.append(HealthRow(node, t, t, body))
            k += 1
        out.append(writes)
    return out


class RowwisePostgres(PostgresStore):
    """The PostgreSQL write path before set-based statements: one statement per row (SQLite's
    :meth:`SqlStore._write`), pipelined, each reporting node's health pruned in every batch, and
    ``nodes`` at the default fillfactor (100, as before migration 0003)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._health_prune = HealthPrune(1)
        self.conn.execute("ALTER TABLE nodes RESET (fillfactor)")

    def _write(self, batch: FoldedBatch, prune: Sequence[str]) -> None:
        SqlStore._write(self, batch, prune)


def run(store: SqlStore, work: list[list[Write]]) -> float:
    t = time.perf_counter()
    for writes in work:
        store.apply(writes)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch", type=int, default=100, help="events per batch")
    ap.add_argument("--health-batches", type=int, default=120)
    ap.add_argument("--health-batch", type=int, default=500, help="health reports per batch")
    ap.add_argument("--health-nodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    events = a.batches * a.batch
    reports = a.health_batches * a.health_batch
    names = ["sqlite", "postgresql", "postgresql_rowwise"]
    rates: dict[str, dict[str, list[float]]] = {"events": {}, "health": {}}
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory() as tmp,
        scratch_database() as url_a,
        scratch_database() as url_b,
    ):
        stores: dict[str, SqlStore] = {
            "sqlite": SqliteStore(Path(tmp) / "c.db"),
            "postgresql": PostgresStore(url_a),
            "postgresql_rowwise": RowwisePostgres(url_b),
        }
        for r in range(a.rounds):
            order = names[r % 3 :] + names[: r % 3]
            if r % 2:
                order.reverse()
            for name in order:
                work = batches(a.batches, a.batch, first_seq=r * events)
                rates["events"].setdefault(name, []).append(events / run(stores[name], work))
                work = health_batches(a.health_batches, a.health_batch, a.health_nodes, r * reports)
                rates["health"].setdefault(name, []).append(reports / run(stores[name], work))
        for s in stores.values():
            s.close()
    load_after = os.getloadavg()
    med = {w: {k: statistics.median(v) for k, v in by.items()} for w, by in rates.items()}
    out: dict[str, object] = {}
    for w, unit in (("events", "events_per_s"), ("health", "reports_per_s")):
        for k in names:
            out[f"{k}_{w}_{unit}"] = round(med[w][k])
        out[f"{w}_ratio_pg_vs_sqlite"] = round(med[w]["postgresql"] / med[w]["sqlite"], 3)
        out[f"{w}_ratio_pg_vs_rowwise"] = round(
            med[w]["postgresql"] / med[w]["postgresql_rowwise"], 3
        )
    print(
        json.dumps(
            {
                **out,
                "rounds": {
                    w: {k: [round(x) for x in v] for k, v in by.items()} for w, by in rates.items()
                },
                "load_avg_before": load_before,
                "load_avg_after": load_after,
                "batches": a.batches,
                "events_per_batch": a.batch,
                "nodes_per_batch": NODES_PER_BATCH,
                "health_batches": a.health_batches,
                "health_per_batch": a.health_batch,
                "health_nodes": a.health_nodes,
            }
        )
    )


if __name__ == "__main__":
    main()
