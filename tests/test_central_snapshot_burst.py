"""An alarm arriving during a burst of snapshot uploads is stored and visible in the API without
waiting for the burst: a real mosquitto, ``shilian central run`` in its own process, and a node
(paho) whose pictures queued in the broker while central was down (as every node's do after an
outage). Once central is storing them, the node raises an alarm.

Order, not time, is asserted: central's event ids are given in commit order, so the pictures
committed between the alarm's publish and the alarm itself say how long it waited: at most the
batches in hand (central.link.MAX_BATCH_BYTES each), not the rest of the burst."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import wire
from central.link import MAX_BATCH_BYTES
from shilian.broker import Mosquitto
from tests.processes import Central, wait_for
from wire.snapshots import MAX_SNAPSHOT_JPEG_BYTES, SNAPSHOT_KIND

pytestmark = pytest.mark.slow

NODE = "450102001003-a"
#: Pictures in the burst: 600 x ~59 KiB ~ 35 MiB, ~35 times MAX_BATCH_BYTES.
BURST = 600
#: Cameras per earlier alarm (central keeps at most 8 per alarm).
CAMERAS = 6


def _node_client(port: int) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=NODE, protocol=paho.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _publish_all(c: paho.Client, messages: list[tuple[str, bytes]]) -> None:
    infos = [c.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(30)


def _burst(boot: str) -> tuple[list[tuple[str, bytes]], tuple[str, bytes]]:
    """The node's pictures of its earlier alarms (seq 1..BURST), then a new alarm."""
    topics = wire.Topics(NODE)
    # A JPEG's first bytes, then incompressible filler up to the wire's bound.
    jpeg = b"\xff\xd8\xff\xe0" + os.urandom(MAX_SNAPSHOT_JPEG_BYTES - 6) + b"\xff\xd9"
    b64 = base64.b64encode(jpeg).decode()
    now = time.time()
    pictures = []
    for seq in range(1, BURST + 1):
        camera = f"cam-{(seq - 1) % CAMERAS}"
        data = {
            "alarm_boot_id": "e" * 32,
            "alarm_seq": 1 + (seq - 1) // CAMERAS,
            "camera": camera,
            "zone": 1,
            "taken_ts": now,
            "width": 640,
            "height": 360,
            "jpeg_b64": b64,
        }
        e = wire.Event(node=NODE, boot_id=boot, seq=seq, ts=now, priority=wire.Priority.INFO,
                       kind=SNAPSHOT_KIND, device=camera, data=data)  # fmt: skip
        pictures.append((topics.event, wire.encode(e)))
    alarm = wire.Event(node=NODE, boot_id=boot, seq=BURST + 1, ts=now,
                       priority=wire.Priority.ALARM, kind="panic", device="alarm_board",
                       data={"zone": 2})  # fmt: skip
    return pictures, (topics.event_alarm, wire.encode(alarm))


def _rows(db: Path, sql: str) -> list[Any]:
    with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as c:
        try:
            return c.execute(sql).fetchall()
        except sqlite3.OperationalError:  # not created yet
            return []


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    # room for the whole burst in central's session queue (mosquitto's default is 1,000)
    (tmp_path / "mosquitto").mkdir()
    with Mosquitto(workdir=tmp_path / "mosquitto", extra_conf="max_queued_messages 5000\n") as b:
        yield b


def test_an_alarm_during_a_snapshot_burst_does_not_wait_for_the_burst(
    broker: Mosquitto, tmp_path: Path
) -> None:
    assert BURST * MAX_SNAPSHOT_JPEG_BYTES > 10 * MAX_BATCH_BYTES
    central = Central(tmp_path / "central", broker.port)
    node = _node_client(broker.port)
    try:
        central.start()  # central's two persistent sessions now exist in the broker
        assert central.signal(15) == 0  # clean stop: the broker queues for central meanwhile
        pictures, alarm = _burst(uuid.uuid4().hex)
        _publish_all(node, pictures)
        central.start()
        stored = wait_for(
            lambda: _rows(central.db, "SELECT count(*) FROM snapshots")[0][0] or None,
            what="central storing the burst",
        )
        _publish_all(node, [alarm])
        visible = wait_for(
            lambda: next(iter(central.get(f"/api/v1/alarms?node={NODE}")["alarms"]), None),
            what="the alarm in the API",
        )
        wait_for(
            lambda: _rows(central.db, "SELECT count(*) FROM snapshots")[0][0] == BURST,
            what="every picture stored",
        )
    finally:
        node.loop_stop()
        node.disconnect()
        central.close()
    assert visible["kind"] == "panic"
    [(alarm_id,)] = _rows(central.db, f"SELECT id FROM events WHERE seq = {BURST + 1}")
    [(before,)] = _rows(
        central.db, f"SELECT count(*) FROM events WHERE kind = 'snapshot' AND id < {alarm_id}"
    )
    # at most the batches in hand when the alarm came: a few MAX_BATCH_BYTES of pictures
    per_batch = MAX_BATCH_BYTES // (MAX_SNAPSHOT_JPEG_BYTES * 4 // 3) + 1
    waited = before - stored
    assert waited <= 3 * per_batch, f"{waited} pictures were committed while the alarm waited"
    assert json.loads(_rows(central.db, f"SELECT data FROM events WHERE id = {alarm_id}")[0][0])
