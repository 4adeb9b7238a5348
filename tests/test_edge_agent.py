"""The edge agent in-process against a real private mosquitto: birth/will, clean stop, outbox
delivery across a broker outage, commands, local socket, rejected publishes."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.agent import Agent
from edge.config import EdgeConfig, parse_config
from shilian.broker import Mosquitto, free_port
from wire import CommandResponse, Event, NodeState, Topics, decode

NODE = "450102001001-a"
T = Topics(NODE)
#: Upper bound of any wait for a condition (a shared, noisy machine; not a timing assertion).
WAIT_S = 30.0


async def wait_for(cond: Callable[[], bool], what: str, within: float = WAIT_S) -> None:
    """Poll ``cond`` until true; fail with ``what`` after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.02)


class Observer:
    """Subscribes to the whole tree with a persistent session (so it misses nothing across a
    broker restart) and records every message."""

    def __init__(self, port: int, topic: str = "shilian/v1/#") -> None:
        self.port = port
        self.topic = topic
        self.msgs: list[tuple[str, bytes, bool]] = []
        self.client_id = "obs-" + uuid.uuid4().hex[:8]
        self.connected = asyncio.Event()

    async def run(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier=self.client_id,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    clean_start=False,
                    properties=props,
                ) as c:
                    await c.subscribe(self.topic, qos=1)
                    self.connected.set()
                    async for m in c.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else b""
                        self.msgs.append((m.topic.value, payload, m.retain))
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.05)

    def events(self) -> list[Event]:
        return [decode(Event, p) for t, p, _ in self.msgs if t in (T.event, T.event_alarm)]

    def states(self) -> list[NodeState]:
        return [decode(NodeState, p) for t, p, _ in self.msgs if t == T.state and p]

    def last_state(self) -> str | None:
        states = self.states()
        return states[-1].state if states else None


@pytest.fixture
async def observer(broker: Mosquitto) -> AsyncIterator[Observer]:
    obs = Observer(broker.port)
    task = asyncio.create_task(obs.run())
    await asyncio.wait_for(obs.connected.wait(), WAIT_S)
    try:
        yield obs
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def make_config(tmp_path: Path, port: int, **extra: Any) -> EdgeConfig:
    data: dict[str, Any] = {
        "node_id": NODE,
        "broker": {"port": port, "keepalive_s": 5},
        "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
        "metrics": {"port": free_port()},
        "local_socket": {"path": str(tmp_path / "edge.sock")},
        "health_interval_s": 5,
        "shutdown_flush_s": 10,
    }
    data.update(extra)
    return parse_config(data)


class Running:
    """An agent running in a task of the test's loop."""

    def __init__(self, cfg: EdgeConfig, **kw: Any) -> None:
        # small jitter so a reconnect after a broker restart does not wait seconds
        self.agent = Agent(cfg, rng=lambda: 0.05, **kw)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Agent:
        self.task = asyncio.create_task(self.agent.run(self.stop))
        await asyncio.wait_for(self.agent.started.wait(), WAIT_S)
        return self.agent

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.stop.set()
        await asyncio.wait_for(self.task, WAIT_S)


async def test_birth_retained_then_will_with_same_birth_seq_on_crash(
    broker: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, broker.port)
    run = Running(cfg, serve_metrics=False, serve_local_socket=False)
    agent = await run.__aenter__()
    await wait_for(lambda: any(s.state == "online" for s in observer.states()), "birth")
    birth = observer.states()[-1]
    assert (birth.reason, birth.boot_id, birth.birth_seq) == ("connect", agent.boot_id, 1)
    assert birth.health_interval_s == 5 and birth.sw_version

    late = Observer(broker.port, T.state)  # a new subscriber sees the retained birth
    late_task = asyncio.create_task(late.run())
    await wait_for(lambda: bool(late.msgs), "retained birth")
    assert late.msgs[0][2] is True and decode(NodeState, late.msgs[0][1]).state == "online"
    late_task.cancel()

    await agent.crash()
    assert run.task is not None
    await asyncio.wait_for(run.task, WAIT_S)
    await wait_for(lambda: observer.last_state() == "offline", "will")
    will = observer.states()[-1]
    assert (will.reason, will.birth_seq, will.boot_id) == ("will", 1, agent.boot_id)

    # the next run has a higher birth_seq (persisted in the outbox file)
    async with Running(cfg, serve_metrics=False, serve_local_socket=False):
        await wait_for(lambda: observer.last_state() == "online", "second birth")
        assert observer.states()[-1].birth_seq == 2


