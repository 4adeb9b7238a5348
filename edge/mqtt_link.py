"""One MQTT 5 connection, wrapping aiomqtt/paho completely (no paho or aiomqtt type leaks out).

Why not aiomqtt's ``publish()`` alone: it ignores the PUBACK reason code, so a publish the
broker refused (e.g. 135 Not authorized outside the node's ACL) would look delivered. We publish
through the paho client inside aiomqtt and resolve our own future per message id with the PUBACK
reason code; everything that needs aiomqtt's internals for that is in
:mod:`edge.aiomqtt_adapter` (which names them, and the version they were read from).

Errors, by whose fault: :class:`LinkError` the connection is gone or could not be made (retry),
:class:`ConnectRefused` the broker refused the CONNECT (credentials, id: retrying soon will not
help), :class:`PublishRejected` the broker refused one message (keep it, do not retry it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import edge.aiomqtt_adapter  # noqa: F401  # first: it imports paho without dnspython (RSS)

# isort: split
import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.aiomqtt_adapter import NotQueued, PahoInside
from pki.tls import client_context
from wire.limits import NODE_OPERATION_TIMEOUT_S

#: Seconds to wait for CONNACK / SUBACK / DISCONNECT before declaring the link dead: the
#: contract's bound, from which central's grace after a broker outage is derived.
OPERATION_TIMEOUT_S = NODE_OPERATION_TIMEOUT_S
#: MQTT reason codes >= 0x80 are failures (MQTT 5 §2.4).
REASON_FAILURE = 0x80
#: paho's own in-flight cap; our sender keeps fewer in flight, so paho never queues silently.
PAHO_MAX_INFLIGHT = 256

log = logging.getLogger("shilian.edge.mqtt")


class LinkError(Exception):
    """The connection to the broker is gone or could not be made."""


class ConnectRefused(LinkError):
    """CONNACK with a failure reason code (bad credentials, client id refused...)."""

    def __init__(self, reason: int, text: str) -> None:
        super().__init__(f"CONNACK {reason}: {text}")
        self.reason = reason


class PublishRejected(Exception):
    """The broker answered a QoS 1 publish with a failure reason code (>= 0x80)."""

    def __init__(self, reason: int) -> None:
        super().__init__(f"PUBACK reason {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    retain: bool = True
    qos: int = 1


@dataclass(frozen=True, slots=True)
class Incoming:
    """A received message with the MQTT 5 properties the agent uses."""

    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None = None
    correlation: bytes | None = None
    expiry_s: float | None = None  # remaining message expiry interval, when the sender set one


class TlsFiles(Protocol):
    """Where the client certificate is (``edge.config.TlsConfig`` is one)."""

    @property
    def ca_file(self) -> Path: ...
    @property
    def cert_file(self) -> Path: ...
    @property
    def key_file(self) -> Path: ...


def tls_context(tls: TlsFiles) -> ssl.SSLContext:
    """Verify the broker against our CA (and its name) and present our certificate.
    Missing or unreadable files are :class:`LinkError` (the config points at them)."""
    try:
        return client_context(tls.ca_file, tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as e:
        raise LinkError(f"TLS files unusable: {e}") from None


class Link:
    """A connected MQTT 5 session (clean start). Create with :meth:`connect`; end with
    :meth:`close` (DISCONNECT, no will) or :meth:`abort` (TCP dropped: the broker sends the will).
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._session = contextlib.AsyncExitStack()
        self._paho = PahoInside(client, self._on_puback, self._on_lost)
        self._pubs: dict[int, asyncio.Future[int]] = {}
        self._lost: LinkError | None = None
        #: Set once the link is gone (lost, closed or aborted).
        self.closed = asyncio.Event()

    @classmethod
    async def connect(
        cls,
        *,
        host: str,
        port: int,
        client_id: str,
        keepalive: int,
        will: Will,
        username: str | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> Link:
        """Connect with clean start; raises :class:`ConnectRefused` or :class:`LinkError`."""
        will_props = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
        client = aiomqtt.Client(
            host,
            port,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(will.topic, will.payload, will.qos, will.retain, will_props),
            clean_start=True,
            keepalive=keepalive,
            username=username,
            password=password,
            timeout=OPERATION_TIMEOUT_S,
            logger=log,
            max_inflight_messages=PAHO_MAX_INFLIGHT,
            tls_context=tls_context(tls) if tls is not None else None,
        )
        link = cls(client)
        attempt = asyncio.ensure_future(link._session.enter_async_context(client))
        try:
            # Shielded: the blocking part runs in a thread that cancellation cannot stop, and
            # a connection it completes later would be left open with nobody owning it.
            await asyncio.shield(attempt)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await attempt
            if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
                link.abort()  # connected after all: drop it like a power cut
            raise
        except MqttConnectError as e:
            rc = e.rc if isinstance(e.rc, int) else getattr(e.rc, "value", -1)
            raise ConnectRefused(int(rc), str(e)) from None
        except aiomqtt.MqttError as e:
            raise LinkError(str(e) or type(e).__name__) from None
        return link

    @property
    def alive(self) -> bool:
        return self._lost is None

    def publish_nowait(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        correlation: bytes | None = None,
        response_topic: str | None = None,
    ) -> asyncio.Future[int]:
        """Send a QoS 1 publish; the future gives the PUBACK reason code or fails with
        :class:`LinkError` if the link dies first."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self._lost is not None:
            fut.set_exception(self._lost)
            return fut
        props = None
        if correlation is not None or response_topic is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if correlation is not None:
                props.CorrelationData = correlation
            if response_topic is not None:
                props.ResponseTopic = response_topic
        try:
            mid = self._paho.publish(topic, payload, retain, props)
        except NotQueued as e:
            fut.set_exception(LinkError(f"publish failed: {e}"))
            return fut
        # PUBACK is read by a loop callback, never inside publish(): registering now is safe.
        self._pubs[mid] = fut
        return fut

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        correlation: bytes | None = None,
        response_topic: str | None = None,
    ) -> None:
        """QoS 1 publish awaiting its PUBACK; :class:`PublishRejected` on a failure reason."""
        fut = self.publish_nowait(
            topic, payload, retain=retain, correlation=correlation, response_topic=response_topic
        )
        try:
            reason = await asyncio.wait_for(fut, OPERATION_TIMEOUT_S)
        except TimeoutError:
            raise LinkError("no PUBACK in time") from None
        if reason >= REASON_FAILURE:
            raise PublishRejected(reason)

    async def subscribe(self, *topics: str) -> None:
        try:
            await self._client.subscribe([(t, 1) for t in topics])
        except aiomqtt.MqttError as e:
            raise LinkError(f"subscribe failed: {e}") from None

    async def messages(self) -> AsyncIterator[Incoming]:
        """Received messages until the link dies (then :class:`LinkError`)."""
        try:
            async for m in self._client.messages:
                yield _incoming(m)
        except aiomqtt.MqttError as e:
            self._set_lost(LinkError(f"connection lost: {e}"))
            raise self._lost or LinkError("connection lost") from None
        self._set_lost(LinkError("connection closed"))

    async def close(self) -> None:
        """Clean DISCONNECT: the broker discards the will."""
        self._set_lost(LinkError("closed"))
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await asyncio.wait_for(self._session.aclose(), OPERATION_TIMEOUT_S)

    def abort(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a power cut would: the broker
        publishes the will."""
        self._set_lost(LinkError("aborted"))
        self._paho.drop_connection()

    # -- from the paho client (run on the event loop by aiomqtt's socket callbacks) ---------

    def _on_puback(self, mid: int, reason: int) -> bool:
        fut = self._pubs.pop(mid, None)
        if fut is None:
            return False
        if not fut.done():
            fut.set_result(reason)
        return True

    def _on_lost(self, reason: str) -> None:
        self._set_lost(LinkError(f"disconnected: {reason}"))

    def _set_lost(self, exc: LinkError) -> None:
        if self._lost is None:
            self._lost = exc
            self.closed.set()
        pubs, self._pubs = self._pubs, {}
        for fut in pubs.values():
            if not fut.done():
                fut.set_exception(self._lost)
                fut.exception()  # a sender that already gave up must not warn at GC time


def _incoming(m: aiomqtt.Message) -> Incoming:
    props = m.properties
    payload = m.payload if isinstance(m.payload, bytes | bytearray) else str(m.payload).encode()
    rt = getattr(props, "ResponseTopic", None) if props is not None else None
    cd = getattr(props, "CorrelationData", None) if props is not None else None
    ex = getattr(props, "MessageExpiryInterval", None) if props is not None else None
    return Incoming(
        topic=m.topic.value,
        payload=bytes(payload),
        retain=m.retain,
        response_topic=rt,
        correlation=bytes(cd) if cd is not None else None,
        expiry_s=float(ex) if ex is not None else None,
    )
