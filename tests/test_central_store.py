"""The store on both backends: a real SQLite file in tmp_path, and a real PostgreSQL database
created for the test (tests/postgres.py); dedupe state survives a restart."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from central.ingest import Ingest
from central.liveness import Liveness
from central.store import (
    HEALTH_KEEP_PER_NODE,
    HEALTH_PRUNE_EVERY,
    DeviceRow,
    EventRow,
    GapsRow,
    HealthRow,
    IntervalRow,
    NodeRow,
    SqliteStore,
    SqlStore,
    Write,
)
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


@pytest.fixture(params=["sqlite", "postgresql"])
def open_pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[SqlStore, SqlStore]]:
    """Two stores of one backend on two empty databases."""
    if request.param == "sqlite":
        pair: tuple[SqlStore, SqlStore] = (
            SqliteStore(tmp_path / "a.db"),
            SqliteStore(tmp_path / "b.db"),
        )
        yield pair
    else:
        with scratch_database() as a, scratch_database() as b:
            pair = (PostgresStore(a), PostgresStore(b))
            yield pair
    for s in pair:
        s.close()


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
    counts = []
    for i in range(HEALTH_KEEP_PER_NODE + 2 * HEALTH_PRUNE_EVERY):
        run(store, ing, [health()], 101.0 + i)
        counts.append(scalar(store, "SELECT COUNT(*) FROM health"))
        if counts[-1] == HEALTH_KEEP_PER_NODE and len(counts) > HEALTH_KEEP_PER_NODE:
            # just pruned: the newest are kept
            assert scalar(store, "SELECT MIN(recv_ts) FROM health") == 101.0 + i - 119
    assert max(counts) == HEALTH_KEEP_PER_NODE + HEALTH_PRUNE_EVERY - 1
    # pruned once per HEALTH_PRUNE_EVERY reports once the bound is reached: twice in the last 60
    assert counts[HEALTH_KEEP_PER_NODE:].count(HEALTH_KEEP_PER_NODE) == 2
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


def test_many_nodes_reports_in_one_batch_prune_each_node(open_store: Opener) -> None:
    store = open_store()
    nodes = [f"45010200100{k}-a" for k in range(3)]
    rows: list[Write] = [
        HealthRow(n, float(t), float(t), "{}")
        for t in range(HEALTH_KEEP_PER_NODE + HEALTH_PRUNE_EVERY)
        for n in nodes
    ]
    store.apply(rows)  # each node's prune is due once, after its rows are in
    counts = store.conn.execute(
        "SELECT node_id, COUNT(*), MIN(ts) FROM health GROUP BY node_id ORDER BY node_id"
    ).fetchall()
    assert counts == [(n, HEALTH_KEEP_PER_NODE, float(HEALTH_PRUNE_EVERY)) for n in nodes]
    store.close()


def _random_writes(rng: random.Random, n: int) -> list[Write]:
    """Writes to few keys, so that one batch holds many writes to the same rows."""
    nodes = ["450102001003-a", "450102001004-a", "450102001005-b"]
    out: list[Write] = []
    seq = 0
    for t in range(n):
        node = rng.choice(nodes)
        now = 100.0 + t
        kind = rng.randrange(7)
        if kind == 0:
            out.append(
                NodeRow(
                    node,
                    node[:12],
                    node[:6],
                    rng.choice(["online", "offline"]),
                    now,
                    rng.choice(["connect", "will"]),
                    rng.choice(["b1", "b2", None]),
                    rng.randrange(5),
                    30.0,
                    f"v{t}",
                    now,
                    now,
                    rng.choice([None, f'{{"t":{t}}}']),
                )
            )
        elif kind == 1:
            out.append(IntervalRow(node, rng.choice(["online", "offline"]), now, f"r{t}"))
        elif kind == 2:
            out.append(HealthRow(node, now, now, f'{{"t":{t}}}'))
        elif kind == 3:
            seq = rng.choice([seq + 1, max(1, seq - 2), seq + 3])  # new, repeated, gapped
            out.append(EventRow(node, node[:12], "b1", seq, now, now, "info", "k", None, "{}"))
        elif kind == 4:
            gaps = tuple((a, a + 1, now) for a in rng.sample(range(1, 40, 3), rng.randrange(3)))
            out.append(GapsRow(node, rng.choice(["b1", "b2"]), tuple(sorted(gaps))))
        else:
            removed = int(kind == 6)
            dev = rng.choice(["cam1", "cam2"])
            name = rng.choice([None, "门口"])
            kind_ = rng.choice(["camera", "nvr"])
            out.append(DeviceRow(node, dev, kind_, f"s{t}", name, now, f'{{"t":{t}}}', removed))
    return out


_TABLES = {
    "nodes": "SELECT * FROM nodes ORDER BY node_id",
    "devices": "SELECT * FROM devices ORDER BY node_id, device_id",
    "gaps": "SELECT node_id, boot_id, first_seq, last_seq, detected FROM gaps"
    " ORDER BY node_id, boot_id, first_seq",
    # a node's intervals in order (across nodes the order of ids says nothing)
    "state_history": 'SELECT node_id, state, start, "end", reason FROM state_history'
    " ORDER BY node_id, id",
    "health": "SELECT node_id, ts, recv_ts, body FROM health ORDER BY id",
    "events": "SELECT node_id, boot_id, seq, ts FROM events ORDER BY id",
}


@pytest.mark.parametrize("seed", range(4))
def test_a_batch_leaves_the_rows_its_writes_one_by_one_leave(
    open_pair: tuple[SqlStore, SqlStore], seed: int
) -> None:
    """Folded and set-based (one statement per kind on PostgreSQL) against one write per
    transaction: the same rows in every table (few enough health reports that no prune runs)."""
    one_by_one, batched = open_pair
    writes = _random_writes(random.Random(seed), 3 * HEALTH_PRUNE_EVERY)
    for w in writes:
        one_by_one.apply([w])
    batched.apply(writes)
    for table, sql in _TABLES.items():
        expected = list(one_by_one.conn.execute(sql).fetchall())  # type: ignore[attr-defined]
        assert list(batched.conn.execute(sql).fetchall()) == expected, table  # type: ignore[attr-defined]
