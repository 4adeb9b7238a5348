"""The only place the edge reaches inside aiomqtt: its paho client, for what aiomqtt's public API
hides. Written for **aiomqtt 2.5.1 over paho-mqtt 2.2.0** (both pinned in pyproject.toml and
constraints.txt); ``tests/test_edge_aiomqtt_adapter.py`` fails naming the library, the version
and the attribute when an upgrade moves any of the names below.

Private names used, and why each one is needed:

- ``aiomqtt.Client._client`` (the ``paho.mqtt.client.Client`` inside): aiomqtt's ``publish()``
  drops the PUBACK reason code (its ``_on_publish`` ignores ``reason_code``), so a publish the
  broker refused would look delivered. mosquitto 2.0.11 answers a publish outside the node's
  ACL with PUBACK 135 (Not authorized) on MQTT 5, and the outbox must keep that message as a
  dead letter instead of deleting it as sent (tests/test_edge_agent.py checks the 135). We
  publish with paho's public ``publish()`` and take the reason code from paho's ``on_publish``.
  paho's ``publish()`` also queues the PUBLISH before it returns, which aiomqtt's coroutine
  cannot promise: the birth is on the wire before any event of its connection, and the sender
  keeps a window in flight with one future per packet id instead of one task per message.
- aiomqtt's own paho callbacks (``Client._on_publish(client, userdata, mid, reason_code,
  properties)``, ``Client._on_disconnect(client, userdata, flags, reason_code, properties)``),
  read back through paho's public ``on_publish``/``on_disconnect`` properties: we install ours
  in front and call aiomqtt's after, with those exact arguments, so its own waiters (subscribe,
  its message iterator, ``__aexit__``) keep working.
- ``aiomqtt.Client._disconnected`` (an ``asyncio.Future``): when the connection is lost while
  nobody iterates ``messages`` (e.g. during the birth publish), aiomqtt leaves an exception in it
  that nobody retrieves, and asyncio logs "Future exception was never retrieved" at ERROR when
  it is collected. We report the loss ourselves (:class:`edge.mqtt_link.LinkError`), so we
  retrieve it.

- ``paho.mqtt.client.HAVE_DNS``: paho's optional DNS SRV support, which we keep from loading
  dnspython (:func:`_import_paho_without_dnspython`, RSS); the test checks it stays ``False``.

Everything else is public: paho's ``publish()``, ``socket()`` and callback properties; dropping
the connection like a power cut (:meth:`PahoInside.drop_connection`) shuts paho's socket down
with the standard ``socket.shutdown`` and lets paho's read loop find the end of stream itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Callable
from typing import Any


def _import_paho_without_dnspython() -> None:
    """Import paho while ``dns`` (dnspython) cannot be found. paho-mqtt 2.2 imports
    ``dns.resolver`` at import time, only for ``connect_srv`` (DNS SRV lookup), which the edge
    never uses; dnspython is installed (aioice, for meetings, needs it), and those ~60 modules
    cost every agent ~5 MB of RSS (measured: ``import paho.mqtt.client`` 26.6 → 21.8 MB). paho
    then runs with ``HAVE_DNS = False``; a later ``import dns`` (a meeting) works as usual."""
    if "paho.mqtt.client" in sys.modules or "dns" in sys.modules:
        return
    sys.modules["dns"] = None  # type: ignore[assignment]  # makes ``import dns.…`` fail
    try:
        import paho.mqtt.client  # noqa: F401
    finally:
        del sys.modules["dns"]


_import_paho_without_dnspython()

import aiomqtt  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

#: The versions the private names above were read from.
WRITTEN_FOR = {"aiomqtt": "2.5.1", "paho-mqtt": "2.2.0"}

#: (packet id, PUBACK reason code) -> True if the publish was ours (else aiomqtt's own).
PubackHandler = Callable[[int, int], bool]
#: (reason text) -> None, called once paho has found the connection gone.
LostHandler = Callable[[str], None]


class NotQueued(Exception):
    """paho refused to queue a publish (not connected, queue full...): the text says why."""


class PahoInside:
    """aiomqtt's paho client, with our PUBACK and disconnect callbacks in front of aiomqtt's.

    Create it before connecting (the callbacks must be in place for the first PUBACK).
    """

    def __init__(
        self, client: aiomqtt.Client, on_puback: PubackHandler, on_lost: LostHandler
    ) -> None:
        self._aiomqtt = client
        self._paho: paho.Client = client._client
        self._on_puback, self._on_lost = on_puback, on_lost
        self._aiomqtt_on_publish: Any = self._paho.on_publish
        self._aiomqtt_on_disconnect: Any = self._paho.on_disconnect
        self._paho.on_publish = self._publish_done
        self._paho.on_disconnect = self._disconnected

    def publish(
        self, topic: str, payload: bytes, retain: bool, properties: Properties | None
    ) -> int:
        """Queue a QoS 1 PUBLISH; returns its packet id (the PUBACK comes to ``on_puback`` from
        a later loop callback, never inside this call). :class:`NotQueued` if paho refuses."""
        info = self._paho.publish(topic, payload, 1, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise NotQueued(paho.error_string(info.rc))
        return info.mid

    def drop_connection(self) -> None:
        """End the TCP connection now without DISCONNECT, as a power cut would: the broker
        publishes the will. paho then reads the end of stream and reports the loss."""
        sock = self._paho.socket()
        if not isinstance(sock, socket.socket):  # None once paho has closed it (TLS is a subclass)
            return
        # OSError: already gone, and the broker has seen the connection end either way.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    # -- paho callbacks (run on the event loop by aiomqtt's socket callbacks) ------------------

    def _publish_done(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        if not self._on_puback(mid, int(getattr(reason, "value", reason))):
            self._aiomqtt_on_publish(client, userdata, mid, reason, props)

    def _disconnected(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._on_lost(str(reason))
        self._aiomqtt_on_disconnect(client, userdata, flags, reason, props)
        disconnected: asyncio.Future[None] = self._aiomqtt._disconnected
        if disconnected.done() and not disconnected.cancelled():
            disconnected.exception()  # we report the loss ourselves; no "never retrieved" noise
