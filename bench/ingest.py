"""Central ingest throughput vs a bare paho subscriber, same private broker, same run.

Method (both subscribers measured the same way): the subscriber's persistent session (QoS 1
subscriptions, clean_start=False) is created, the subscriber goes away, N valid ``wire.Event``
messages (pre-encoded, many node ids, QoS 1) are published into the broker, which queues them;
then the subscriber connects and drains the backlog. msgs/s = N / (last - first received).

(a) baseline: paho 2.x, callback API, QoS 1, that only counts and ``json.loads``.
(b) central: the real service (gmqtt link + ingest + SQLite WAL commits, PUBACK after commit).

    python bench/ingest.py [--n 50000] [--nodes 200]

Prints one JSON line: central_msgs_per_s, baseline_msgs_per_s, ratio, and the set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

import wire
from central.config import BrokerConfig, CentralConfig, HttpConfig, StoreConfig
from central.link import Inbound
from central.service import CentralService
from registry import Registry
from shilian.broker import Mosquitto
from wire.topics import CENTRAL_SUBSCRIPTIONS

#: Messages the publisher may have unacknowledged: keeps the pipe full without unbounded memory.
PUBLISH_INFLIGHT = 1000
#: Generous bound for one phase on a shared 2-core machine.
PHASE_TIMEOUT_S = 600.0


def make_payloads(n: int, nodes: int) -> list[tuple[str, bytes]]:
    villages = [u.code for u in Registry.from_package("4501").villages()][:nodes]
    node_ids = [f"{v}-a" for v in villages]
    boots = {nid: uuid.uuid4().hex for nid in node_ids}
    out = []
    for i in range(n):
        nid = node_ids[i % len(node_ids)]
        ev = wire.Event(
            node=nid,
            boot_id=boots[nid],
            seq=i // len(node_ids) + 1,
            ts=time.time(),
            priority=wire.Priority.INFO,
            kind="motion",
            device="cam1",
            data={"zone": "gate", "score": 0.93, "frame": i},
        )
        out.append((wire.Topics(nid).event, wire.encode(ev)))
    return out


def publish_all(port: int, msgs: list[tuple[str, bytes]]) -> float:
    """Publish at QoS 1 and wait for every PUBACK; returns msgs/s of the publisher."""
    done = threading.Event()
    acked = 0

    def on_publish(c: paho.Client, u: object, mid: int, rc: object, p: object) -> None:
        nonlocal acked
        acked += 1
        if acked == len(msgs):
            done.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=paho.MQTTv5)
    c.max_inflight_messages_set(PUBLISH_INFLIGHT)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = time.perf_counter()
    for topic, payload in msgs:
        c.publish(topic, payload, qos=1)
    if not done.wait(PHASE_TIMEOUT_S):
        raise RuntimeError(f"publisher: only {acked}/{len(msgs)} acknowledged")
    rate = len(msgs) / (time.perf_counter() - t0)
    c.disconnect()
    c.loop_stop()
    return rate


def paho_subscriber(port: int, n: int | None) -> float:
    """Create the session (n None) or drain n messages; returns msgs/s first->last."""
    got = 0
    first = last = 0.0
    done = threading.Event()

    def on_connect(c: paho.Client, u: object, f: object, rc: object, p: object) -> None:
        if n is None:
            c.subscribe([(t, SubscribeOptions(qos=1)) for t in CENTRAL_SUBSCRIPTIONS])

    def on_subscribe(c: paho.Client, u: object, mid: int, rc: object, p: object) -> None:
        if n is None:
            done.set()

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        nonlocal got, first, last
        json.loads(m.payload)
        got += 1
        if got == 1:
            first = time.perf_counter()
        if got == n:
            last = time.perf_counter()
            done.set()

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-paho", protocol=paho.MQTTv5)
    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    if not done.wait(PHASE_TIMEOUT_S):
        raise RuntimeError(f"paho subscriber: {got}/{n}")
    c.disconnect()
    c.loop_stop()
    return 0.0 if n is None else (n - 1) / (last - first)


class TimedCentral(CentralService):
    """The real service, with the first and last ingested message timed."""

    target = 0
    got = 0
    first = last = 0.0
    batches = 0

    async def _handle_batch(self, batch: list[Inbound]) -> None:
        if self.got == 0:
            self.first = time.perf_counter()
        await super()._handle_batch(batch)
        self.got += len(batch)
        self.batches += 1
        if self.target and self.got >= self.target:
            self.last = time.perf_counter()
            self.stop()


async def central_run(cfg: CentralConfig, n: int | None) -> tuple[float, int]:
    svc = TimedCentral(cfg)
    svc.target = n or 0
    task = asyncio.create_task(svc.run())
    if n is None:  # create the session: wait until subscribed, then leave
        for _ in range(int(PHASE_TIMEOUT_S * 100)):
            if getattr(svc, "link", None) and svc.link.connected:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        svc.stop()
    await asyncio.wait_for(task, PHASE_TIMEOUT_S)
    if n is None:
        return 0.0, 0
    return (svc.got - 1) / (svc.last - svc.first), svc.batches


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--nodes", type=int, default=200)
    args = ap.parse_args()
    msgs = make_payloads(args.n, args.nodes)
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(workdir=Path(tmp)) as broker:
        # (a) baseline
        paho_subscriber(broker.port, None)
        pub_rate_a = publish_all(broker.port, msgs)
        baseline = paho_subscriber(broker.port, args.n)
        # (b) central
        cfg = CentralConfig(
            broker=BrokerConfig(port=broker.port, client_id="bench-central"),
            store=StoreConfig(path=Path(tmp) / "central.db"),
            http=HttpConfig(port=0),
        )
        asyncio.run(central_run(cfg, None))
        pub_rate_b = publish_all(broker.port, msgs)
        central, batches = asyncio.run(central_run(cfg, args.n))
    print(
        json.dumps(
            {
                "central_msgs_per_s": round(central),
                "baseline_msgs_per_s": round(baseline),
                "ratio": round(central / baseline, 3),
                "messages": args.n,
                "nodes": args.nodes,
                "payload_bytes": len(msgs[0][1]),
                "central_batches": batches,
                "mode": "drain of a QoS 1 backlog of N queued in the subscriber's session",
                "broker": "mosquitto 2 (shilian.broker.Mosquitto: persistence on, "
                "max_queued_messages 0, max_inflight_messages 0)",
                "publisher_msgs_per_s": [round(pub_rate_a), round(pub_rate_b)],
                "central_store": "SQLite WAL synchronous=FULL, PUBACK after commit",
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
