"""The store on both backends: a real SQLite file in tmp_path, and a real PostgreSQL database
created for the test (tests/postgres.py); dedupe state survives a restart."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from central.ingest import Ingest
from central.liveness import Liveness
from central.store import HEALTH_KEEP_PER_NODE, EventRow, SqliteStore, SqlStore
from central.store_pg import PostgresStore
from tests.postgres import scratch_database
from tests.test_central_ingest import BOOT, NODE, VILLAGE, event, health, state

VILLAGES = {VILLAGE}

Opener = Callable[[], SqliteStore | PostgresStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the same database each call (a restart of central)."""
    if request.param == "sqlite":
        yield lambda: SqliteStore(tmp_path / "c.db")
    else:
        with scratch_database() as url:
            yield lambda: PostgresStore(url)


def scalar(store: SqliteStore | PostgresStore, sql: str) -> Any:
    row = store.conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def ingest_from(store: SqlStore) -> Ingest:
    return Ingest(store.load(), VILLAGES.__contains__, Liveness())


def run(store: SqlStore, ing: Ingest, msgs: list[tuple[str, bytes]], now: float) -> list[str]:
    results = []
    for topic, payload in msgs:
        out = ing.handle(topic, payload, now)
        results.append(out.ignored or out.fault or "ok")
    store.apply(ing.take()[0])
    return [str(r) for r in results]


def test_events_deduplicated_across_restart_and_gaps_survive(open_store: Opener) -> None:
    store = open_store()
    ing = ingest_from(store)
    assert run(store, ing, [state(), event(1), event(2), event(5)], 100.0) == ["ok"] * 4
    store.close()

    store = open_store()
    ing = ingest_from(store)
    assert ing.nodes[NODE].state == "online"
    assert ing.seqs[(NODE, BOOT)].high == 5
    assert ing.seqs[(NODE, BOOT)].gaps == [(3, 4, 100.0)]
    assert run(store, ing, [event(1), event(2), event(5), event(3), event(3)], 200.0) == [
        "duplicate",
        "duplicate",
        "duplicate",
        "ok",
        "duplicate",
    ]
    store.close()

    store = open_store()
    assert store.load().seqs[(NODE, BOOT)].gaps == [(4, 4, 100.0)]
    rows = store.conn.execute("SELECT seq FROM events ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3, 5]
    store.close()


def test_state_history_intervals_and_node_row(open_store: Opener) -> None:
    store = open_store()
    ing = ingest_from(store)
    run(store, ing, [state(birth=1)], 100.0)
    run(store, ing, [state(st="offline", birth=1, reason="stopped")], 150.0)
    run(store, ing, [state(birth=2)], 200.0)
    hist = store.conn.execute(
        'SELECT state, start, "end", reason FROM state_history ORDER BY id'
    ).fetchall()
    assert hist == [
        ("online", 100.0, 150.0, "connect"),
        ("offline", 150.0, 200.0, "stopped"),
        ("online", 200.0, None, "connect"),
    ]
    row = store.conn.execute(
        "SELECT village, county, state, birth_seq, first_seen, last_seen FROM nodes"
    ).fetchone()
    assert row == (VILLAGE, VILLAGE[:6], "online", 2, 100.0, 200.0)
    store.close()


def test_health_is_pruned_per_node_and_last_health_kept(open_store: Opener) -> None:
    store = open_store()
    ing = ingest_from(store)
    run(store, ing, [state()], 100.0)
    for i in range(HEALTH_KEEP_PER_NODE + 30):
        run(store, ing, [health()], 101.0 + i)
    n = scalar(store, "SELECT COUNT(*) FROM health")
    assert n == HEALTH_KEEP_PER_NODE
    last = scalar(store, "SELECT last_health FROM nodes")
    assert '"uptime_s"' in last
    run(store, ing, [event(1)], 500.0)  # a node update without health keeps last_health
    assert scalar(store, "SELECT last_health FROM nodes") == last
    store.close()


def test_a_failed_batch_writes_nothing(open_store: Opener) -> None:
    store = open_store()
    good = EventRow(NODE, VILLAGE, BOOT, 1, 1.0, 1.0, "info", "k", None, "{}")
    bad = EventRow(NODE, VILLAGE, BOOT, 2, 1.0, 1.0, "info", "k", None, None)  # type: ignore[arg-type]
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        store.apply([good, bad])
    assert scalar(store, "SELECT COUNT(*) FROM events") == 0
    store.apply([good])  # the store goes on with the next batch
    assert scalar(store, "SELECT COUNT(*) FROM events") == 1
    store.close()
