"""central/gmqtt_adapter.py: the gmqtt internals it relies on are still there (names, signatures
and the calls between them, failing loudly with library, version and name), and a real round trip
through it against a private mosquitto: QoS 1 deliveries reach the sink with their packet id and
connection, only the PUBACKs we send count (the broker redelivers the rest to the next session),
and a dropped connection is signalled instead of gmqtt reconnecting by itself."""

from __future__ import annotations

import asyncio
import inspect
import uuid

import aiomqtt
import gmqtt
from gmqtt.mqtt.connection import MQTTConnection
from gmqtt.mqtt.handler import MqttPackageHandler
from gmqtt.mqtt.protocol import MQTTProtocol

from central.gmqtt_adapter import (
    WRITTEN_FOR,
    Delivering,
    IngestClient,
    refusal_code,
    send_pubacks,
)
from shilian.broker import Mosquitto
from tests.adapter_checks import Checker

CHECK = Checker("central/gmqtt_adapter.py", WRITTEN_FOR)
#: Upper bound of any wait on the shared machine (not a timing assertion).
WAIT_S = 30.0
#: Session expiry of the test's persistent session: outlives the test.
SESSION_EXPIRY_S = 300


def test_versions_are_the_ones_the_adapter_was_written_for() -> None:
    CHECK.versions()


async def test_private_names_signatures_and_calls_are_still_there() -> None:
    client = gmqtt.Client("probe")  # never connected
    handler = CHECK.has("gmqtt", client, "_package_handler", "gmqtt.Client")
    CHECK.is_a("gmqtt", handler, MqttPackageHandler, "gmqtt.Client._package_handler")
    qos1 = CHECK.has("gmqtt", handler, "_handle_qos_1_publish_packet", "MqttPackageHandler")
    CHECK.params(
        "gmqtt",
        qos1,
        "MqttPackageHandler._handle_qos_1_publish_packet",
        ["mid", "packet", "print_topic", "properties"],
    )
    # The replacement only works while the PUBLISH handler looks it up on the instance.
    publish = CHECK.has("gmqtt", MqttPackageHandler, "_handle_publish_packet", "MqttPackageHandler")
    if "self._handle_qos_1_publish_packet(" not in inspect.getsource(publish):
        CHECK.fail(
            "gmqtt",
            "MqttPackageHandler._handle_publish_packet",
            "no longer calls self._handle_qos_1_publish_packet(...)",
        )
    if not isinstance(inspect.getattr_static(MqttPackageHandler, "current_connection"), property):
        CHECK.fail("gmqtt", "MqttPackageHandler.current_connection", "is no longer a property")
    for name, expected in (("send_package", ["package"]), ("is_closing", [])):
        method = CHECK.has("gmqtt", MQTTConnection, name, "MQTTConnection")
        CHECK.params("gmqtt", method, f"MQTTConnection.{name}", expected)
    CHECK.params("gmqtt", gmqtt.Client.reconnect, "gmqtt.Client.reconnect", ["delay"])
    # The read gate only works while the read loop looks read up on the protocol instance.
    CHECK.params("gmqtt", MQTTProtocol.read, "MQTTProtocol.read", ["n"])
    loop = CHECK.has("gmqtt", MQTTProtocol, "_read_loop", "MQTTProtocol")
    if "await self.read(" not in inspect.getsource(loop):
        CHECK.fail("gmqtt", "MQTTProtocol._read_loop", "no longer calls self.read(...)")
    if refusal_code(gmqtt.MQTTConnectError(134)) != 134:
        CHECK.fail("gmqtt", "MQTTConnectError(code).args", "no longer carries the code")


class Taken:
    """What the adapter's sink received, in order."""

    def __init__(self) -> None:
        self.msgs: list[tuple[bytes, int | None, Delivering | None]] = []

    def sink(
        self, topic: str, payload: bytes, props: object, mid: int | None, conn: Delivering | None
    ) -> None:
        self.msgs.append((payload, mid, conn))

    async def until(self, n: int) -> None:
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while len(self.msgs) < n:
            assert asyncio.get_running_loop().time() < deadline, f"only {self.msgs} arrived"
            await asyncio.sleep(0.02)


async def _connect(port: int, client_id: str, taken: Taken, lost: asyncio.Event) -> IngestClient:
    client = IngestClient(
        client_id,
        clean_session=False,
        lost=lost,
        sink=taken.sink,
        session_expiry_interval=SESSION_EXPIRY_S,
    )
    subscribed = asyncio.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    await asyncio.wait_for(client.connect("127.0.0.1", port, keepalive=10), WAIT_S)
    client.subscribe(gmqtt.Subscription("t/#", qos=1))
    await asyncio.wait_for(subscribed.wait(), WAIT_S)
    return client


async def _publish(port: int, *payloads: bytes) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="p-" + uuid.uuid4().hex[:8]) as p:
        for payload in payloads:
            await p.publish("t/x", payload, qos=1)


async def test_round_trip_only_our_pubacks_count_and_a_drop_is_signalled(
    broker: Mosquitto,
) -> None:
    client_id = "ingest-" + uuid.uuid4().hex[:8]
    first, lost = Taken(), asyncio.Event()
    client = await _connect(broker.port, client_id, first, lost)
    await _publish(broker.port, b"m1", b"m2")
    await first.until(2)
    (p1, mid1, conn1), (p2, mid2, conn2) = first.msgs
    assert (p1, p2) == (b"m1", b"m2")
    assert mid1 is not None and mid2 is not None, "QoS 1 deliveries reached gmqtt's own path"
    assert conn1 is conn2 is not None
    send_pubacks(conn1, [mid1])  # m2 stays unacknowledged
    await client.disconnect()  # after the PUBACK, on the same socket

    again, lost2 = Taken(), asyncio.Event()
    client2 = await _connect(broker.port, client_id, again, lost2)
    try:
        await _publish(broker.port, b"m3")  # after any redelivery: the session's queue is FIFO
        await again.until(2)
        assert [p for p, _, _ in again.msgs] == [b"m2", b"m3"]  # m1 acknowledged, m2 not
        broker.stop()
        await asyncio.wait_for(lost2.wait(), WAIT_S)  # gmqtt's reconnect loop replaced
    finally:
        await client2.disconnect()
