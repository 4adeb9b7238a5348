"""The only place central reaches inside gmqtt. Written for **gmqtt 0.8.0** (pinned in
pyproject.toml and constraints.txt); ``tests/test_central_gmqtt_adapter.py`` fails naming the
library, the version and the attribute when an upgrade moves any of the names below.

Why: PUBACK after commit, in bulk. gmqtt's public way to acknowledge after processing
(``optimistic_acknowledgement=False`` and an async ``on_message`` whose return value is the
PUBACK reason) costs a task, a future wake-up and a socket write per message; measured with the
whole pipeline, it held central at ~9-10k msg/s, against ~15-18k msg/s (bench/ingest.py, 50,000
queued events from 200 nodes, docs/central.md "Benchmarks") when the QoS 1 deliveries are taken
straight from gmqtt's packet handler and a committed batch's PUBACKs go out in one socket write.

Private names used:

- ``Client._package_handler`` (``gmqtt.mqtt.handler.MqttPackageHandler``) and its
  ``_handle_qos_1_publish_packet(mid, packet, print_topic, properties)``, replaced on the
  instance: gmqtt's ``_handle_publish_packet`` calls it through the instance for every QoS 1
  PUBLISH, and with it replaced gmqtt neither acknowledges nor calls ``on_message``.
- ``MqttPackageHandler.current_connection`` (public on that private object): the
  ``MQTTConnection`` the packet came on, whose public ``send_package(bytes)`` and
  ``is_closing()`` carry the PUBACKs back on that connection only.
- ``Client.reconnect(delay=False)``, overridden: gmqtt's handler calls it when the connection
  drops (``_handle_disconnect_packet``). Its own loop retries the same client with a fixed delay
  even with ``reconnect_retries = 0`` (one retry is allowed after a success), and a second
  connection of the same client could receive acknowledgements meant for the first; ours only
  signals the loss and central opens a fresh client.

- ``Client._connection`` (``gmqtt.mqtt.connection.MQTTConnection``), its ``_protocol``
  (``MQTTProtocol``) and that protocol's ``read(n)``, replaced on the instance: gmqtt's read
  loop (``MQTTProtocol._read_loop``) calls ``self.read(65536)`` for every chunk it parses. The
  replacement waits for the link's ``room`` first, so that while central holds as many
  uncommitted messages as it may, nothing more is parsed; the ``asyncio.StreamReader`` under it
  then fills and pauses the transport itself (its own flow control, which resumes reading once
  the loop reads again), and the broker is held back by TCP. Pausing the transport from here
  instead would race that reader, which resumes a transport it finds paused.

Also gmqtt-specific but not private: the PUBACK bytes are packed here by the MQTT 5 spec
(§3.4: fixed header 0x40, remaining length 4, packet id, reason 0, no properties), and a refused
CONNACK's code is read from ``MQTTConnectError.args`` (gmqtt raises ``MQTTConnectError(code)``).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any, Protocol

import gmqtt

#: The version the private names above were read from.
WRITTEN_FOR = {"gmqtt": "0.8.0"}

#: MQTT 5 PUBACK, success, no properties: type 4 << 4, remaining length 4, packet id, reason 0,
#: property length 0 (MQTT 5 §3.4.1-3.4.2).
_PUBACK = struct.Struct("!BBHBB")
_PUBACK_HEADER = 0x40
_PUBACK_REMAINING = 4


class Delivering(Protocol):
    """The connection a QoS 1 message came on (a gmqtt ``MQTTConnection``)."""

    def send_package(self, package: bytes) -> None: ...
    def is_closing(self) -> bool: ...


#: (topic, payload, properties, packet id or None for QoS 0, connection it came on or None)
Sink = Callable[[str, bytes, dict[str, Any], int | None, Delivering | None], None]


class IngestClient(gmqtt.Client):  # type: ignore[misc]  # gmqtt ships no type hints
    """A gmqtt client whose messages all go to ``sink``, QoS 1 ones unacknowledged (acknowledge
    them with :func:`send_pubacks` after commit), and which, instead of reconnecting itself,
    sets ``lost`` when the connection drops. One client per connection."""

    def __init__(
        self,
        *args: Any,
        lost: asyncio.Event,
        sink: Sink,
        room: asyncio.Event | None = None,
        **kwargs: Any,
    ) -> None:
        """``room``: while it is clear, the socket is not read (set: read on)."""
        self._lost_signal = lost
        super().__init__(*args, optimistic_acknowledgement=False, **kwargs)
        self._sink = sink
        self._room = room
        self._handler = self._package_handler
        self.on_message = self._on_qos0
        self._handler._handle_qos_1_publish_packet = self._on_qos1

    async def connect(self, *args: Any, **kwargs: Any) -> None:
        await super().connect(*args, **kwargs)
        room = self._room
        if room is None:
            return
        protocol = self._connection._protocol
        read = protocol.read

        async def read_when_room(n: int = -1) -> bytes:
            await room.wait()
            return await read(n)  # type: ignore[no-any-return]

        protocol.read = read_when_room

    async def reconnect(self, delay: bool = False) -> None:
        self._lost_signal.set()

    def _on_qos0(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        self._sink(topic, payload, props, None, None)
        return 0

    def _on_qos1(self, mid: int, payload: bytes, topic: str, props: dict[str, Any]) -> None:
        self._sink(topic, payload, props, mid, self._handler.current_connection)


def send_pubacks(conn: Delivering | None, mids: list[int]) -> None:
    """One socket write for a batch's PUBACKs, on the connection that delivered them; nothing
    if that connection is gone (the broker redelivers to the next session)."""
    if conn is not None and not conn.is_closing():
        conn.send_package(
            b"".join([_PUBACK.pack(_PUBACK_HEADER, _PUBACK_REMAINING, m, 0, 0) for m in mids])
        )


def refusal_code(exc: BaseException) -> int | None:
    """The CONNACK reason code of a refused connect, or None if ``exc`` is not a refusal."""
    if isinstance(exc, gmqtt.MQTTConnectError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None