async def test_clean_stop_publishes_stopped_and_flushes(
    broker: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, broker.port)
    async with Running(cfg) as agent:
        await wait_for(lambda: agent.connected, "connected")
        for i in range(50):
            await agent.sink.emit("info", "tick", data={"i": i})
    # run() returned: everything was flushed (acknowledged) before the clean offline
    await wait_for(lambda: observer.last_state() == "offline", "stopped")
    assert [e.seq for e in observer.events()] == list(range(1, 51))
    last = observer.states()[-1]
    assert (last.reason, last.birth_seq) == ("stopped", 1)
    assert not (tmp_path / "edge.sock").exists()


async def test_events_accepted_while_broker_down_all_delivered_in_order(
    broker: Mosquitto, observer: Observer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="shilian.edge.session")
    cfg = make_config(tmp_path, broker.port)
    async with Running(cfg, serve_metrics=False, serve_local_socket=False) as agent:
        await wait_for(lambda: agent.connected, "connected")
        await agent.sink.emit("info", "before")
        await wait_for(lambda: len(observer.events()) == 1, "first event")
        broker.stop()
        await wait_for(lambda: not agent.connected, "agent notices the broker is gone")
        for i in range(300):
            pr = "alarm" if i % 50 == 0 else "info"
            await agent.sink.emit(pr, "offline_ev", data={"i": i})
        assert agent.outbox is not None and agent.outbox.depth == 300
        await wait_for(
            lambda: sum("still unreachable" in r.message for r in caplog.records) >= 2,
            "some retries",
        )
        broker.start()
        await wait_for(lambda: len(observer.events()) >= 301, "all events", within=60)
        await wait_for(lambda: agent.outbox is not None and agent.outbox.depth == 0, "acked")
    # seq 1 may reach the observer twice: the broker redelivers to the *observer's* session
    # what it had not confirmed before the restart. The agent sent each of 2..301 once.
    evs = [e for e in observer.events() if e.seq > 1]
    seqs = [e.seq for e in evs]
    assert len(seqs) == len(set(seqs)) == 300  # none twice: none was in flight at the outage
    alarms = [e.seq for e in evs if e.priority == "alarm"]
    infos = [e.seq for e in evs if e.priority == "info"]
    assert alarms == sorted(alarms) and infos == sorted(infos)  # in order within a priority
    assert alarms == [2 + i for i in range(0, 300, 50)]
    assert seqs.index(alarms[-1]) < seqs.index(3)  # backlog: alarms before older info
    assert agent.registry.get_sample_value("shilian_edge_reconnects_total") == 1
    # the outage: one WARNING when it starts, one INFO line per failed attempt, each with the
    # next try's time, INFO on recovery
    levels = [(r.levelno, r.message) for r in caplog.records if r.name == "shilian.edge.session"]
    assert [m for lv, m in levels if lv == logging.WARNING] == [
        m for _, m in levels if "connection lost" in m
    ]
    assert len([m for lv, m in levels if lv == logging.WARNING]) == 1
    retries = [(lv, m) for lv, m in levels if "still unreachable" in m]
    assert retries and all(lv == logging.INFO for lv, _ in retries)
    assert all(re.search(r"next try in \d+\.\d s at \d\d:\d\d:\d\d", m) for _, m in retries)
    assert "next try in" in next(m for _, m in levels if "connection lost" in m)
    assert any(lv == logging.INFO and "connected again after" in m for lv, m in levels)


async def _request(
    port: int, cmd: str, response_topic: str, expiry: int | None = None
) -> tuple[str, bytes | None]:
    """Publish a command request; return the topic it will be answered on."""
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = response_topic
    props.CorrelationData = cmd.encode()
    if expiry is not None:
        props.MessageExpiryInterval = expiry
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        await c.publish(T.cmd_req, json.dumps({"v": 1, "cmd": cmd}), qos=1, properties=props)
    return response_topic, cmd.encode()


