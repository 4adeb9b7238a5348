"""Central's ingest rate against the fastest plain subscribers, on the same broker and backlog.

Three subscribers drain the same backlog, measured the same way:

(a) central: the real service (gmqtt link + ingest + SQLite WAL commits, PUBACK after commit);
(b) gmqtt: a bare gmqtt 0.8 subscriber (the library central uses), QoS 1, ``json.loads`` per
    message, gmqtt's own PUBACKs: what the library gives without any storage;
(c) C: ``mosquitto_sub`` (QoS 1, persistent session, timestamps only): the broker's own client.

Per phase: the subscriber's persistent session (QoS 1, ``$share``-free topics, clean start off)
is created, the subscriber leaves, N valid ``wire.Event`` messages (pre-encoded, many node ids,
QoS 1) are published and queued by the broker, the subscriber reconnects and drains them;
msgs/s = (N - 1) / (last - first received). Then the session is **removed** (a clean-start
connect with expiry 0), so no subscriber is queued to while another is timed. The three run in
a rotated order in each round (abc, bca, cab, ...), ``--rounds`` times; the figures are medians.

    python bench/ingest.py [--n 50000] [--nodes 200] [--rounds 3]

Prints one JSON line: central_msgs_per_s, gmqtt_msgs_per_s, c_msgs_per_s, ratio_vs_gmqtt
(target >= 0.8), ratio_vs_c, every round's figures and the set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import wire
from central.config import BrokerConfig, CentralConfig, HttpConfig, StoreConfig
from central.link import Inbound
from central.service import CentralService
from registry import Registry
from shilian.broker import Mosquitto

#: Messages the publisher may have unacknowledged: keeps the pipe full without unbounded memory.
PUBLISH_INFLIGHT = 1000
#: Generous bound for one phase on a shared 2-core machine.
PHASE_TIMEOUT_S = 600.0
#: Only events are published; every subscriber subscribes to them alone, with QoS 1.
TOPIC = "shilian/v1/+/event"
SESSION_EXPIRY_S = 3600


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
        raise RuntimeError(f"publisher: {acked}/{len(msgs)} acknowledged")
    rate = len(msgs) / (time.perf_counter() - t0)
    c.disconnect()
    c.loop_stop()
    return rate


def remove_session(port: int, client_id: str) -> None:
    """End a persistent session for good: a clean-start connect with session expiry 0."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    connected = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.on_connect = lambda *a: connected.set()
    c.connect("127.0.0.1", port, clean_start=True, properties=props)
    c.loop_start()
    if not connected.wait(30):
        raise RuntimeError(f"could not remove session {client_id}")
    c.disconnect()
    c.loop_stop()


# -- (a) central ---------------------------------------------------------------------------------


class TimedCentral(CentralService):
    """The real service, with the first and last ingested message timed."""

    target = 0
    got = 0
    first = last = 0.0

    async def _handle_batch(self, batch: list[Inbound]) -> None:
        if self.got == 0:
            self.first = time.perf_counter()
        await super()._handle_batch(batch)
        self.got += len(batch)
        if self.target and self.got >= self.target:
            self.last = time.perf_counter()
            self.stop()


async def _central(cfg: CentralConfig, n: int | None) -> float:
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
    return 0.0 if n is None else (svc.got - 1) / (svc.last - svc.first)


def central_phase(port: int, folder: Path, msgs: list[tuple[str, bytes]]) -> float:
    cfg = CentralConfig(
        broker=BrokerConfig(port=port, client_id="bench-central"),
        store=StoreConfig(path=folder / f"central-{uuid.uuid4().hex[:6]}.db"),
        http=HttpConfig(port=0),
    )
    asyncio.run(_central(cfg, None))
    publish_all(port, msgs)
    rate = asyncio.run(_central(cfg, len(msgs)))
    remove_session(port, "bench-central")
    return rate


# -- (b) bare gmqtt ------------------------------------------------------------------------------


