"""Alarm list and acknowledgement (central.alarms) against a real aiohttp server on a free port
and a real SQLite file written by central's own store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import prometheus_client
import pytest
from aiohttp import web

from central.alarms import (
    AckStore,
    AlreadyAcked,
    AlreadyClosed,
    NotAcked,
    OpenAlarmsCollector,
    UnknownAlarm,
    get_alarm,
)
from central.app import make_app
from central.coverage import CoverageIndex
from central.db import PostgresDb, SqliteDb, Target
from central.http import ApiContext
from central.store import EventRow, SqliteStore
from registry import Registry
from tests.postgres import end_sessions
from tests.processes import add_user, login
from tests.stores import open_store

NANNING = Registry.from_package("4501")
V1 = "450102001003"  # 兴宁区 › 民生街道 › 兴宁社区居委会
V3 = "450103001005"  # 青秀区
BOOT = "b" * 32


@dataclass
class Api:
    http: aiohttp.ClientSession
    store: SqliteStore
    clock: list[float]
    registry: prometheus_client.CollectorRegistry
    next_seq: int = 1

    def event(self, node: str, ts: float, priority: str = "alarm", kind: str = "panic") -> int:
        seq = self.next_seq
        self.next_seq += 1
        data = json.dumps({"zone": seq, "source": "board"})
        self.store.apply(
            [
                EventRow(
                    node, node[:12], BOOT, seq, ts, ts + 0.5, priority, kind, "alarm_board", data
                )
            ]
        )
        row = self.store.conn.execute(
            "SELECT id FROM events WHERE node_id = ? AND seq = ?", (node, seq)
        ).fetchone()
        return int(row[0])

    async def get(self, path: str, status: int = 200) -> Any:
        async with self.http.get(path) as r:
            assert r.status == status, await r.text()
            return await r.json()

    async def post(self, path: str, body: Any, status: int) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        async with self.http.post(path, data=data, headers=headers) as r:
            assert r.status == status, await r.text()
            assert r.content_type == "application/json"
            return await r.json()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    db = tmp_path / "central.sqlite3"
    store = SqliteStore(db)
    clock = [1000.0]
    metrics = prometheus_client.CollectorRegistry()
    ctx = ApiContext(db, NANNING, CoverageIndex(NANNING), metrics, None, clock=lambda: clock[0])
    password = add_user(db, "张三", "operator")
    runner = web.AppRunner(make_app(ctx))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{runner.addresses[0][1]}", cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as http:
            await login(http, "张三", password)
            yield Api(http, store, clock, metrics)
    finally:
        await runner.cleanup()
        store.close()


async def test_open_alarms_are_listed_oldest_first_with_their_village(api: Api) -> None:
    late = api.event(f"{V1}-a", 200.0, kind="fire")
    early = api.event(f"{V3}-a", 100.0, kind="intrusion")
    api.event(f"{V1}-a", 150.0, priority="info", kind="door")  # not an alarm
    api.event(f"{V1}-a", 160.0, priority="device", kind="restore")  # not an alarm
    body = await api.get("/api/v1/alarms")
    assert body["state"] == "open" and body["total"] == 2
    assert [a["id"] for a in body["alarms"]] == [early, late]
    first = body["alarms"][0]
    assert first["village"] == V3 and first["county"] == "450103"
    assert first["county_name"] == "青秀区" and first["village_name"]
    assert first["kind"] == "intrusion" and first["device"] == "alarm_board"
    assert first["state"] == "open" and first["ack"] is None
    assert first["data"] == {"zone": 2, "source": "board"}
    only_v1 = await api.get(f"/api/v1/alarms?village={V1}")
    assert [a["id"] for a in only_v1["alarms"]] == [late]
    xingning = await api.get("/api/v1/alarms?county=450102")
    assert [a["village_name"] for a in xingning["alarms"]] == ["兴宁社区居委会"]
    by_node = await api.get(f"/api/v1/alarms?node={V3}-a&limit=1")
    assert by_node["total"] == 1 and by_node["limit"] == 1


async def test_ack_records_who_and_when_and_a_second_ack_is_refused(
    api: Api, tmp_path: Path
) -> None:
    a1 = api.event(f"{V1}-a", 100.0)
    a2 = api.event(f"{V1}-a", 101.0)
    api.clock[0] = 2000.0
    # "by" is ignored: the acknowledging operator is the logged-in user.
    acked = await api.post(
        f"/api/v1/alarms/{a1}/ack", {"by": "冒名", "note": "已派人到场"}, status=200
    )
    assert acked["id"] == a1 and acked["state"] == "acked"
    assert acked["ack"] == {"by": "张三", "at": 2000.0, "note": "已派人到场"}
    port = api.http._base_url.port  # type: ignore[union-attr]
    other = add_user(tmp_path / "central.sqlite3", "李四", "operator")
    async with aiohttp.ClientSession(
        f"http://127.0.0.1:{port}", cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as li:
        await login(li, "李四", other)
        async with li.post(f"/api/v1/alarms/{a1}/ack", json={}) as r:
            assert r.status == 409
            again = await r.json()
    assert again["error"]["code"] == "already_acked"
    # Who and when, in words (China Standard Time), not a Unix time.
    assert again["error"]["message"].startswith(
        f"报警 {a1} 已由 张三 于 1970年1月1日 08:33:20 确认"
    )
    assert "2000" not in again["error"]["message"]
    assert [a["id"] for a in (await api.get("/api/v1/alarms"))["alarms"]] == [a2]
    acked_list = await api.get("/api/v1/alarms?state=acked")
    assert [a["ack"]["by"] for a in acked_list["alarms"]] == ["张三"]
    everything = await api.get("/api/v1/alarms?state=all")
    assert [a["id"] for a in everything["alarms"]] == [a2, a1]  # open first


async def test_unknown_or_non_alarm_events_and_bad_bodies(api: Api) -> None:
    info = api.event(f"{V1}-a", 100.0, priority="info")
    alarm = api.event(f"{V1}-a", 100.0)
    for path in (f"/api/v1/alarms/{info}/ack", "/api/v1/alarms/999/ack", "/api/v1/alarms/x/ack"):
        body = await api.post(path, {"by": "张三"}, status=404)
        assert body["error"]["code"] == "unknown_alarm"
    for bad, code, zh in [
        (b"not json", "bad_json", ""),
        ([1], "bad_json", ""),
        ({"note": 5}, "bad_body", "请求体有误：note：应为文字"),
        ({"note": "x" * 1001}, "bad_body", "请求体有误：note：最多 1000 个字"),
        ({"by": "张三", "extra": 1}, "bad_body", "请求体有误：extra：不认识此项"),
        ({"by": "x" * 65}, "bad_body", "请求体有误：by：最多 64 个字"),
    ]:
        body = await api.post(f"/api/v1/alarms/{alarm}/ack", bad, status=400)
        assert body["error"]["code"] == code
        # The operator reads what to fix: no pydantic sentences, no links.
        message = body["error"]["message"]
        assert message.startswith(zh) and "pydantic" not in message and "http" not in message
        if code == "bad_body":
            assert "should" not in message and "Input" not in message
    assert (await api.get("/api/v1/alarms?state=resolved", status=400))["error"]["code"] == (
        "bad_param"
    )
    assert (await api.get("/api/v1/alarms?village=12", status=400))["error"]["code"] == "bad_param"
    assert (await api.get("/api/v1/alarms?x=1", status=400))["error"]["code"] == "bad_param"
    assert (await api.get("/api/v1/alarms"))["total"] == 1  # nothing was acknowledged


async def test_open_alarms_gauge(api: Api) -> None:
    def gauge() -> float | None:
        return api.registry.get_sample_value("shilian_alarms_open")

    assert gauge() == 0
    a = api.event(f"{V1}-a", 100.0)
    api.event(f"{V1}-a", 101.0)
    api.event(f"{V1}-a", 102.0, priority="info")
    assert gauge() == 2
    await api.post(f"/api/v1/alarms/{a}/ack", {"by": "张三"}, status=200)
    assert gauge() == 1
    async with api.http.get("/metrics") as r:
        assert "shilian_alarms_open 1.0" in await r.text()


def test_acks_survive_reopening_the_database(db_target: Target) -> None:
    store = open_store(db_target)
    store.apply([EventRow(f"{V1}-a", V1, BOOT, 1, 1.0, 1.0, "alarm", "panic", None, "{}")])
    acks = AckStore(db_target)
    acks.ack(1, "张三", "", 5.0)
    acks.close()
    again = AckStore(db_target)
    with pytest.raises(AlreadyAcked) as e:
        again.ack(1, "李四", "", 6.0)
    assert (e.value.by, e.value.at) == ("张三", 5.0)
    again.close()
    store.close()


def test_acknowledge_then_close_once_on_either_backend(db_target: Target) -> None:
    store = open_store(db_target)
    store.apply(
        [
            EventRow(f"{V1}-a", V1, BOOT, 1, 1.0, 1.0, "alarm", "panic", None, "{}"),
            EventRow(f"{V1}-a", V1, BOOT, 2, 2.0, 2.0, "info", "door", None, "{}"),
        ]
    )
    acks = AckStore(db_target)
    try:
        with pytest.raises(UnknownAlarm):
            acks.ack(2, "张三", "", 5.0)  # not an alarm
        with pytest.raises(UnknownAlarm):
            acks.ack(99, "张三", "", 5.0)
        with pytest.raises(NotAcked):
            acks.close_alarm(1, "张三", "", 5.0)
        acks.ack(1, "张三", "去现场", 5.0)
        acks.close_alarm(1, "李四", "已处理", 6.0)
        with pytest.raises(AlreadyClosed) as e:
            acks.close_alarm(1, "王五", "", 7.0)
        assert (e.value.by, e.value.at) == ("李四", 6.0)
        alarm = get_alarm(acks.db, 1)
        assert alarm is not None and alarm["state"] == "closed"
        assert alarm["ack"] == {"by": "张三", "at": 5.0, "note": "去现场"}
        assert alarm["close"] == {"by": "李四", "at": 6.0, "note": "已处理"}
        # the failed attempts left nothing behind
        assert acks.db.fetchone("SELECT count(*) FROM alarm_closes") == (1,)
    finally:
        acks.close()
        store.close()


async def test_console_filters_by_severity_and_time_and_an_acked_alarm_is_closed_once(
    api: Api,
) -> None:
    panic = api.event(f"{V1}-a", 100.0, kind="panic")
    tamper = api.event(f"{V1}-a", 200.0, kind="tamper")
    fire = api.event(f"{V3}-a", 300.0, kind="fire")
    crit = await api.get("/api/v1/alarms?state=all&severity=critical&order=newest")
    assert [(a["id"], a["severity"]) for a in crit["alarms"]] == [
        (fire, "critical"),
        (panic, "critical"),
    ]
    warn = await api.get("/api/v1/alarms?severity=warning")
    assert [a["id"] for a in warn["alarms"]] == [tamper]
    window = await api.get("/api/v1/alarms?since=150&until=300")
    assert [a["id"] for a in window["alarms"]] == [tamper]
    # Closing comes after acknowledging: the alarm was taken in hand first.
    refused = await api.post(f"/api/v1/alarms/{panic}/close", {"note": "x"}, status=409)
    assert refused["error"]["code"] == "not_acked"
    await api.post(f"/api/v1/alarms/{panic}/ack", {"note": "已派人"}, status=200)
    api.clock[0] = 1100.0
    closed = await api.post(f"/api/v1/alarms/{panic}/close", {"note": "误报，已复位"}, status=200)
    assert closed["state"] == "closed"
    assert closed["close"] == {"by": "张三", "at": 1100.0, "note": "误报，已复位"}
    assert closed["ack"]["note"] == "已派人"
    again = await api.post(f"/api/v1/alarms/{panic}/close", {}, status=409)
    assert again["error"]["code"] == "already_closed"
    message = again["error"]["message"]
    assert "张三" in message and "1970年1月1日 08:18:20" in message
    states = {
        s: [a["id"] for a in (await api.get(f"/api/v1/alarms?state={s}"))["alarms"]]
        for s in ("open", "acked", "closed", "handled")
    }
    assert states == {"open": [tamper, fire], "acked": [], "closed": [panic], "handled": [panic]}


def test_the_open_alarms_gauge_keeps_its_reader_and_recovers_when_it_fails(
    db_target: Target,
) -> None:
    store = open_store(db_target)
    store.apply([EventRow(f"{V1}-a", V1, BOOT, 1, 1.0, 1.0, "alarm", "panic", None, "{}")])
    store.close()
    collector = OpenAlarmsCollector(db_target)
    try:

        def sample() -> float | None:
            for family in collector.collect():
                return float(family.samples[0].value)
            return None

        assert sample() == 1.0
        reader = collector._db
        assert sample() == 1.0 and collector._db is reader  # kept between scrapes
        assert isinstance(reader, SqliteDb | PostgresDb)
        if isinstance(db_target, str):
            assert end_sessions(db_target) >= 1  # what a server restart does
        else:
            reader.conn.close()  # the file's connection lost
        assert sample() is None  # no sample this time, and the reader is dropped
        assert sample() == 1.0 and collector._db is not reader
    finally:
        collector.close()