async def test_commands_reply_in_subtree_only(broker: Mosquitto, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, broker.port, broker={"port": broker.port, "password": "pw"})
    replies = Observer(broker.port, "shilian/v1/+/cmd/res")
    rtask = asyncio.create_task(replies.run())
    await asyncio.wait_for(replies.connected.wait(), WAIT_S)
    try:
        async with Running(cfg, serve_local_socket=False) as agent:
            await wait_for(lambda: agent.connected, "connected")
            await _request(broker.port, "ping", T.cmd_res)
            await wait_for(lambda: len(replies.msgs) == 1, "pong")
            pong = decode(CommandResponse, replies.msgs[0][1], node_id=NODE)
            assert pong.ok and pong.result is not None
            assert pong.result["boot_id"] == agent.boot_id

            other = Topics("450102001001-b").cmd_res
            await _request(broker.port, "ping", other)  # outside our subtree: refused
            await _request(broker.port, "get-config", T.cmd_res)
            await wait_for(lambda: len(replies.msgs) == 2, "config")
            assert all(t == T.cmd_res for t, _, _ in replies.msgs)
            conf = decode(CommandResponse, replies.msgs[1][1])
            assert conf.result is not None and conf.result["node_id"] == NODE
            assert conf.result["broker"]["password"] == "***"
            assert "pw" not in replies.msgs[1][1].decode().replace("password", "")

            await _request(broker.port, "self-destruct", T.cmd_res)
            await wait_for(lambda: len(replies.msgs) == 3, "error reply")
            err = decode(CommandResponse, replies.msgs[2][1])
            assert not err.ok and err.error is not None and err.error.code == "unknown_command"
            refused = agent.registry.get_sample_value(
                "shilian_edge_commands_total", {"cmd": "?", "result": "response_topic_outside"}
            )
            assert refused == 1
    finally:
        rtask.cancel()


async def test_local_socket_protocol(broker: Mosquitto, observer: Observer, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, broker.port)
    async with Running(cfg) as agent:
        sock = tmp_path / "edge.sock"
        assert (sock.stat().st_mode & 0o777) == 0o660
        reader, writer = await asyncio.open_unix_connection(sock)

        async def ask(line: bytes) -> dict[str, Any]:
            writer.write(line + b"\n")
            await writer.drain()
            reply: dict[str, Any] = json.loads(await reader.readline())
            return reply

        ok = await ask(b'{"op":"emit","priority":"alarm","kind":"panic","data":{"zone":3}}')
        assert ok == {"ok": True, "seq": 1, "boot_id": agent.boot_id}
        for bad, why in [
            (b"garbage", "invalid JSON"),
            (b'{"op":"emit","priority":"urgent","kind":"x"}', "priority"),
            (b'{"op":"emit","priority":"info","kind":"x","data":[1]}', "data"),
            (b'{"op":"emit","priority":"info"}', "kind"),
            (b'{"op":"fly"}', "unknown op"),
        ]:
            r = await ask(bad)
            assert r["ok"] is False and why in r["error"], r
        st = await ask(b'{"op":"status"}')
        assert st["ok"] and st["node_id"] == NODE
        dev = b'{"op":"device","device_id":"cam1","kind":"camera","state":"up","name":"gate"}'
        assert (await ask(dev))["ok"]
        await wait_for(lambda: any(t == T.device("cam1") for t, _, _ in observer.msgs), "device")
        assert (await ask(b'{"op":"device","device_id":"cam1","remove":true}'))["ok"]
        await wait_for(
            lambda: any(t == T.device("cam1") and p == b"" for t, p, _ in observer.msgs), "removal"
        )
        # the connection survived every bad request; a too-long line closes only it
        writer.write(b"x" * 200_000 + b"\n")
        await writer.drain()
        r = json.loads(await reader.readline())
        assert r["ok"] is False and "line over" in r["error"]
        assert await reader.read() == b""
        writer.close()
        await wait_for(lambda: [e.kind for e in observer.events()] == ["panic"], "event")
        # pipelined requests on a fresh connection
        reader, writer = await asyncio.open_unix_connection(sock)
        line = b'{"op":"emit","priority":"info","kind":"burst"}\n'
        writer.write(line * 100)
        await writer.drain()
        seqs = [json.loads(await reader.readline())["seq"] for _ in range(100)]
        assert seqs == list(range(2, 102))
        writer.close()


