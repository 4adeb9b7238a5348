"""The HTTP API against a real aiohttp server on a free port and a real SQLite file.

The store is filled by a tiny test-only writer that follows the shared schema (central.store is
the product's writer; these tests only need rows to read)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import prometheus_client
import pytest
from aiohttp import web

import wire
from central import migrate
from central.app import make_app
from central.commands import CommandClient, CommandError
from central.coverage import CoverageIndex
from central.http import MAX_BODY_BYTES, ApiContext
from registry import Registry
from tests.processes import add_user, login

NANNING = Registry.from_package("4501")
V1 = "450102001003"  # 兴宁区 › 民生街道 › 兴宁社区居委会
V2 = "450102001004"
V3 = "450103001005"  # 青秀区
BOOT = "0" * 31 + "1"


class Writer:
    """Test-only rows in the shared schema (WAL, like central.store)."""

    def __init__(self, path: Path) -> None:
        migrate.upgrade(path)  # central's own schema, as central makes it at start
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")

    def node(self, node_id: str, state: str, since: float = 100.0) -> None:
        village = node_id[:12]
        health = {"node": node_id, "ts": since, "cpu_pct": 5.0, "outbox_depth": 0}
        self.conn.execute(
            "INSERT INTO nodes VALUES (?, ?, ?, ?, ?, 'connect', ?, 1, 30.0, '0.1.0', 10.0, ?, ?)",
            (node_id, village, village[:6], state, since, BOOT, since, json.dumps(health)),
        )

    def event(self, node_id: str, seq: int, ts: float, priority: str = "info") -> None:
        self.conn.execute(
            "INSERT INTO events(node_id, village, boot_id, seq, ts, recv_ts, priority, kind, "
            "device, data) VALUES (?, ?, ?, ?, ?, ?, ?, 'door', NULL, ?)",
            (node_id, node_id[:12], BOOT, seq, ts, ts + 1, priority, json.dumps({"n": seq})),
        )


@dataclass
class Api:
    http: aiohttp.ClientSession
    ctx: ApiContext
    db: Writer

    async def get(self, path: str, status: int = 200) -> Any:
        async with self.http.get(path) as r:
            assert r.status == status, await r.text()
            assert r.content_type == "application/json"
            return await r.json()

    async def post(self, path: str, body: Any, status: int) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        async with self.http.post(path, data=data, headers=headers) as r:
            assert r.status == status, await r.text()
            assert r.content_type == "application/json"
            return await r.json()


async def _serve(ctx: ApiContext) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(make_app(ctx))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    writer = Writer(tmp_path / "central.db")
    index = CoverageIndex(NANNING)
    metrics = prometheus_client.CollectorRegistry()
    prometheus_client.Counter("shilian_test_total", "test", registry=metrics).inc(3)
    ctx = ApiContext(tmp_path / "central.db", NANNING, index, metrics, None, clock=lambda: 1234.5)
    for node_id, state in [(f"{V1}-a", "online"), (f"{V1}-b", "offline"), (f"{V2}-a", "offline")]:
        writer.node(node_id, state)
        index.set_node(node_id, state == "online")
    writer.node(f"{V3}-a", "online")
    index.set_node(f"{V3}-a", True)
    password = add_user(tmp_path / "central.db", "admin", "admin")
    runner, port = await _serve(ctx)
    try:
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{port}", cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as http:
            await login(http, "admin", password)
            yield Api(http, ctx, writer)
    finally:
        await runner.cleanup()
        writer.conn.close()


async def test_coverage_of_the_scope_root(api: Api) -> None:
    body = await api.get("/api/v1/coverage")
    assert body["scope"] == "4501" and body["ancestors"] == []
    unit = body["unit"]
    assert unit["name"] == "南宁市" and unit["level_name"] == "地级"
    assert (unit["villages"], unit["provisioned"], unit["covered"]) == (1856, 3, 2)
    assert unit["ratio"] == pytest.approx(2 / 1856)
    assert len(body["children"]) == 12
    xingning = body["children"][0]
    assert (xingning["code"], xingning["name"], xingning["provisioned"], xingning["covered"]) == (
        "450102",
        "兴宁区",
        2,
        1,
    )
    assert await api.get("/api/v1/coverage/4501") == body


async def test_coverage_of_a_township_and_a_village(api: Api) -> None:
    body = await api.get(f"/api/v1/coverage/{V1[:9]}")
    assert [a["code"] for a in body["ancestors"]] == ["4501", "450102"]
    assert [a["name"] for a in body["ancestors"]] == ["南宁市", "兴宁区"]
    assert body["unit"]["level"] == 4 and "nodes" not in body
    kids = {c["code"]: c for c in body["children"]}
    assert (kids[V1]["covered"], kids[V2]["provisioned"], kids[V2]["covered"]) == (1, 1, 0)
    village = await api.get(f"/api/v1/coverage/{V1}")
    assert village["unit"]["villages"] == 1 and village["children"] == []
    assert [(n["node_id"], n["state"]) for n in village["nodes"]] == [
        (f"{V1}-a", "online"),
        (f"{V1}-b", "offline"),
    ]


@pytest.mark.parametrize("code", ["4502", "45", "450199", "abc", "4501020010011", "%E5%8D%97"])
async def test_unknown_unit_is_404_json(api: Api, code: str) -> None:
    body = await api.get(f"/api/v1/coverage/{code}", status=404)
    assert body["error"]["code"] == "unknown_unit"
    assert " / " in body["error"]["message"]


async def test_node_list_and_filters(api: Api) -> None:
    body = await api.get("/api/v1/nodes")
    first = body["nodes"][0]
    assert body["total"] == 4 and first["node_id"] == f"{V1}-a"
    assert first["village_name"] == NANNING.unit(V1).name  # type: ignore[union-attr]
    assert first["county_name"] == "兴宁区" and first["last_health"]["cpu_pct"] == 5.0

    async def ids(query: str) -> list[str]:
        return [n["node_id"] for n in (await api.get(f"/api/v1/nodes?{query}"))["nodes"]]

    assert await ids(f"village={V1}") == [f"{V1}-a", f"{V1}-b"]
    assert await ids(f"township={V1[:9]}&state=offline") == [f"{V1}-b", f"{V2}-a"]
    assert await ids("county=450103") == [f"{V3}-a"]
    assert await ids("state=online") == [f"{V1}-a", f"{V3}-a"]
    page = await api.get("/api/v1/nodes?limit=2&offset=1")
    assert (page["total"], page["limit"], page["offset"]) == (4, 2, 1)
    assert [n["node_id"] for n in page["nodes"]] == [f"{V1}-b", f"{V2}-a"]


@pytest.mark.parametrize(
    "query",
    [
        "state=up",
        "village=4501",
        "county=45010x",
        "limit=0",
        "limit=100000",
        "offset=-1",
        "limit=abc",
        "colour=red",
        "state=online&state=offline",
    ],
)
async def test_bad_node_params_are_400(api: Api, query: str) -> None:
    body = await api.get(f"/api/v1/nodes?{query}", status=400)
    assert body["error"]["code"] == "bad_param"


async def test_node_detail(api: Api) -> None:
    node = f"{V1}-a"
    c = api.db.conn
    for i in range(25):
        c.execute(
            "INSERT INTO health(node_id, ts, recv_ts, body) VALUES (?, ?, ?, ?)",
            (node, 100.0 + i, 101.0 + i, json.dumps({"node": node, "cpu_pct": float(i)})),
        )
    api.db.event(node, 1, 200.0, "alarm")
    api.db.event(node, 2, 300.0)
    c.execute(
        "INSERT INTO devices VALUES (?, 'cam1', 'camera', 'up', '东门', 5.0, '{\"fps\": 25}', 0)",
        (node,),
    )
    c.execute("INSERT INTO state_history VALUES (NULL, ?, 'offline', 50, 100, 'will')", (node,))
    c.execute("INSERT INTO state_history VALUES (NULL, ?, 'online', 100, NULL, 'connect')", (node,))
    c.execute("INSERT INTO gaps VALUES (?, ?, 3, 7, 310.0)", (node, BOOT))
    d = await api.get(f"/api/v1/nodes/{node}")
    assert d["node_id"] == node and d["state"] == "online" and d["county_name"] == "兴宁区"
    assert len(d["health"]) == 20 and d["health"][0]["cpu_pct"] == 24.0
    assert [e["seq"] for e in d["events"]] == [2, 1] and d["events"][1]["data"] == {"n": 1}
    assert d["devices"] == [
        {
            "device_id": "cam1",
            "kind": "camera",
            "state": "up",
            "name": "东门",
            "ts": 5.0,
            "detail": {"fps": 25},
            "removed": False,
            "reported_state": "up",
            "suppressed": False,
        }
    ]
    assert [(h["state"], h["end"]) for h in d["state_history"]] == [
        ("online", None),
        ("offline", 100.0),
    ]
    assert d["gaps"] == [{"boot_id": BOOT, "first_seq": 3, "last_seq": 7, "detected": 310.0}]


async def test_devices_of_an_offline_node_are_unknown_not_down(api: Api) -> None:
    node = f"{V1}-b"  # offline
    api.db.conn.execute(
        "INSERT INTO devices VALUES (?, 'cam1', 'camera', 'down', NULL, 5.0,"
        ' \'{"health": "unreachable"}\', 0)',
        (node,),
    )
    d = await api.get(f"/api/v1/nodes/{node}")
    assert d["state"] == "offline"
    [cam] = d["devices"]
    assert (cam["state"], cam["reported_state"], cam["suppressed"]) == ("unknown", "down", True)


@pytest.mark.parametrize("node_id", ["450102001003-zz", "not-a-node", "450102001003-A"])
async def test_unknown_node_is_404_json(api: Api, node_id: str) -> None:
    body = await api.get(f"/api/v1/nodes/{node_id}", status=404)
    assert body["error"]["code"] == "unknown_node"


async def test_events_newest_first_with_filters(api: Api) -> None:
    api.db.event(f"{V1}-a", 1, 100.0, "info")
    api.db.event(f"{V1}-a", 2, 300.0, "alarm")
    api.db.event(f"{V2}-a", 1, 200.0, "device")
    api.db.event(f"{V3}-a", 1, 400.0, "alarm")

    async def seen(query: str = "") -> list[tuple[str, int]]:
        body = await api.get(f"/api/v1/events?{query}")
        return [(e["node_id"][:12], e["ts"]) for e in body["events"]]

    assert await seen() == [(V3, 400.0), (V1, 300.0), (V2, 200.0), (V1, 100.0)]
    assert await seen(f"node={V1}-a") == [(V1, 300.0), (V1, 100.0)]
    assert await seen(f"village={V2}") == [(V2, 200.0)]
    assert await seen("county=450102") == [(V1, 300.0), (V2, 200.0), (V1, 100.0)]
    assert await seen("priority=alarm") == [(V3, 400.0), (V1, 300.0)]
    assert await seen("since=200&limit=2") == [(V3, 400.0), (V1, 300.0)]
    event = (await api.get("/api/v1/events?limit=1"))["events"][0]
    assert event["priority"] == "alarm" and event["kind"] == "door" and event["data"] == {"n": 1}


@pytest.mark.parametrize(
    "query", ["priority=urgent", "since=yesterday", "since=-5", "node=bad", "limit=1001"]
)
async def test_bad_event_params_are_400(api: Api, query: str) -> None:
    body = await api.get(f"/api/v1/events?{query}", status=400)
    assert body["error"]["code"] == "bad_param"


async def test_commands_disabled_is_503(api: Api) -> None:
    body = await api.post(f"/api/v1/nodes/{V1}-a/commands", {"cmd": "ping"}, 503)
    assert body["error"]["code"] == "commands_unavailable"


class ScriptedNodes:
    """A CommandClient-shaped object in the test: answers as a node (or central) would."""

    async def request(
        self, node_id: str, cmd: str, args: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        if cmd == "ping":
            return {"pong": True, "node": node_id, "echo": args}
        if cmd == "sleepy":
            raise CommandError("timeout", f"节点未在 {timeout_s:g} 秒内响应 / no reply")
        if cmd == "dark":
            raise CommandError("offline", "节点离线 / node is offline")
        raise CommandError("unknown_command", f"未知命令 / unknown command {cmd}")


async def test_command_results_and_errors(api: Api) -> None:
    api.ctx.commands = ScriptedNodes()
    url = f"/api/v1/nodes/{V1}-a/commands"
    ok = await api.post(url, {"cmd": "ping", "args": {"x": "村"}, "timeout_s": 5}, 200)
    assert ok == {
        "node": f"{V1}-a",
        "cmd": "ping",
        "result": {"pong": True, "node": f"{V1}-a", "echo": {"x": "村"}},
    }
    assert (await api.post(url, {"cmd": "sleepy"}, 504))["error"]["code"] == "timeout"
    assert (await api.post(url, {"cmd": "dark"}, 409))["error"]["code"] == "node_offline"
    err = (await api.post(url, {"cmd": "reboot"}, 502))["error"]
    assert err["code"] == "unknown_command" and "reboot" in err["message"]
    unknown = await api.post(f"/api/v1/nodes/{V1}-zz/commands", {"cmd": "ping"}, 404)
    assert unknown["error"]["code"] == "unknown_node"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b"[1, 2]", "bad_json"),
        ({"args": {}}, "bad_body"),
        ({"cmd": "Ping!"}, "bad_body"),
        ({"cmd": "ping", "timeout_s": 0}, "bad_body"),
        ({"cmd": "ping", "timeout_s": 3600}, "bad_body"),
        ({"cmd": "ping", "args": [1]}, "bad_body"),
        ({"cmd": "ping", "extra": 1}, "bad_body"),
    ],
)
async def test_bad_command_bodies_are_400(api: Api, body: Any, code: str) -> None:
    api.ctx.commands = ScriptedNodes()
    err = (await api.post(f"/api/v1/nodes/{V1}-a/commands", body, 400))["error"]
    assert err["code"] == code and " / " in err["message"]


async def test_oversized_command_body_is_413(api: Api) -> None:
    body = {"cmd": "ping", "args": {"blob": "x" * MAX_BODY_BYTES}}
    err = (await api.post(f"/api/v1/nodes/{V1}-a/commands", body, 413))["error"]
    assert err["code"] == "body_too_large"


async def test_commands_through_the_real_command_client(api: Api) -> None:
    """central.commands.CommandClient with an in-test 'node' that answers pings."""
    loop = asyncio.get_running_loop()
    client: CommandClient

    def publish(topic: str, payload: bytes, res_topic: str, corr: bytes, expiry: int) -> None:
        node_id = topic.split("/")[2]
        req = wire.decode(wire.CommandRequest, payload)
        if req.cmd == "ping":
            resp = wire.CommandResponse(node=node_id, ok=True, result={"pong": req.args})
            loop.call_soon(client.on_response, node_id, corr, resp)
        # any other command: the node stays silent

    client = CommandClient(publish)
    api.ctx.commands = client
    url = f"/api/v1/nodes/{V1}-a/commands"
    body = await api.post(url, {"cmd": "ping", "args": {"n": 1}}, 200)
    assert body["result"] == {"pong": {"n": 1}}
    silent = await api.post(url, {"cmd": "get-config", "timeout_s": 0.2}, 504)
    assert silent["error"]["code"] == "timeout"
    assert client.pending == 0


async def test_metrics_healthz_and_json_for_everything_else(api: Api) -> None:
    async with api.http.get("/metrics") as r:
        assert r.status == 200 and r.content_type == "text/plain"
        assert "shilian_test_total 3.0" in await r.text()
    health = await api.get("/healthz")
    assert health == {
        "status": "ok",
        "time": 1234.5,
        "scope": "4501",
        "nodes_known": 4,
        "nodes_online": 2,
    }
    assert (await api.get("/api/v2/nothing", status=404))["error"]["code"] == "not_found"
    assert (await api.post("/api/v1/coverage", {}, 405))["error"]["code"] == "method_not_allowed"


async def test_a_bug_is_a_json_500(tmp_path: Path) -> None:
    password = add_user(tmp_path / "empty.db", "admin", "admin")
    with sqlite3.connect(tmp_path / "empty.db") as broken:
        broken.execute("DROP TABLE nodes")  # every read of the node list fails
    ctx = ApiContext(
        tmp_path / "empty.db",
        NANNING,
        CoverageIndex(NANNING),
        prometheus_client.CollectorRegistry(),
        None,
        clock=lambda: 0.0,
    )
    runner, port = await _serve(ctx)
    try:
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{port}", cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as http:
            await login(http, "admin", password)
            r = await http.get("/api/v1/nodes")
            assert r.status == 500
            assert (await r.json())["error"]["code"] == "internal"
            assert "Traceback" not in await r.text()
    finally:
        await runner.cleanup()
