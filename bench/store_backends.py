"""The ingest store's write rate on PostgreSQL against SQLite (the baseline), same process, same
batches: what ``[store] url`` costs or gains on the hot path.

Batches as central's ingest makes them (one node upsert and the events of a batch, several nodes
per batch), applied with :meth:`SqlStore.apply` (one transaction each, durable commit: SQLite
WAL ``synchronous=FULL``; PostgreSQL ``synchronous_commit=on``). The backends alternate per
round (sqlite, postgresql, postgresql, sqlite, ...); the figures are medians. PostgreSQL is the
local server on 127.0.0.1:5432 (``SHILIAN_TEST_PG`` overrides the admin URL), in a database
created for the run and dropped after it.

    python bench/store_backends.py [--batches 200] [--batch 100] [--rounds 3]

Prints one JSON line: sqlite_events_per_s, postgresql_events_per_s, ratio_pg_vs_sqlite, every
round's figures and the set-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from central.store import EventRow, NodeRow, SqliteStore, SqlStore, Write
from central.store_pg import PostgresStore
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


def run(store: SqlStore, work: list[list[Write]]) -> float:
    t = time.perf_counter()
    for writes in work:
        store.apply(writes)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch", type=int, default=100, help="events per batch")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    events = a.batches * a.batch
    rates: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    with tempfile.TemporaryDirectory() as tmp, scratch_database() as url:
        stores: dict[str, SqlStore] = {
            "sqlite": SqliteStore(Path(tmp) / "c.db"),
            "postgresql": PostgresStore(url),
        }
        for r in range(a.rounds):
            order = ["sqlite", "postgresql"] if r % 2 == 0 else ["postgresql", "sqlite"]
            for name in order:
                work = batches(a.batches, a.batch, first_seq=r * events)
                rates[name].append(events / run(stores[name], work))
        for s in stores.values():
            s.close()
    sq = statistics.median(rates["sqlite"])
    pg = statistics.median(rates["postgresql"])
    print(
        json.dumps(
            {
                "sqlite_events_per_s": round(sq),
                "postgresql_events_per_s": round(pg),
                "ratio_pg_vs_sqlite": round(pg / sq, 3),
                "rounds": {k: [round(x) for x in v] for k, v in rates.items()},
                "batches": a.batches,
                "events_per_batch": a.batch,
                "nodes_per_batch": NODES_PER_BATCH,
            }
        )
    )


if __name__ == "__main__":
    main()