async def test_rejected_publish_goes_to_dead_letters(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text(
        "topic read shilian/v1/#\n"
        "topic write shilian/v1/+/state\n"
        "topic write shilian/v1/+/health\n"
        "topic write shilian/v1/+/cmd/res\n"
    )
    (tmp_path / "m").mkdir()
    with Mosquitto(workdir=tmp_path / "m", extra_conf=f"acl_file {acl}\n") as b:
        cfg = make_config(tmp_path, b.port)
        async with Running(cfg, serve_local_socket=False) as agent:
            await wait_for(lambda: agent.connected, "connected")
            await agent.sink.emit("alarm", "panic")
            assert agent.outbox is not None
            ob = agent.outbox
            await wait_for(lambda: ob.dead_total == 1, "dead letter")
            assert ob.depth == 0
            dead = await ob.dead_letters()
            assert [(reason, json.loads(p)["kind"]) for _, reason, p in dead] == [(135, "panic")]
            assert (
                agent.registry.get_sample_value(
                    "shilian_edge_publish_rejected_total", {"reason": "135"}
                )
                == 1
            )
            assert agent.registry.get_sample_value(
                "shilian_edge_events_sent_total", {"priority": "alarm"}
            ) in (None, 0)


async def test_metrics_endpoint(broker: Mosquitto, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, broker.port)
    async with Running(cfg, serve_local_socket=False) as agent:
        await wait_for(lambda: agent.connected, "connected")
        await agent.sink.emit("info", "x")
        await wait_for(lambda: agent.outbox is not None and agent.outbox.depth == 0, "sent")
        reader, writer = await asyncio.open_connection("127.0.0.1", cfg.metrics.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        body = (await reader.read()).decode()
        writer.close()
        assert body.startswith("HTTP/1.0 200")
        assert "shilian_edge_connected 1.0" in body
        assert 'shilian_edge_events_sent_total{priority="info"} 1.0' in body
        assert "shilian_edge_publish_latency_seconds_count 1.0" in body


async def test_stale_retained_state_is_overwritten_by_birth_again(
    broker: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, broker.port)
    async with Running(cfg, serve_metrics=False, serve_local_socket=False) as agent:
        await wait_for(lambda: agent.connected, "connected")
        first = agent.boot_id
    # second run: birth_seq 2; then a stale will of "run 1" lands on the retained state
    async with Running(cfg, serve_metrics=False, serve_local_socket=False) as agent:
        await wait_for(lambda: agent.connected, "connected again")
        stale = NodeState(
            node=NODE, state="offline", boot_id=first, birth_seq=1, ts=1.0, reason="will"
        )
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as c:
            await c.publish(T.state, stale.model_dump_json(), qos=1, retain=True)
        await wait_for(
            lambda: (
                [(s.state, s.birth_seq) for s in observer.states()][-2:]
                == [("offline", 1), ("online", 2)]
            ),
            "birth re-published after the stale state",
        )
        retained = Observer(broker.port, T.state)
        r_task = asyncio.create_task(retained.run())
        await wait_for(lambda: bool(retained.msgs), "retained")
        r_task.cancel()
        assert decode(NodeState, retained.msgs[0][1]).birth_seq == 2


async def test_broker_restart_while_emitting_loses_nothing(
    broker: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, broker.port)
    n = 1000
    async with Running(cfg, serve_metrics=False, serve_local_socket=False) as agent:
        await wait_for(lambda: agent.connected, "connected")

        async def produce() -> None:
            for i in range(n):
                await agent.sink.emit("info", "flow", data={"i": i})

        producer = asyncio.create_task(produce())
        await wait_for(lambda: len(observer.events()) >= 100, "some events through")
        await asyncio.to_thread(broker.restart)
        await producer
        await wait_for(
            lambda: {e.seq for e in observer.events()} >= set(range(1, n + 1)),
            "every event",
            within=90,
        )
    seqs = [e.seq for e in observer.events()]
    first_seen = sorted(set(seqs), key=seqs.index)
    assert first_seen == list(range(1, n + 1))  # all, first copies in order
    # duplicates only from resends of what was in flight at the restart (window) and the
    # observer's own redelivery; never a burst of the whole backlog
    assert len(seqs) - n <= 2 * 32 + 32


@pytest.mark.parametrize("crash_first", [True, False])
async def test_crash_then_cancel_or_plain_cancel_leaves_no_connection(
    broker: Mosquitto, observer: Observer, tmp_path: Path, crash_first: bool
) -> None:
    """The demo fleet calls ``crash()`` and cancels the task at once; a cancelled agent must
    not leave a connection behind either: the broker publishes the will in both cases."""
    cfg = make_config(tmp_path, broker.port)
    run = Running(cfg, serve_metrics=False, serve_local_socket=False)
    agent = await run.__aenter__()
    await wait_for(lambda: any(s.state == "online" for s in observer.states()), "birth")
    await agent.sink.emit("alarm", "pending")  # may or may not be sent: it is on disk either way
    if crash_first:
        await agent.crash()
    assert run.task is not None
    run.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run.task
    await wait_for(lambda: observer.last_state() == "offline", "will")
    assert observer.states()[-1].reason == "will"
    async with Running(cfg, serve_metrics=False, serve_local_socket=False) as again:
        await wait_for(lambda: any(e.kind == "pending" for e in observer.events()), "resent")
        assert again.outbox is not None
        await wait_for(lambda: again.outbox is not None and again.outbox.depth == 0, "acked")


#: Device states a node re-publishes after each birth in the test below.
CAMERAS = 8


class BirthResponder:
    """Central's side of "command the node the instant it comes online": a paho client whose
    network thread answers every ``online`` birth on our state topic with a ``ping`` at once,
    and records the replies by correlation (the birth_seq it reacted to)."""

    def __init__(self, port: int) -> None:
        self.births: list[int] = []
        self.replies: set[int] = set()
        self.devices: set[str] = set()
        self.ready = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="central-" + uuid.uuid4().hex[:8],
            protocol=mqtt.MQTTv5,
        )  # fmt: skip
        self._client.on_connect = lambda c, *_: c.subscribe(
            [(T.state, 1), (T.cmd_res, 1), (f"{T.base}/device/+", 1)]
        )
        self._client.on_subscribe = lambda *_: self.ready.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def _on_message(self, client: Any, _userdata: Any, m: Any) -> None:
        if m.topic == T.cmd_res:
            self.replies.add(int(m.properties.CorrelationData.decode()))
            return
        if m.topic != T.state:
            self.devices.add(m.topic)
            return
        if not m.payload or m.retain:
            return
        st = decode(NodeState, m.payload)
        if st.state != "online":
            return
        self.births.append(st.birth_seq)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = T.cmd_res
        props.CorrelationData = str(st.birth_seq).encode()
        client.publish(T.cmd_req, json.dumps({"v": 1, "cmd": "ping"}), qos=1, properties=props)

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


async def test_command_sent_on_the_birth_is_answered(broker: Mosquitto, tmp_path: Path) -> None:
    """A command central sends the moment it sees the birth reaches the node: the node
    subscribes to its requests before it announces itself (it keeps no session to queue them),
    also when it has device states to re-publish after the birth."""
    dead = f"rtsp://127.0.0.1:{free_port()}/stream"  # nobody listens: cameras "unreachable"
    cameras = [{"id": f"cam{i}", "rtsp_url": dead} for i in range(CAMERAS)]
    cfg = make_config(tmp_path, broker.port, cameras=cameras)
    central = BirthResponder(broker.port)
    try:
        assert await asyncio.to_thread(central.ready.wait, WAIT_S)
        async with Running(cfg, serve_metrics=False, serve_local_socket=False) as agent:
            assert agent.session is not None
            await wait_for(lambda: len(central.devices) == CAMERAS, "camera states")
            for n in range(1, 6):  # every connection of a node, not only its first

                def born(n: int = n) -> bool:
                    return len(central.births) >= n

                def answered(n: int = n) -> bool:
                    return central.births[n - 1] in central.replies

                await wait_for(born, f"birth {n}")
                await wait_for(answered, f"answer to the command sent on birth {n}")
                await agent.session.reconnect()
    finally:
        central.stop()
