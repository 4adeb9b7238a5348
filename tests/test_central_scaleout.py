"""Several ingest processes on one PostgreSQL (docs/scale.md, "Several ingest processes"): a
real mosquitto (MQTT 5 shared subscriptions), a scratch PostgreSQL database, two real
``shilian central run --role ingest`` processes, nodes publishing known event streams; the
leader is killed with SIGKILL mid-load."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

import wire
from central.coverage import CoverageIndex
from central.store_shared import LOCK_LEADER, LOCK_MEMBER
from registry import Registry
from shilian.broker import Mosquitto
from tests.postgres import scratch_database
from tests.processes import Proc, wait_for
from wire.event_kinds import EVENT_KINDS, PATROL_CHECKIN

NODES = 12
EVENTS = 250  # per node: 3,000 in all
INTERVAL_S = 2.0  # the nodes' health interval: a silent node is overdue after 3 s


def ingest_conf(workdir: Path, port: int, url: str) -> Path:
    conf = workdir / "central.toml"
    conf.write_text(
        f'[store]\nurl = "{url}"\n'
        '[registry]\ndefault_scope = "4501"\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {port}\nclient_id = "ingest-test"\n'
        '[ingest]\nshared_group = "ingest"\nmembers = 2\nreconnect_grace_s = 1\n',
        encoding="utf-8",
    )
    return conf


def ingest_proc(workdir: Path, conf: Path, n: int) -> Proc:
    return Proc(
        [sys.executable, "-m", "shilian", "central", "run", "--role", "ingest", "-c", str(conf)],
        workdir / f"ingest{n}.log",
    )


def lock_holders(url: str, key: int) -> dict[int, int]:
    """objid -> OS pid of the ingest process holding advisory lock (key, objid)."""
    with psycopg.connect(url) as c:
        rows = c.execute(
            "SELECT l.objid, a.application_name FROM pg_locks l JOIN pg_stat_activity a"
            " ON a.pid = l.pid WHERE l.locktype='advisory' AND l.classid=%s AND l.granted",
            (key,),
        ).fetchall()
    return {int(o): int(app.rsplit("-", 1)[1]) for o, app in rows}


def subscribed(log: Path) -> bool:
    return "subscribed" in log.read_text()


class Node:
    """A node on its own MQTT 5 connection: birth, health every interval, numbered events."""

    def __init__(self, port: int, node_id: str) -> None:
        self.node_id, self.boot_id = node_id, uuid.uuid4().hex
        self.topics = wire.Topics(node_id)
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=node_id, protocol=paho.MQTTv5)
        self.c.max_inflight_messages_set(100)
        will = wire.NodeState(
            node=node_id, state="offline", boot_id=self.boot_id, birth_seq=1, ts=time.time(),
            reason="will", health_interval_s=INTERVAL_S, sw_version="t",
        )  # fmt: skip
        self.c.will_set(self.topics.state, wire.encode(will), qos=1, retain=True)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.healthy = True

    def birth(self) -> None:
        st = wire.NodeState(
            node=self.node_id, state="online", boot_id=self.boot_id, birth_seq=1,
            ts=time.time(), reason="connect", health_interval_s=INTERVAL_S, sw_version="t",
        )  # fmt: skip
        self.c.publish(self.topics.state, wire.encode(st), qos=1, retain=True).wait_for_publish()

    def health(self) -> None:
        h = wire.Health(
            node=self.node_id, boot_id=self.boot_id, ts=time.time(), interval_s=INTERVAL_S,
            uptime_s=1.0, sw_version="t", cpu_pct=5, mem_used_pct=30, disk_used_pct=20,
            outbox_depth=0,
        )  # fmt: skip
        self.c.publish(self.topics.health, wire.encode(h), qos=1)

    def event(self, seq: int) -> paho.MQTTMessageInfo:
        e = wire.Event(
            node=self.node_id, boot_id=self.boot_id, seq=seq, ts=time.time(),
            priority=EVENT_KINDS[PATROL_CHECKIN], kind=PATROL_CHECKIN, data={"n": seq},
        )  # fmt: skip
        return self.c.publish(self.topics.event, wire.encode(e), qos=1)

    def power_cut(self) -> None:
        """Gone as a power cut goes: the broker publishes the will (MQTT 5 reason code 4)."""
        self.healthy = False
        self.c.disconnect(
            reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
        )

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Mosquitto, str, list[Proc]]]:
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker").start()
    with scratch_database() as url:
        conf = ingest_conf(tmp_path, broker.port, url)
        procs = [ingest_proc(tmp_path, conf, n) for n in (1, 2)]
        try:
            for p in procs:
                p.start()
            wait_for(lambda: len(lock_holders(url, LOCK_MEMBER)) == 2, what="two members")
            wait_for(lambda: lock_holders(url, LOCK_LEADER), what="a leader")
            for log in [p.log for p in procs]:
                wait_for(partial(subscribed, log), what="subscriptions")
            yield broker, url, procs
        finally:
            for p in procs:
                p.close()
            broker.stop()


@pytest.mark.slow
def test_kill_leader_under_load(cluster: tuple[Mosquitto, str, list[Proc]]) -> None:
    broker, url, procs = cluster
    villages = [u.code for u in Registry.from_package("4501").villages()][:NODES]
    nodes = [Node(broker.port, f"{v}-a") for v in villages]
    stop_health = threading.Event()

    def beat() -> None:
        while not stop_health.wait(INTERVAL_S / 2):
            for n in nodes:
                if n.healthy:
                    n.health()

    for n in nodes:
        n.birth()
        n.health()
    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        leader_pid = lock_holders(url, LOCK_LEADER)[0]
        victim = next(p for p in procs if p.p is not None and p.p.pid == leader_pid)
        survivor = next(p for p in procs if p is not victim)
        for seq in range(1, EVENTS + 1):
            infos = [n.event(seq) for n in nodes]
            if seq == EVENTS // 3:
                for i in infos:
                    i.wait_for_publish(30)
                os.kill(leader_pid, signal.SIGKILL)
                victim.close()
        for i in infos:
            i.wait_for_publish(30)

        def stored() -> int:
            with psycopg.connect(url) as c:
                row = c.execute("SELECT count(*) FROM events").fetchone()
            return int(row[0]) if row else 0

        wait_for(lambda: stored() == NODES * EVENTS, what="every event stored")
        with psycopg.connect(url) as c:
            got = c.execute("SELECT node_id, seq FROM events ORDER BY node_id, seq").fetchall()
            gaps = c.execute("SELECT count(*) FROM gaps").fetchone()
        assert sorted(got) == sorted((n.node_id, s) for n in nodes for s in range(1, EVENTS + 1))
        assert gaps == (0,)  # every gap a redelivery or the other process filled is closed

        # The survivor took over the victim's member session and the leadership.
        assert lock_holders(url, LOCK_LEADER) == {0: survivor.p.pid if survivor.p else -1}
        assert "taking over its session" in survivor.log.read_text()

        # A node that falls silent goes offline by the survivor's judgement.
        silent = nodes[0]
        silent.healthy = False

        def states() -> dict[str, tuple[str, str]]:
            with psycopg.connect(url) as c:
                rows = c.execute("SELECT node_id, state, state_reason FROM nodes").fetchall()
            return {r[0]: (r[1], r[2]) for r in rows}

        wait_for(
            lambda: states()[silent.node_id] == ("offline", "health_timeout"),
            what="the silent node offline",
        )
        # A node whose will arrives goes offline for that reason, by whichever process got it.
        cut = nodes[1]
        cut.power_cut()
        wait_for(lambda: states()[cut.node_id] == ("offline", "will"), what="the cut node offline")
        final = states()
        assert all(final[n.node_id][0] == "online" for n in nodes[2:]), final
        registry = Registry.from_package("4501")
        coverage = CoverageIndex(registry)
        for node_id, (state, _) in final.items():
            coverage.set_node(node_id, state == "online")
        assert coverage.online_nodes() == NODES - 2
        assert coverage.known_nodes() == NODES
    finally:
        stop_health.set()
        beater.join()
        for n in nodes:
            n.close()
