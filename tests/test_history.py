"""Coverage history: snapshot times in Asia/Shanghai, what is kept, snapshots over
derived rows, days derived from the nodes' online/offline intervals in a real store, and the
task's start-up catch-up with an injected clock; storage on SQLite and PostgreSQL
(``db_target``)."""

from __future__ import annotations

import asyncio
import datetime as dt

from central import history
from central.coverage import CoverageIndex
from central.db import Target, open_db
from central.history import DayRow, HistoryStore, HistoryTask
from central.store import IntervalRow, NodeRow, SqlStore
from registry import Registry
from tests.stores import open_store

NANNING = Registry.from_package("4501")
COUNTY = "450102"
TOWNSHIP = NANNING.children(COUNTY)[0].code
VILLAGES = [u.code for u in NANNING.children(TOWNSHIP)]
DAY = dt.date(2026, 11, 20)


def test_the_snapshot_is_at_23_55_shanghai_time() -> None:
    at = history.day_instant(DAY)
    assert dt.datetime.fromtimestamp(at, dt.UTC) == dt.datetime(2026, 11, 20, 15, 55, tzinfo=dt.UTC)
    assert history.next_snapshot(at - 1) == at
    assert history.next_snapshot(at) == history.day_instant(DAY + dt.timedelta(days=1))
    # 16:30 UTC is already the next day in Shanghai.
    late = dt.datetime(2026, 11, 20, 16, 30, tzinfo=dt.UTC).timestamp()
    assert history.local_day(late) == DAY + dt.timedelta(days=1)


def test_a_city_keeps_its_counties_and_townships() -> None:
    units = history.kept_units(NANNING)
    assert len(units) == 1 + 12 + 138 and units[0] == "4501"
    assert all(len(c) <= 9 for c in units)
    province = Registry.from_package("41")
    assert history.depth(province) == 4  # ~2,500 townships: cheap enough
    assert history.depth(Registry.from_package("")) == 3  # the country: counties only


def _node(node_id: str, first_seen: float, state: str = "online") -> NodeRow:
    return NodeRow(
        node_id, node_id[:12], node_id[:6], state, first_seen, "connect", "b", 1, 30.0, "0.1",
        first_seen, first_seen,
    )  # fmt: skip


def _store(db_target: Target) -> SqlStore:
    store = open_store(db_target)
    d1 = history.day_instant(DAY)
    a, b, c = (f"{v}-a" for v in VILLAGES[:3])
    store.apply(
        [
            _node(a, d1 - 3600),
            IntervalRow(a, "online", d1 - 3600, "connect"),
            IntervalRow(a, "offline", d1 + 3600, "stopped"),  # off after day 1's instant
            _node(b, d1 - 7200),
            IntervalRow(b, "online", d1 - 7200, "connect"),
            IntervalRow(b, "offline", d1 - 60, "will"),  # off just before it
            _node(c, d1 + 86400 - 100),  # first seen on day 2
            IntervalRow(c, "online", d1 + 86400 - 100, "connect"),
        ]
    )
    return store


def test_days_are_derived_from_the_node_intervals(db_target: Target) -> None:
    _store(db_target).close()
    db = open_db(db_target)
    try:
        cov = CoverageIndex(NANNING)
        units = ["4501", COUNTY, TOWNSHIP]
        villages = {code: cov.summary(code).villages for code in units}
        before = DAY - dt.timedelta(days=1)
        rows = history.derive_rows(db, NANNING, villages, [before, DAY, DAY + dt.timedelta(days=1)])
        by = {(r.day, r.code): r for r in rows}
        assert (before.isoformat(), "4501") not in by  # before the first interval: unknown
        d1 = by[DAY.isoformat(), TOWNSHIP]
        assert (d1.provisioned, d1.covered, d1.source) == (2, 1, "derived")
        assert d1.villages == len(VILLAGES)
        d2 = by[(DAY + dt.timedelta(days=1)).isoformat(), "4501"]
        assert (d2.provisioned, d2.covered) == (3, 1)  # a is off, c is on
    finally:
        db.close()


def test_a_snapshot_replaces_a_derived_row_but_not_the_other_way(db_target: Target) -> None:
    hs = HistoryStore(db_target)
    try:
        day = DAY.isoformat()
        hs.write([DayRow(day, "4501", 10, 5, 2, 1.0, "derived")])
        hs.write([DayRow(day, "4501", 10, 6, 4, 2.0, "snapshot")])
        hs.write([DayRow(day, "4501", 10, 1, 1, 3.0, "derived")])
        rows = history.read_days(hs.db, ["4501"], DAY, DAY)["4501"]
        assert rows[day].covered == 4 and rows[day].source == "snapshot"
        assert hs.has_day("4501", DAY)
        assert hs.missing_days("4501", [DAY, DAY + dt.timedelta(days=1)]) == [
            DAY + dt.timedelta(days=1)
        ]
    finally:
        hs.close()


async def test_the_task_snapshots_today_at_start_and_derives_the_days_before(
    db_target: Target,
) -> None:
    _store(db_target).close()
    now = [history.day_instant(DAY + dt.timedelta(days=2)) - 3600.0]  # day 3, 22:55
    cov = CoverageIndex(NANNING)
    cov.set_node(f"{VILLAGES[2]}-a", True)
    task = HistoryTask(db_target, NANNING, cov, lambda: now[0])
    stop = asyncio.Event()
    run = asyncio.create_task(task.run(stop))
    try:
        for _ in range(3000):  # a 30 s deadline, polled
            if task.snapshots:
                break
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)
    db = open_db(db_target)
    rows = history.read_days(
        db, [TOWNSHIP], DAY - dt.timedelta(days=40), DAY + dt.timedelta(days=2)
    )
    db.close()
    got = {d: (r.covered, r.source) for d, r in rows[TOWNSHIP].items()}
    assert got[(DAY + dt.timedelta(days=2)).isoformat()] == (1, "snapshot")
    assert got[DAY.isoformat()] == (1, "derived")
    assert got[(DAY + dt.timedelta(days=1)).isoformat()] == (1, "derived")
    assert len(got) == 3  # nothing invented before the first interval
