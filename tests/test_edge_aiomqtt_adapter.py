"""edge/aiomqtt_adapter.py: the aiomqtt/paho internals it relies on are still there (names and
signatures, failing loudly with library, version and name), and a real round trip through it
against a private mosquitto: PUBACK reason codes, received properties, the will after a drop,
no unretrieved-future noise after a loss."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest

from edge.aiomqtt_adapter import WRITTEN_FOR
from edge.mqtt_link import Incoming, Link, LinkError, PublishRejected, Will
from shilian.broker import Mosquitto
from tests.adapter_checks import Checker

ROOT = Path(__file__).resolve().parents[1]
CHECK = Checker("edge/aiomqtt_adapter.py", WRITTEN_FOR)
#: Upper bound of any wait on the shared machine (not a timing assertion).
WAIT_S = 30.0


def test_versions_are_the_ones_the_adapter_was_written_for() -> None:
    CHECK.versions()


def test_paho_is_loaded_without_its_dns_srv_support() -> None:
    """In a fresh process (this one imported paho first), importing the edge's MQTT link keeps
    dnspython out (RSS) and paho still has the flag its import sets; a later ``import dns``
    (meetings) works."""
    CHECK.has("paho-mqtt", paho, "HAVE_DNS", "paho.mqtt.client")
    probe = (
        "import sys, edge.mqtt_link, paho.mqtt.client as p\n"
        "print(p.HAVE_DNS, 'dns' in sys.modules)\n"
        "import dns.resolver\n"
        "print('dns.resolver' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False", "True"]


async def test_private_names_and_signatures_are_still_there() -> None:
    client = aiomqtt.Client("127.0.0.1", 1, identifier="probe")  # never connected
    inner = CHECK.has("aiomqtt", client, "_client", "aiomqtt.Client")
    CHECK.is_a("aiomqtt", inner, paho.Client, "aiomqtt.Client._client")
    disconnected = CHECK.has("aiomqtt", client, "_disconnected", "aiomqtt.Client")
    CHECK.is_a("aiomqtt", disconnected, asyncio.Future, "aiomqtt.Client._disconnected")
    # aiomqtt's own callbacks, which the adapter calls after its own with these arguments.
    CHECK.params(
        "aiomqtt",
        inner.on_publish,
        "aiomqtt.Client._on_publish (paho on_publish)",
        ["client", "userdata", "mid", "reason_code", "properties"],
    )
    CHECK.params(
        "aiomqtt",
        inner.on_disconnect,
        "aiomqtt.Client._on_disconnect (paho on_disconnect)",
        ["client", "userdata", "flags", "reason_code", "properties"],
    )
    # paho's public API, reached through the private client.
    publish = CHECK.has("paho-mqtt", paho.Client, "publish", "paho.Client")
    CHECK.params(
        "paho-mqtt",
        publish,
        "paho.Client.publish",
        ["topic", "payload", "qos", "retain", "properties"],
    )
    CHECK.params(
        "paho-mqtt",
        CHECK.has("paho-mqtt", paho.Client, "socket", "paho.Client"),
        "paho.Client.socket",
        [],
    )


async def _connect(port: int, node: str) -> Link:
    return await Link.connect(
        host="127.0.0.1",
        port=port,
        client_id=node,
        keepalive=10,
        will=Will(f"t/{node}/state", b"offline"),
    )


async def _watch(port: int, topic: str, got: list[bytes], ready: asyncio.Event) -> None:
    """Record every payload on ``topic`` (aiomqtt's public API only)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="w-" + uuid.uuid4().hex[:8]) as c:
        await c.subscribe(topic, qos=1)
        ready.set()
        async for m in c.messages:
            got.append(bytes(m.payload))


async def _first(it: AsyncIterator[Incoming]) -> Incoming:
    return await asyncio.wait_for(anext(it), WAIT_S)


async def test_round_trip_puback_properties_and_the_will_after_a_drop(broker: Mosquitto) -> None:
    watched: list[bytes] = []
    ready = asyncio.Event()
    watcher = asyncio.ensure_future(_watch(broker.port, "t/node-a/state", watched, ready))
    await asyncio.wait_for(ready.wait(), WAIT_S)
    link = await _connect(broker.port, "node-a")
    try:
        await link.subscribe("t/node-a/in")
        received = link.messages()
        reason = await asyncio.wait_for(
            link.publish_nowait("t/node-a/in", b"x", correlation=b"c1", response_topic="t/r"),
            WAIT_S,
        )
        assert reason == 0  # the PUBACK's reason code, through the adapter's on_publish
        msg = await _first(received)
        assert (msg.topic, msg.payload, msg.correlation, msg.response_topic) == (
            "t/node-a/in",
            b"x",
            b"c1",
            "t/r",
        )
        link.abort()
        assert not link.alive
        with pytest.raises(LinkError):
            await _first(received)  # aiomqtt's iterator ends once paho has seen the drop
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while b"offline" not in watched:
            assert asyncio.get_running_loop().time() < deadline, "no will after the drop"
            await asyncio.sleep(0.02)
    finally:
        watcher.cancel()
        await link.close()


async def test_refused_publish_gives_its_reason_code(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite t/ok/#\n")
    (tmp_path / "m").mkdir()
    with Mosquitto(workdir=tmp_path / "m", extra_conf=f"acl_file {acl}\n") as b:
        link = await _connect(b.port, "node-b")
        try:
            await asyncio.wait_for(link.publish("t/ok/1", b"fine"), WAIT_S)
            with pytest.raises(PublishRejected) as refused:
                await asyncio.wait_for(link.publish("t/denied", b"no"), WAIT_S)
            assert refused.value.reason == 135  # Not authorized: aiomqtt's publish() hides it
        finally:
            await link.close()


async def test_a_lost_connection_leaves_no_unretrieved_future(broker: Mosquitto) -> None:
    loop = asyncio.get_running_loop()
    noise: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: noise.append(context))
    try:
        link = await _connect(broker.port, "node-c")
        broker.stop()  # nobody iterates messages() when the connection goes
        await asyncio.wait_for(link.closed.wait(), WAIT_S)
        await link.close()
        del link
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert [c.get("message") for c in noise] == []
