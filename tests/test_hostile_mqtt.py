"""Hostile MQTT at volume against a real mosquitto and a real ``shilian central run``: several
clients publish thousands of malformed, oversized, replayed and spoofed messages (a node's
payload on another node's topic: the test broker's ACL lets anyone publish anywhere), and
topics of other shapes, interleaved with a real edge agent's stream of good events. Central
keeps running, counts every bad message by reason, and stores every good event exactly once.

``make reliability`` (SHILIAN_RELIABILITY=1) runs the long form and records the rate of garbage
absorbed and the good-event loss in docs/reliability.md."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shilian.broker import Mosquitto
from tests.processes import Central, Edge, record_result, running_central, wait_for
from wire import MAX_PAYLOAD_BYTES, Topics

pytestmark = pytest.mark.slow

LONG = bool(os.environ.get("SHILIAN_RELIABILITY"))
GOOD_EVENTS = 1000 if LONG else 200  # central's event list answers up to 1,000 at once
ROUNDS = 2500 if LONG else 300  # per client; one round is one message of each bad kind
CLIENTS = 4
NODE_A, NODE_B = "450102001003-a", "450103001005-a"  # two real Nanning villages
A, B = Topics(NODE_A), Topics(NODE_B)
BAD_KINDS = {  # reason label -> how many each round sends
    "invalid_json": 1,
    "schema": 1,
    "oversize": 1,
    "identity_mismatch": 1,
    "bad_topic": 1,
    "unknown_village": 1,
}


@pytest.fixture
def central(broker: Mosquitto, tmp_path: Path) -> Iterator[Central]:
    with running_central(tmp_path / "central", broker.port) as c:
        yield c


def _metrics(central: Central) -> dict[str, float]:
    with urllib.request.urlopen(central.api + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(("shilian_invalid_messages_total", "shilian_duplicate_events_total")):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _invalid(m: dict[str, float], reason: str) -> float:
    return m.get(f'shilian_invalid_messages_total{{reason="{reason}"}}', 0.0)


class Sniffer:
    """Subscribes to node A's events: the payloads a hostile client replays and spoofs."""

    def __init__(self, port: int) -> None:
        self.payloads: list[bytes] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sniffer")
        self.client.on_message = lambda c, u, msg: self.payloads.append(bytes(msg.payload))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(A.event, qos=1)
        self.client.loop_start()

    def close(self) -> None:
        if self.client.is_connected():
            self.client.disconnect()
        self.client.loop_stop()


def _hostile(port: int, n: int, rounds: int, seen: list[bytes], sent: Counter[str]) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hostile-{n}")
    c.max_inflight_messages_set(100)
    c.connect("127.0.0.1", port)
    c.loop_start()
    big = b'{"v":1,"pad":"' + b"x" * (MAX_PAYLOAD_BYTES + 10) + b'"}'
    last = None
    try:
        for i in range(rounds):
            good = seen[i % len(seen)]
            spoof = json.loads(good)
            last = c.publish(A.event, b'{"v":1,"seq":' + str(i).encode() + b",", qos=1)
            c.publish(A.event, json.dumps({"v": 1, "seq": "x", "ts": []}), qos=1)
            c.publish(A.event, big, qos=1)
            c.publish(B.event, good, qos=1)  # A's event on B's topic
            c.publish(f"shilian/v1/not-a-node-{n}/event", good, qos=1)
            spoof["node_id"] = "999999999999-a"
            c.publish("shilian/v1/999999999999-a/event", json.dumps(spoof), qos=1)
            c.publish(A.event, good, qos=1)  # a replay of a stored event
            for reason, k in BAD_KINDS.items():
                sent[reason] += k
            sent["replayed"] += 1
        assert last is not None
        last.wait_for_publish(60)
    finally:
        c.loop_stop()
        c.disconnect()


def test_garbage_at_volume_is_counted_and_no_good_event_is_lost(
    broker: Mosquitto, central: Central, tmp_path: Path
) -> None:
    before = _metrics(central)
    sniffer = Sniffer(broker.port)
    edge = Edge(tmp_path / "edge", NODE_A, broker.port)
    edge.start()
    sent: Counter[str] = Counter()
    try:
        good = edge.emit(20)
        wait_for(lambda: len(sniffer.payloads) >= 20, what="first good events seen")
        seen = list(sniffer.payloads)  # before the garbage, which the sniffer would see too
        sniffer.close()
        errors: list[BaseException] = []

        def run(n: int) -> None:
            try:
                _hostile(broker.port, n, ROUNDS, seen, sent)
            except BaseException as e:
                errors.append(e)
                raise

        t0 = time.monotonic()
        threads = [
            threading.Thread(target=_hostile, args=(broker.port, n, ROUNDS, sniffer.payloads, sent))
            for n in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        good += edge.emit(GOOD_EVENTS - 20)  # while the garbage flows
        for t in threads:
            t.join(600)
        assert not errors, errors
        garbage = sum(sent.values())
        expected = {r: _invalid(before, r) + sent[r] for r in BAD_KINDS}
        wait_for(
            lambda: all(_invalid(_metrics(central), r) >= n for r, n in expected.items()),
            timeout=120,
            what="every bad message counted",
        )
        elapsed = time.monotonic() - t0

        def all_stored() -> list[int] | None:
            seqs = [int(e["seq"]) for e in central.events(NODE_A)]
            return seqs if len(seqs) >= len(good) else None

        stored = wait_for(all_stored, timeout=120, what="every good event stored")
    finally:
        sniffer.close()
        edge.close()
    after = _metrics(central)
    counted = {r: _invalid(after, r) - _invalid(before, r) for r in BAD_KINDS}
    assert counted == {r: float(sent[r]) for r in BAD_KINDS}
    assert after.get("shilian_duplicate_events_total", 0) >= sent["replayed"]
    assert sorted(stored) == sorted(good) and len(set(stored)) == len(stored)
    assert central.p is not None and central.p.poll() is None
    assert central.get("/healthz")["status"] == "ok"
    record_result(
        "hostile_mqtt",
        garbage_messages=garbage,
        garbage_per_s=round(garbage / elapsed),
        good_events=len(good),
        lost=len(set(good) - set(stored)),
        duplicated=len(stored) - len(set(stored)),
    )