async def _gmqtt(port: int, n: int | None) -> float:
    import gmqtt

    got = 0
    first = last = 0.0
    done = asyncio.Event()

    def on_message(client: object, topic: str, payload: bytes, qos: int, props: object) -> int:
        nonlocal got, first, last
        json.loads(payload)
        got += 1
        if got == 1:
            first = time.perf_counter()
        if n is not None and got >= n:
            last = time.perf_counter()
            done.set()
        return 0  # PUBACK reason: success

    c = gmqtt.Client("bench-gmqtt", clean_session=False, session_expiry_interval=SESSION_EXPIRY_S)
    c.on_message = on_message
    await c.connect("127.0.0.1", port)
    if n is None:
        c.subscribe(TOPIC, qos=1)
        await asyncio.sleep(0.5)
    else:
        await asyncio.wait_for(done.wait(), PHASE_TIMEOUT_S)
    await c.disconnect()
    return 0.0 if n is None else (got - 1) / (last - first)


def gmqtt_phase(port: int, folder: Path, msgs: list[tuple[str, bytes]]) -> float:
    asyncio.run(_gmqtt(port, None))
    publish_all(port, msgs)
    rate = asyncio.run(_gmqtt(port, len(msgs)))
    remove_session(port, "bench-gmqtt")
    return rate


# -- (c) C mosquitto_sub --------------------------------------------------------------------------


def _mosquitto_sub(port: int, count: int, out: Path | None) -> None:
    args = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-q", "1"]
    args += ["-c", "-i", "bench-c", "-x", str(SESSION_EXPIRY_S), "-t", TOPIC]
    args += ["-C", str(count), "-F", "%U"]  # one Unix timestamp (ns) per message, nothing else
    if out is None:  # create the session: subscribe, then leave after a moment
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        p.terminate()
        p.wait(30)
        return
    with out.open("wb") as f:
        subprocess.run(args, stdout=f, timeout=PHASE_TIMEOUT_S, check=True)


def c_phase(port: int, folder: Path, msgs: list[tuple[str, bytes]]) -> float:
    _mosquitto_sub(port, len(msgs), None)
    publish_all(port, msgs)
    out = folder / "c.txt"
    _mosquitto_sub(port, len(msgs), out)
    stamps = out.read_text().split()
    remove_session(port, "bench-c")
    return (len(stamps) - 1) / (float(stamps[-1]) - float(stamps[0]))


PHASES: dict[str, Callable[[int, Path, list[tuple[str, bytes]]], float]] = {
    "central": central_phase,
    "gmqtt": gmqtt_phase,
    "c": c_phase,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("mosquitto_sub") is None:
        sys.exit("mosquitto_sub not found: apt-get install mosquitto-clients")
    msgs = make_payloads(args.n, args.nodes)
    names = list(PHASES)
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(workdir=Path(tmp)) as broker:
        for r in range(args.rounds):
            order = names[r % 3 :] + names[: r % 3]
            got = {name: PHASES[name](broker.port, Path(tmp), msgs) for name in order}
            rounds.append({k: round(v) for k, v in got.items()})
            print(f"round {r + 1} ({' '.join(order)}): {got}", file=sys.stderr)
    med = {k: statistics.median(rd[k] for rd in rounds) for k in names}
    print(
        json.dumps(
            {
                "central_msgs_per_s": round(med["central"]),
                "gmqtt_msgs_per_s": round(med["gmqtt"]),
                "c_msgs_per_s": round(med["c"]),
                "ratio_vs_gmqtt": round(med["central"] / med["gmqtt"], 3),
                "ratio_vs_c": round(med["central"] / med["c"], 3),
                "rounds": [{k: rd[k] for k in names} for rd in rounds],
                "orders": [" ".join(names[r % 3 :] + names[: r % 3]) for r in range(args.rounds)],
                "messages": args.n,
                "nodes": args.nodes,
                "payload_bytes": len(msgs[0][1]),
                "mode": "drain of a QoS 1 backlog of N queued in the subscriber's own session; "
                "each session removed after its phase",
                "broker": "mosquitto 2 (shilian.broker.Mosquitto: persistence on, "
                "max_queued_messages 0, max_inflight_messages 0)",
                "central_store": "SQLite WAL synchronous=FULL, PUBACK after commit",
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
