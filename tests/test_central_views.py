"""The HTTP API's read side (central.views and the queries that run on its readers: dashboard,
alarms, snapshots, alerts, devices, reports) on SQLite and PostgreSQL (``db_target``), over rows
written by central's own ingest store."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from central import alarms, alerting, coverage_report, dashboard, snapshots, views
from central.db import Db, Target
from central.device_feed import load_devices
from central.history import DayRow, HistoryStore
from central.store import (
    DeviceRow,
    EventRow,
    GapsRow,
    HealthRow,
    IntervalRow,
    NodeRow,
    SqliteStore,
    SqlStore,
)
from central.store_pg import PostgresStore
from registry import Registry
from tests.stores import open_store

NANNING = Registry.from_package("4501")
V1 = "450102001003"  # 兴宁区 › 民生街道 › 兴宁社区居委会
V2 = "450102001004"
V3 = "450103001005"  # 青秀区
BOOT = "b" * 32


def _node(node_id: str, state: str, depth: int, seen: float = 100.0) -> NodeRow:
    health = json.dumps({"node": node_id, "cpu_pct": 5.0, "outbox_depth": depth})
    return NodeRow(
        node_id, node_id[:12], node_id[:6], state, seen, "connect", BOOT, 1, 30.0, "0.1.0",
        10.0, seen, health,
    )  # fmt: skip


def _event(node: str, seq: int, ts: float, priority: str = "info", kind: str = "door") -> EventRow:
    return EventRow(node, node[:12], BOOT, seq, ts, ts + 1, priority, kind, None, f'{{"n":{seq}}}')


@pytest.fixture
def store(db_target: Target) -> Iterator[SqlStore]:
    s = open_store(db_target)
    a, b, c, d = f"{V1}-a", f"{V1}-b", f"{V2}-a", f"{V3}-a"
    s.apply(
        [
            _node(a, "online", 3, seen=300.0),
            _node(b, "offline", 0),
            _node(c, "offline", 50),
            _node(d, "online", 7),
            IntervalRow(a, "online", 100.0, "connect"),
            IntervalRow(a, "offline", 200.0, "will"),
            IntervalRow(a, "online", 250.0, "connect"),
            HealthRow(a, 110.0, 111.0, json.dumps({"cpu_pct": 1.0})),
            HealthRow(a, 120.0, 121.0, json.dumps({"cpu_pct": 2.0})),
            _event(a, 1, 150.0),
            _event(a, 2, 160.0, "alarm", "panic"),
            _event(a, 3, 170.0, "alarm", "tamper"),
            _event(d, 1, 155.0),
            GapsRow(a, BOOT, ((4, 6, 175.0),)),
            DeviceRow(a, "cam-1", "camera", "ok", "大门", 140.0, '{"ip": "10.0.0.2"}', 0),
            DeviceRow(a, "cam-2", "camera", "fault", None, 141.0, "{}", 0),
            DeviceRow(a, "cam-3", "camera", "ok", None, 142.0, "{}", 1),
            DeviceRow(c, "cam-1", "camera", "ok", None, 143.0, "{}", 0),
        ]
    )
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def reads(store: SqlStore, db_target: Target) -> Iterator[views.ReadViews]:
    r = views.ReadViews(db_target)
    try:
        yield r
    finally:
        r.close()


def _alarm_ids(db: Db) -> list[int]:
    return [
        int(r[0]) for r in db.fetchall("SELECT id FROM events WHERE priority = 'alarm' ORDER BY id")
    ]


async def test_node_list_filters_pages_and_existence(reads: views.ReadViews) -> None:
    try:
        total, page = await reads.run(
            lambda db: views.list_nodes(db, views.NodeFilter(), limit=2, offset=1)
        )
        assert total == 4 and [n["node_id"] for n in page] == [f"{V1}-b", f"{V2}-a"]
        assert page[1]["last_health"]["outbox_depth"] == 50
        f = views.NodeFilter(township=V1[:9], state="offline")
        total, page = await reads.run(lambda db: views.list_nodes(db, f, 10, 0))
        assert [n["node_id"] for n in page] == [f"{V1}-b", f"{V2}-a"]
        f = views.NodeFilter(scope="450103", seen_before=200.0)
        assert (await reads.run(lambda db: views.list_nodes(db, f, 10, 0)))[0] == 1
        assert await reads.run(lambda db: views.node_exists(db, f"{V3}-a"))
        assert not await reads.run(lambda db: views.node_exists(db, f"{V3}-z"))
        village = await reads.run(lambda db: views.village_nodes(db, V1))
        assert [(n["node_id"], n["state"]) for n in village] == [
            (f"{V1}-a", "online"),
            (f"{V1}-b", "offline"),
        ]
    finally:
        reads.close()


async def test_node_detail_has_its_histories(reads: views.ReadViews) -> None:
    try:
        d = await reads.run(lambda db: views.node_detail(db, f"{V1}-a"))
        assert d is not None
        assert [h["cpu_pct"] for h in d["health"]] == [2.0, 1.0]
        assert [e["seq"] for e in d["events"]] == [3, 2, 1]
        assert d["events"][0]["data"] == {"n": 3}
        assert [(x["device_id"], x["removed"]) for x in d["devices"]] == [
            ("cam-1", False),
            ("cam-2", False),
            ("cam-3", True),
        ]
        assert d["devices"][0]["detail"] == {"ip": "10.0.0.2"}
        assert [(h["state"], h["start"], h["end"]) for h in d["state_history"]] == [
            ("online", 250.0, None),
            ("offline", 200.0, 250.0),
            ("online", 100.0, 200.0),
        ]
        assert d["gaps"] == [{"boot_id": BOOT, "first_seq": 4, "last_seq": 6, "detected": 175.0}]
        assert await reads.run(lambda db: views.node_detail(db, f"{V1}-z")) is None
    finally:
        reads.close()


async def test_event_lists(reads: views.ReadViews) -> None:
    try:
        rows = await reads.run(lambda db: views.list_events(db, views.EventFilter(), 10))
        assert [e["ts"] for e in rows] == [170.0, 160.0, 155.0, 150.0]
        f = views.EventFilter(priority="alarm", county="450102", since=165.0)
        assert [e["kind"] for e in await reads.run(lambda db: views.list_events(db, f, 10))] == [
            "tamper"
        ]
        mine = views.EventFilter(node=f"{V1}-a")
        assert [e["seq"] for e in await reads.run(lambda db: views.list_events(db, mine, 2))] == [
            3,
            2,
        ]
    finally:
        reads.close()


async def test_dashboard_counts(reads: views.ReadViews) -> None:
    try:
        assert await reads.run(lambda db: dashboard.unit_counts(db, "450102")) == {
            "online": 1,
            "offline": 2,
        }
        assert await reads.run(lambda db: dashboard.device_counts(db, "4501")) == [
            {"kind": "camera", "state": "fault", "count": 1},
            {"kind": "camera", "state": "ok", "count": 1},
            {"kind": "camera", "state": "unknown", "count": 1},
        ]
        assert await reads.run(lambda db: dashboard.open_alarms(db, "4501")) == 2
        assert await reads.run(lambda db: dashboard.open_alarms(db, "450103")) == 0
    finally:
        reads.close()


async def test_alarm_queries(reads: views.ReadViews, db_target: Target) -> None:
    acks = alarms.AckStore(db_target)
    try:
        panic, tamper = _alarm_ids(acks.db)
        acks.ack(tamper, "张三", "看过了", 500.0)
        total, rows = await reads.run(
            lambda db: alarms.list_alarms(db, alarms.AlarmFilter(state="all"), 10, 0)
        )
        assert total == 2
        assert [(r["id"], r["state"], r["severity"]) for r in rows] == [
            (panic, "open", "critical"),
            (tamper, "acked", "warning"),
        ]
        assert rows[1]["ack"] == {"by": "张三", "at": 500.0, "note": "看过了"}
        f = alarms.AlarmFilter(state="open", severity="critical", scope="4501")
        assert (await reads.run(lambda db: alarms.list_alarms(db, f, 10, 0)))[0] == 1
        got = await reads.run(lambda db: alarms.get_alarm(db, tamper))
        assert got is not None and got["county"] == "450102" and got["close"] is None
        assert await reads.run(lambda db: alarms.get_alarm(db, panic + 1000)) is None
        assert await reads.run(alarms.open_count) == 1
        due = await reads.run(lambda db: alerting._alarms(db, "450100000000", "450199999999", 200))
        assert [r[0] for r in due] == [panic]
    finally:
        acks.close()
        reads.close()


async def test_backlogged_nodes_from_their_last_health(reads: views.ReadViews) -> None:
    try:
        rows = await reads.run(
            lambda db: alerting._backlogs(db, "450100000000", "450199999999", backlog=5)
        )
        assert rows == [(f"{V2}-a", 50), (f"{V3}-a", 7)]
    finally:
        reads.close()


async def test_devices_load_and_snapshot_reads(store: SqlStore, reads: views.ReadViews) -> None:
    try:
        index = await reads.run(lambda db: load_devices(db, NANNING, []))
        assert {v.device.device_id for v in index.devices(V1)} == {"cam-1", "cam-2"}
        assert await reads.run(lambda db: snapshots.for_alarm(db, f"{V1}-a", BOOT, 2)) == []
        assert await reads.run(lambda db: snapshots.jpeg_of(db, f"{V1}-a", BOOT, 2, "c")) == b""
    finally:
        reads.close()


async def test_coverage_report_reads_the_daily_history(
    store: SqlStore, db_target: Target, reads: views.ReadViews
) -> None:
    day = dt.date(2026, 11, 20)
    hs = HistoryStore(db_target)
    try:
        hs.write([DayRow(day.isoformat(), "450102", 100, 10, 5, 1.0, "snapshot")])
        r = await reads.run(
            lambda db: coverage_report.build_report(db, NANNING, {}, "450102", day, day)
        )
        row = r.at("450102", day)
        assert row is not None and (row.villages, row.covered, row.source) == (100, 5, "snapshot")
    finally:
        hs.close()
        reads.close()


async def test_a_failed_query_does_not_poison_the_next(reads: views.ReadViews) -> None:
    try:
        with pytest.raises(Exception):  # noqa: B017  (either driver's error)
            await reads.run(lambda db: db.fetchall("SELECT no_such_column FROM nodes"))
        for _ in range(views.READ_WORKERS + 1):  # every pooled connection is still good
            assert await reads.run(lambda db: views.node_exists(db, f"{V1}-a"))
    finally:
        reads.close()


def test_a_sqlite_reader_cannot_write(store: SqlStore, db_target: Target) -> None:
    if not isinstance(db_target, Path):
        pytest.skip("read-only connections are SQLite's")
    import sqlite3

    reader = views.open_reader(db_target)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.execute("DELETE FROM nodes")
    finally:
        reader.close()


async def test_readers_survive_the_servers_end_of_their_connections(
    reads: views.ReadViews, db_target: Target
) -> None:
    """A kept PostgreSQL connection the server has ended (a restart, an administrator) costs
    no failed request: the query runs again on a new connection."""
    if isinstance(db_target, Path):
        pytest.skip("SQLite readers are opened per query")
    from tests.postgres import end_sessions

    assert await reads.run(lambda db: views.node_exists(db, f"{V1}-a"))
    assert end_sessions(db_target) >= 1
    for _ in range(views.READ_WORKERS + 1):
        assert await reads.run(lambda db: views.node_exists(db, f"{V1}-a"))


def test_a_read_transaction_sees_one_state_of_the_database(
    store: SqliteStore | PostgresStore, db_target: Target
) -> None:
    """A count and its page, or a node's row and its histories, agree: a write committed
    between two reads of one read transaction is not seen by the second."""
    reader = views.open_reader(db_target)
    try:
        with reader.transaction(write=False):
            before = reader.fetchone("SELECT count(*) FROM nodes")
            store.apply([_node(f"{V3}-b", "online", 0)])  # the ingest commits meanwhile
            during = reader.fetchone("SELECT count(*) FROM nodes")
        after = reader.fetchone("SELECT count(*) FROM nodes")
    finally:
        reader.close()
    assert before == during == (4,) and after == (5,)
