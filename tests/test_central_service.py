"""Central as a whole, against a real private mosquitto and a real SQLite file: nodes are real
MQTT clients (aiomqtt, paho) speaking the wire contract."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import wire
from central.commands import CommandError
from central.config import BrokerConfig, CentralConfig, HttpConfig, StoreConfig
from central.service import CentralService
from shilian.broker import Mosquitto

CITY = "4501"
COUNTY = "450102"
VILLAGE = "450102001003"
NODE = f"{VILLAGE}-a"
NODE2 = f"{VILLAGE}-b"
ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 30.0  # generous bound for a shared, noisy machine; polls return as soon as true


async def wait_for(cond: Callable[[], bool], what: str, within_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def make_cfg(broker: Mosquitto, tmp_path: Path) -> CentralConfig:
    return CentralConfig(
        broker=BrokerConfig(port=broker.port, client_id="central-test", keepalive_s=5),
        store=StoreConfig(path=tmp_path / "central.db"),
        http=HttpConfig(port=0),
    )


@contextlib.asynccontextmanager
async def central(cfg: CentralConfig) -> AsyncIterator[CentralService]:
    svc = CentralService(cfg)
    task = asyncio.create_task(svc.run())
    try:
        await wait_for(
            lambda: task.done() or (svc._started.is_set() and svc.link.connected), "central up"
        )
        if task.done():
            task.result()
        yield svc
    finally:
        svc.stop()
        await asyncio.wait_for(task, WAIT_S)


def sample(svc: CentralService, name: str, **labels: str) -> float:
    return svc.metrics.registry.get_sample_value(name, labels) or 0.0


def offline_total(svc: CentralService) -> float:
    """Nodes gone offline, every reason."""
    return sum(
        sample(svc, "shilian_nodes_offline_total", reason=r)
        for r in ("will", "stopped", "health_timeout")
    )


class Node:
    """A node as central sees it: births, health, events over a real MQTT 5 connection."""

    def __init__(self, broker: Mosquitto, node_id: str = NODE, interval: float = 30.0) -> None:
        self.broker, self.node_id, self.interval = broker, node_id, interval
        self.topics = wire.Topics(node_id)
        self.boot = uuid.uuid4().hex
        self.birth = 0
        self.client: aiomqtt.Client | None = None

    def state(self, st: str, reason: str) -> bytes:
        return wire.encode(
            wire.NodeState(
                node=self.node_id,
                state=st,  # type: ignore[arg-type]
                boot_id=self.boot,
                birth_seq=self.birth,
                ts=time.time(),
                reason=reason,  # type: ignore[arg-type]
                health_interval_s=self.interval,
            )
        )

    async def connect(self) -> None:
        self.birth += 1
        will = aiomqtt.Will(self.topics.state, self.state("offline", "will"), qos=1, retain=True)
        self.client = aiomqtt.Client(
            "127.0.0.1",
            self.broker.port,
            identifier=self.node_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
        )
        await self.client.__aenter__()
        await self.publish(self.topics.state, self.state("online", "connect"), retain=True)

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self.client.__aexit__(None, None, None)
            self.client = None

    async def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        assert self.client is not None
        await self.client.publish(topic, payload, qos=1, retain=retain)

    async def health(self) -> None:
        h = wire.Health(
            node=self.node_id,
            boot_id=self.boot,
            ts=time.time(),
            interval_s=self.interval,
            uptime_s=1,
            sw_version="0.1.0",
            cpu_pct=1,
            mem_used_pct=1,
            disk_used_pct=1,
            outbox_depth=0,
        )
        await self.publish(self.topics.health, wire.encode(h))

    async def event(self, seq: int) -> None:
        e = wire.Event(
            node=self.node_id,
            boot_id=self.boot,
            seq=seq,
            ts=time.time(),
            priority=wire.Priority.INFO,
            kind="test",
            data={"n": seq},
        )
        await self.publish(self.topics.event, wire.encode(e))


def db_rows(cfg: CentralConfig, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(cfg.store.path)) as c:
        return c.execute(sql, args).fetchall()


async def test_node_online_covers_its_village_and_ratios_move_by_one_village(
    broker: Mosquitto, tmp_path: Path
) -> None:
    cfg = make_cfg(broker, tmp_path)
    async with central(cfg) as svc:
        cov = svc.coverage
        county0, city0 = cov.summary(COUNTY), cov.summary(CITY)
        assert city0.villages == 1856 and county0.covered == 0
        node = Node(broker)
        await node.connect()
        await wait_for(lambda: cov.summary(VILLAGE).covered == 1, "village covered")
        county, city = cov.summary(COUNTY), cov.summary(CITY)
        assert county.covered == county0.covered + 1
        assert county.ratio == pytest.approx(county0.ratio + 1 / county.villages)
        assert city.ratio == pytest.approx(city0.ratio + 1 / 1856)
        # a second node in the same village does not count twice
        node2 = Node(broker, NODE2)
        await node2.connect()
        await wait_for(lambda: cov.known_nodes() == 2, "second node known")
        assert cov.summary(CITY).covered == 1
        # the coverage gauges on /metrics (city and county only)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{svc.http_port}/metrics") as r,
        ):
            text = await r.text()
        assert f'shilian_villages_covered{{code="{COUNTY}",level="3",name="兴宁区"}} 1.0' in text
        assert 'shilian_villages_total{code="4501",level="2",name="南宁市"} 1856.0' in text
        assert VILLAGE not in text
        await node.close()
        await node2.close()


def _paho_node_with_will(port: int, node: Node) -> paho.Client:
    node.birth += 1
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=node.node_id, protocol=paho.MQTTv5)
    c.will_set(node.topics.state, node.state("offline", "will"), qos=1, retain=True)
    c.connect("127.0.0.1", port, keepalive=5)
    c.loop_start()
    c.publish(
        node.topics.state, node.state("online", "connect"), qos=1, retain=True
    ).wait_for_publish(10)
    return c


def _kill(c: paho.Client) -> None:
    """The process dies: the socket closes without DISCONNECT, the broker sends the will."""
    c.loop_stop()
    sock = c.socket()
    assert sock is not None
    sock.close()


async def test_will_marks_offline_and_a_stale_death_is_ignored(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg(broker, tmp_path)
    caplog.set_level(logging.INFO, logger="shilian.central")
    async with central(cfg) as svc:
        node = Node(broker)
        c = await asyncio.to_thread(_paho_node_with_will, broker.port, node)
        await wait_for(lambda: svc.coverage.node_online(NODE) is True, "online")
        await asyncio.to_thread(_kill, c)
        await wait_for(lambda: svc.coverage.node_online(NODE) is False, "offline by will")
        assert svc.ingest.nodes[NODE].state_reason == "will"
        # one reason, one name: the metric and the log say what the API says
        assert sample(svc, "shilian_nodes_offline_total", reason="will") == 1
        assert sample(svc, "shilian_nodes_offline_total", reason="health_timeout") == 0
        lines = [r.getMessage() for r in caplog.records if NODE in r.getMessage()]
        assert any("offline" in m and "reason=will" in m for m in lines), lines
        assert not any("health" in m for m in lines), lines
        # the node comes back (birth 2); a late death of birth 1 must not take it down
        old_death = node.state("offline", "will")
        await node.connect()
        await wait_for(lambda: svc.coverage.node_online(NODE) is True, "back online")
        await node.publish(node.topics.state, old_death)
        await wait_for(
            lambda: sample(svc, "shilian_ignored_messages_total", reason="stale_state") >= 1,
            "stale",
        )
        assert svc.coverage.node_online(NODE) is True
        await node.close()


async def test_health_timeout_then_health_brings_it_back(broker: Mosquitto, tmp_path: Path) -> None:
    cfg = make_cfg(broker, tmp_path)
    async with central(cfg) as svc:
        node = Node(broker, interval=1.0)
        await node.connect()
        await wait_for(lambda: svc.coverage.node_online(NODE) is True, "online")
        await wait_for(lambda: svc.coverage.node_online(NODE) is False, "timed out")
        assert svc.ingest.nodes[NODE].state_reason == "health_timeout"
        assert sample(svc, "shilian_nodes_offline_total", reason="health_timeout") == 1
        assert sample(svc, "shilian_nodes_offline_total", reason="will") == 0
        await node.health()
        await wait_for(lambda: svc.coverage.node_online(NODE) is True, "revived by health")
        await node.close()


async def test_events_exactly_once_across_central_restart_with_gaps(
    broker: Mosquitto, tmp_path: Path
) -> None:
    cfg = make_cfg(broker, tmp_path)
    node = Node(broker)
    async with central(cfg) as svc:
        await node.connect()
        for seq in (1, 2, 3, 4, 5, 8):
            await node.event(seq)
        await wait_for(
            lambda: sample(svc, "shilian_messages_ingested_total", kind="event") == 6, "6"
        )
        assert sample(svc, "shilian_event_gaps_total") == 1
    assert db_rows(cfg, "SELECT first_seq, last_seq FROM gaps") == [(6, 7)]
    async with central(cfg) as svc:
        # the edge replays what it is not sure about; 6 and 7 finally arrive
        for seq in (1, 2, 3, 4, 5, 8, 7, 6, 6):
            await node.event(seq)
        await wait_for(lambda: sample(svc, "shilian_duplicate_events_total") == 7, "dups")
        assert sample(svc, "shilian_messages_ingested_total", kind="event") == 2
    seqs = db_rows(cfg, "SELECT seq FROM events WHERE node_id=? ORDER BY seq", NODE)
    assert [s for (s,) in seqs] == list(range(1, 9))
    assert db_rows(cfg, "SELECT * FROM gaps") == []
    await node.close()


BAD_INPUTS = [
    (wire.Topics(NODE).event, b"{not json", "invalid_json"),
    (wire.Topics(NODE).event, b'{"v":1,"node":"450102001003-a","seq":"x"}', "schema"),
    (wire.Topics(NODE).event, b" " * (wire.MAX_PAYLOAD_BYTES + 1), "oversize"),
    (wire.Topics(NODE).health, b'{"v":9,"node":"450102001003-a"}', "unknown_version"),
    ("shilian/v1/999999999999-x/health", b"{}", "unknown_village"),
    ("shilian/v1/NOT_A_NODE/event", b"{}", "bad_topic"),
    ("shilian/v1/450102001003-a/device/NOT-OURS", b"{}", "bad_topic"),
]


async def test_every_bad_input_is_counted_and_central_keeps_serving(
    broker: Mosquitto, tmp_path: Path
) -> None:
    cfg = make_cfg(broker, tmp_path)
    async with central(cfg) as svc:
        victim = Node(broker, NODE2)
        await victim.connect()
        await wait_for(lambda: svc.coverage.node_online(NODE2) is True, "victim online")
        bad = Node(broker)
        await bad.connect()
        for topic, payload, _ in BAD_INPUTS:
            await bad.publish(topic, payload)
        # a node publishing a death for another node, under its own topic: refused
        await bad.publish(bad.topics.state, victim.state("offline", "stopped"))
        expected: dict[str, int] = {}
        for _, _, reason in [*BAD_INPUTS, ("", b"", "identity_mismatch")]:
            expected[reason] = expected.get(reason, 0) + 1
        for reason, n in expected.items():
            await wait_for(
                lambda r=reason, n=n: sample(svc, "shilian_invalid_messages_total", reason=r) == n,  # type: ignore[misc]
                reason,
            )
        assert svc.coverage.node_online(NODE2) is True
        await bad.event(1)  # and it still serves valid input
        await wait_for(
            lambda: sample(svc, "shilian_messages_ingested_total", kind="event") == 1, "ok"
        )
        assert svc.link.connected
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{svc.http_port}/healthz") as r,
        ):
            assert r.status == 200
        await bad.close()
        await victim.close()
    assert db_rows(cfg, "SELECT COUNT(*) FROM events") == [(1,)]


async def _keep_healthy(node: Node, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(aiomqtt.MqttError):
            await node.health()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.25):
                await stop.wait()


async def test_no_false_offline_after_broker_restart(broker: Mosquitto, tmp_path: Path) -> None:
    cfg = make_cfg(broker, tmp_path)
    async with central(cfg) as svc:
        node = Node(broker, interval=1.0)
        await node.connect()
        await node.health()
        await wait_for(lambda: svc.coverage.node_online(NODE) is True, "online")
        broker.stop()
        await node.close()
        await wait_for(lambda: not svc.link.connected, "central sees the broker gone")
        # Down for twice the node's grace period: central hears nobody, and must not conclude
        # that the network collapsed.
        await asyncio.sleep(3.0)
        assert svc.coverage.node_online(NODE) is True
        broker.start()
        await node.connect()
        stop = asyncio.Event()
        beat = asyncio.create_task(_keep_healthy(node, stop))
        try:
            await wait_for(lambda: svc.link.connected, "central reconnected")
            await wait_for(lambda: svc.ingest.nodes[NODE].birth_seq == 2, "new birth seen")
            await asyncio.sleep(2.0)  # more than the grace period with health flowing
            assert svc.coverage.node_online(NODE) is True
            assert offline_total(svc) == 0
            assert sample(svc, "shilian_broker_reconnects_total") >= 1
        finally:
            stop.set()
            await beat
        await node.close()
    offline = db_rows(cfg, "SELECT COUNT(*) FROM state_history WHERE state='offline'")
    assert offline == [(0,)]


async def test_no_false_offline_after_central_restart(broker: Mosquitto, tmp_path: Path) -> None:
    cfg = make_cfg(broker, tmp_path)
    node = Node(broker, interval=1.0)
    stop = asyncio.Event()
    async with central(cfg) as svc:
        await node.connect()
        await wait_for(lambda: svc.coverage.node_online(NODE) is True, "online")
    beat = asyncio.create_task(_keep_healthy(node, stop))
    try:
        await asyncio.sleep(3.0)  # central is down for twice the grace period
        async with central(cfg) as svc:
            assert svc.coverage.node_online(NODE) is True  # state restored from the store
            await wait_for(
                lambda: sample(svc, "shilian_messages_ingested_total", kind="health") > 0, "health"
            )
            await asyncio.sleep(2.0)
            assert svc.coverage.node_online(NODE) is True
            assert offline_total(svc) == 0
    finally:
        stop.set()
        await beat
        await node.close()
    assert db_rows(cfg, "SELECT COUNT(*) FROM state_history WHERE state='offline'") == [(0,)]


async def _responder(broker: Mosquitto, node_id: str, ready: asyncio.Event) -> None:
    topics = wire.Topics(node_id)
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier=node_id + "-r", protocol=aiomqtt.ProtocolVersion.V5
    ) as c:
        await c.subscribe(topics.cmd_req, qos=1)
        ready.set()
        async for msg in c.messages:
            req = wire.decode(wire.CommandRequest, bytes(msg.payload))  # type: ignore[arg-type, unused-ignore]
            props = msg.properties
            assert props is not None
            if req.cmd == "ping":
                resp = wire.CommandResponse(node=node_id, ok=True, result={"pong": req.args})
            else:
                resp = wire.CommandResponse(
                    node=node_id,
                    ok=False,
                    error={"code": "unknown_command", "message": req.cmd},  # type: ignore[arg-type]
                )
            out = Properties(PacketTypes.PUBLISH)
            out.CorrelationData = props.CorrelationData  # type: ignore[attr-defined]
            reply_to: str = props.ResponseTopic  # type: ignore[attr-defined]
            await c.publish(reply_to, wire.encode(resp), qos=1, properties=out)


async def test_command_round_trip_error_and_timeout(broker: Mosquitto, tmp_path: Path) -> None:
    cfg = make_cfg(broker, tmp_path)
    async with central(cfg) as svc:
        ready = asyncio.Event()
        responder = asyncio.create_task(_responder(broker, NODE, ready))
        try:
            await asyncio.wait_for(ready.wait(), WAIT_S)
            result = await svc.commands.request(NODE, "ping", {"x": 1}, timeout_s=10)
            assert result == {"pong": {"x": 1}}
            with pytest.raises(CommandError) as err:
                await svc.commands.request(NODE, "get-config", {}, timeout_s=10)
            assert err.value.code == "unknown_command"
            with pytest.raises(CommandError) as err:
                await svc.commands.request(NODE2, "ping", {}, timeout_s=0.5)
            assert err.value.code == "timeout"
            assert svc.commands.pending == 0
        finally:
            responder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await responder


def test_cli_check_config_explains_errors_and_import_registry(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from central.cli import app

    runner = CliRunner()
    good = tmp_path / "good.toml"
    good.write_text(
        '[broker]\nport = 1884\n[http]\nport = 8081\n[registry]\ndefault_scope = "4501"\n'
    )
    r = runner.invoke(app, ["check-config", str(good)])
    assert r.exit_code == 0, r.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[broker]\nport = "x"\nbogus = 1\n[http]\nport = 99999\n')
    r = runner.invoke(app, ["check-config", str(bad)])
    assert r.exit_code == 1
    assert "broker.port: 应为整数 / " in r.output
    assert "broker.bogus: 未知字段 / Extra inputs are not permitted" in r.output
    assert "http.port: 数值过大 / " in r.output
    db = tmp_path / "c.db"
    r = runner.invoke(app, ["import-registry", "--db", str(db), "--scope", "450102"])
    assert r.exit_code == 0, r.output
    assert db_rows(
        CentralConfig(store=StoreConfig(path=db)), "SELECT value FROM registry_meta"
    ) == [("450102",)]


def test_sigterm_stops_central_cleanly_with_exit_0(broker: Mosquitto, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import urllib.request

    from shilian.broker import free_port

    port = free_port()
    conf = tmp_path / "central.toml"
    conf.write_text(
        f'[broker]\nport = {broker.port}\n[store]\npath = "{tmp_path / "c.db"}"\n'
        f"[http]\nport = {port}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", "from central.cli import app; app()", "run", "--config", str(conf)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "central did not come up"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_central_starts_before_the_broker_and_connects_when_it_comes(
    broker: Mosquitto, tmp_path: Path
) -> None:
    broker.stop()
    svc = CentralService(make_cfg(broker, tmp_path))
    task = asyncio.create_task(svc.run())
    try:
        await asyncio.wait_for(svc.started(), WAIT_S)
        assert not svc.link.connected
        assert sample(svc, "shilian_broker_connected") == 0
        broker.start()
        await wait_for(lambda: svc.link.connected, "connected once the broker is up")
        node = Node(broker)
        await node.connect()
        await wait_for(lambda: svc.coverage.node_online(NODE) is True, "online")
        await node.close()
    finally:
        svc.stop()
        await asyncio.wait_for(task, WAIT_S)
