"""The node's MQTT session supervisor: connect with backoff, birth, devices, commands.

Per connection attempt: increment and persist ``birth_seq`` (outbox meta table), connect with
clean start and the will ``NodeState(offline, will, birth_seq)``; after CONNACK subscribe to our
command requests (and certificate answers, meeting requests), to central's stored-acknowledgements
for us and to central's retained capabilities (which say whether the outbox waits for those
acknowledgements; remembered in the outbox, so they apply from the first event of the next
connection); then publish the retained birth, re-publish retained device states and subscribe to
our own state topic. If a retained state with a lower ``birth_seq`` than ours shows up while we are
connected (the stale will of our previous connection, published after our birth on a session
takeover), the birth is published again so the retained state is never left wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from edge.commands import CommandHandler, Refused
from edge.config import EdgeConfig
from edge.metrics import EdgeMetrics
from edge.mqtt_link import (
    OPERATION_TIMEOUT_S,
    REASON_FAILURE,
    ConnectRefused,
    Incoming,
    Link,
    LinkError,
    PublishRejected,
    TlsFiles,
    Will,
)
from edge.outbox import Outbox
from resilience.backoff import Backoff, next_try
from wire import DeviceState, NodeState, RemoteWireError, Topics, decode, encode
from wire.messages import CentralCaps, StoredAck
from wire.topics import CENTRAL_CAPS_TOPIC

log = logging.getLogger("shilian.edge.session")

#: A misbehaving peer (bad command requests, junk on our state topic) is logged at most this
#: often per reason, so it cannot flood the node's log; the metric counts every occurrence.
PEER_FAULT_LOG_INTERVAL_S = 60.0


class Renewal(Protocol):
    """Certificate renewal as the session sees it (``edge.renew.CertRenewer`` is one): it
    chooses the TLS files of each connect, learns whether they were accepted, and takes the
    answers on our ``cert/res`` topic. Defined here so the session needs nothing of the renewer,
    which drives the session (``wait_link``, ``reconnect``)."""

    def tls_files(self) -> TlsFiles | None: ...
    def connected(self, files: object) -> None: ...
    def connect_failed(self, files: object, error: Exception) -> None: ...
    def on_answer(self, msg: Incoming) -> None: ...


class MeetingInbox(Protocol):
    """Takes our ``meet/req`` messages without blocking (``edge.meetings.MeetingDesk``)."""

    def on_request(self, msg: Incoming) -> None: ...


class NodeSession:
    def __init__(
        self,
        config: EdgeConfig,
        topics: Topics,
        outbox: Outbox,
        commands: CommandHandler,
        metrics: EdgeMetrics,
        *,
        boot_id: str,
        sw_version: str,
        clock: Callable[[], float],
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.topics = topics
        self.outbox = outbox
        self.commands = commands
        self.metrics = metrics
        self.boot_id = boot_id
        self.sw_version = sw_version
        self._clock = clock
        self.backoff = backoff or Backoff()
        self.birth_seq = 0
        self.link: Link | None = None
        self._link_up = asyncio.Event()
        self._closing = False
        self._connections = 0
        self._devices: dict[str, bytes] = {}
        self._removed: set[str] = set()
        self._warned_higher_birth = False
        self._peer_fault_logged: dict[str, float] = {}
        #: Certificate renewal (edge.renew), set by the agent when [broker.tls] is configured:
        #: chooses the TLS files of each connect and takes the answers on our cert/res topic.
        self.renewal: Renewal | None = None
        #: Meetings (edge.meetings), set by the agent when [meetings] is enabled.
        self.meetings: MeetingInbox | None = None

    # -- for the other tasks ---------------------------------------------------------------

    async def wait_link(self) -> Link:
        while True:
            link = self.link
            if link is not None and link.alive:
                return link
            if link is not None:  # died; the connection loop has not noticed yet
                self._link_gone(link)
            await self._link_up.wait()

    @property
    def connected(self) -> bool:
        return self.link is not None and self.link.alive

    async def set_device(self, device_id: str, payload: DeviceState) -> None:
        """Remember a device's retained state and publish it now if connected."""
        topic = self.topics.device(device_id)
        data = encode(payload)
        self._devices[device_id] = data
        self._removed.discard(device_id)
        await self._publish_quiet(topic, data, retain=True)

    async def remove_device(self, device_id: str) -> None:
        topic = self.topics.device(device_id)
        self._devices.pop(device_id, None)
        self._removed.add(device_id)
        if await self._publish_quiet(topic, b"", retain=True):
            self._removed.discard(device_id)

    # -- the connection loop ---------------------------------------------------------------

    async def run(self) -> None:
        """Keep a connection up until :meth:`shutdown` (or cancellation)."""
        down_since: float | None = None
        while not self._closing:
            self.birth_seq = await self.outbox.next_birth_seq()
            tls = self.renewal.tls_files() if self.renewal else self.config.broker.tls
            try:
                link = await Link.connect(
                    host=self.config.broker.host,
                    port=self.config.broker.port,
                    client_id=self.config.client_id,
                    keepalive=self.config.broker.keepalive_s,
                    will=Will(self.topics.state, self._state("offline", "will")),
                    username=self.config.broker.username,
                    password=self.config.broker.password,
                    tls=tls,
                )
            except LinkError as e:
                if self.renewal:
                    self.renewal.connect_failed(tls, e)
                self.metrics.connect_failures.inc()
                delay = self.backoff.to_cap() if isinstance(e, ConnectRefused) else None
                delay = self.backoff.next() if delay is None else delay
                # Every attempt is logged once, with when the next one is: a technician
                # watching the log during an outage sees the agent is alive and retrying.
                if down_since is None:
                    down_since = self._clock()
                    log.warning(
                        "node %s: 无法连接 MQTT 代理 / cannot connect to broker: %s; %s",
                        self.topics.node_id, e, next_try(self._clock(), delay),
                    )  # fmt: skip
                else:
                    log.info(
                        "node %s: 仍无法连接 MQTT 代理 / broker still unreachable (down %.0f s): "
                        "%s; %s",
                        self.topics.node_id, self._clock() - down_since, e,
                        next_try(self._clock(), delay),
                    )  # fmt: skip
                await asyncio.sleep(delay)
                continue
            if self.renewal:
                self.renewal.connected(tls)
            try:
                await self._serve(link, down_since)
                down_since = None
            except LinkError as e:
                if not self._closing:
                    down_since = self._clock()
                    delay = self.backoff.next()
                    log.warning(
                        "node %s: 与 MQTT 代理的连接中断 / connection lost: %s; %s",
                        self.topics.node_id, e, next_try(self._clock(), delay),
                    )  # fmt: skip
                    await asyncio.sleep(delay)
            except PublishRejected as e:
                # Our birth or device state refused: an ACL/identity problem retrying soon
                # cannot fix.
                self.metrics.rejected.labels(str(e.reason)).inc()
                log.error("node %s: broker refused our state: %s", self.topics.node_id, e)
                await link.close()
                down_since = down_since or self._clock()
                await asyncio.sleep(self.backoff.to_cap())
            finally:
                if link.alive and not self._closing:
                    # Cancelled (or a bug) while connected: end like a power cut, never leave a
                    # connection behind that keeps pinging the broker without an owner.
                    link.abort()
                self._link_gone(link)

    async def _serve(self, link: Link, down_since: float | None) -> None:
        # Requests first: with clean start nothing is queued for us while we are away, so a
        # command (or renewal answer, meeting request) sent the moment central sees the birth
        # would be dropped if we subscribed after it. Our state topic only after the birth, or
        # the previous connection's retained will would trigger a needless second birth.
        renewal = (self.topics.cert_res,) if self.renewal else ()
        meetings = (self.topics.meet_req,) if self.meetings else ()
        await link.subscribe(
            self.topics.cmd_req, self.topics.ack, CENTRAL_CAPS_TOPIC, *renewal, *meetings
        )
        # The birth is queued on the wire before anyone else may use the link: every event of
        # this connection follows it.
        birth = link.publish_nowait(self.topics.state, self._birth(), retain=True)
        self.link = link
        self._link_up.set()
        try:
            reason = await asyncio.wait_for(birth, OPERATION_TIMEOUT_S)
        except TimeoutError:
            raise LinkError("no PUBACK for the birth in time") from None
        if reason >= REASON_FAILURE:
            raise PublishRejected(reason)
        for device_id, data in list(self._devices.items()):
            await link.publish(self.topics.device(device_id), data, retain=True)
        for device_id in list(self._removed):
            await link.publish(self.topics.device(device_id), b"", retain=True)
            self._removed.discard(device_id)
        await link.subscribe(self.topics.state)
        self.backoff.reset()
        self._connections += 1
        if self._connections > 1:
            self.metrics.reconnects.inc()
        self.metrics.connected.set(1)
        if down_since is not None:
            log.info(
                "node %s: connected again after %.1f s (birth_seq %d)",
                self.topics.node_id,
                self._clock() - down_since,
                self.birth_seq,
            )
        else:
            log.info("node %s: connected (birth_seq %d)", self.topics.node_id, self.birth_seq)
        async for msg in link.messages():
            await self._dispatch(link, msg)

    def _link_gone(self, link: Link) -> None:
        if self.link is link:
            self.link = None
            self._link_up.clear()
        self.metrics.connected.set(0)

    async def _dispatch(self, link: Link, msg: Incoming) -> None:
        if msg.topic == self.topics.ack:
            await self._on_ack(msg)
        elif msg.topic == self.topics.state:
            await self._on_state(link, msg)
        elif msg.topic == CENTRAL_CAPS_TOPIC:
            await self._on_caps(msg)
        elif msg.topic == self.topics.cert_res and self.renewal:
            self.renewal.on_answer(msg)
        elif msg.topic == self.topics.meet_req and self.meetings:
            self.meetings.on_request(msg)
        elif msg.topic == self.topics.cmd_req:
            out = self.commands.handle(msg, self._clock())
            if isinstance(out, Refused):
                self.metrics.commands.labels("?", out.reason).inc()
                self._log_peer_fault(out.reason, f"command not answered: {out.detail}")
                return
            try:
                await link.publish(out.topic, out.payload, correlation=out.correlation)
            except PublishRejected as e:
                self.metrics.rejected.labels(str(e.reason)).inc()
            self.metrics.commands.labels(out.cmd, "ok" if out.ok else "error").inc()

    async def _on_ack(self, msg: Incoming) -> None:
        """Central stored these events: the outbox deletes them."""
        try:
            ack = decode(StoredAck, msg.payload, node_id=self.topics.node_id)
        except RemoteWireError as e:
            self.metrics.bad_input.labels(e.fault.value).inc()
            self._log_peer_fault(e.fault.value, f"bad stored-acknowledgement: {e}")
            return
        done = await self.outbox.confirm(ack.boots)
        if done.resent:  # central stored later events of their lane: these were lost
            self.metrics.resent.inc(done.resent)
            log.info(
                "node %s: %d events lost on the way to central: sending them again",
                self.topics.node_id,
                done.resent,
            )
        self.metrics.outbox_depth.set(self.outbox.depth)

    async def _on_caps(self, msg: Incoming) -> None:
        """Central's retained capabilities; an empty payload (cleared) means none."""
        on = False
        if msg.payload:
            try:
                on = decode(CentralCaps, msg.payload).stored_acks
            except RemoteWireError as e:
                self.metrics.bad_input.labels(e.fault.value).inc()
                self._log_peer_fault(e.fault.value, f"bad central capabilities: {e}")
                return
        if on != self.outbox.central_acks:
            log.info(
                "node %s: central %s stored events: events are deleted on %s",
                self.topics.node_id,
                "acknowledges" if on else "does not acknowledge",
                "central's acknowledgement" if on else "the broker's PUBACK",
            )
        await self.outbox.set_central_acks(on)

    async def _on_state(self, link: Link, msg: Incoming) -> None:
        if not msg.payload:
            return
        try:
            st = decode(NodeState, msg.payload, node_id=self.topics.node_id)
        except RemoteWireError as e:
            self.metrics.bad_input.labels(e.fault.value).inc()
            self._log_peer_fault(e.fault.value, f"bad retained state: {e}")
            return
        if st.birth_seq < self.birth_seq:
            # A stale state (e.g. our previous connection's will) overwrote our birth.
            log.info(
                "node %s: stale retained state (birth_seq %d < %d): publishing birth again",
                self.topics.node_id,
                st.birth_seq,
                self.birth_seq,
            )
            await link.publish(self.topics.state, self._birth(), retain=True)
        elif st.birth_seq > self.birth_seq and not self._warned_higher_birth:
            self._warned_higher_birth = True
            log.warning(
                "node %s: retained state has birth_seq %d > ours %d: another agent with this "
                "node id, or a restored outbox file?",
                self.topics.node_id,
                st.birth_seq,
                self.birth_seq,
            )

    def _log_peer_fault(self, reason: str, message: str) -> None:
        """A peer's fault is counted every time but logged at most once a minute per reason."""
        now = self._clock()
        if now - self._peer_fault_logged.get(reason, -PEER_FAULT_LOG_INTERVAL_S) >= (
            PEER_FAULT_LOG_INTERVAL_S
        ):
            self._peer_fault_logged[reason] = now
            log.warning("node %s: %s", self.topics.node_id, message[:500])

    async def reconnect(self) -> None:
        """End the connection cleanly (no will) so the loop connects again at once, e.g. with a
        renewed certificate. Unsent events stay in the outbox and follow the new birth."""
        link = self.link
        if link is not None and link.alive:
            await link.close()

    # -- ending ----------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Clean end: retained ``offline/stopped``, then DISCONNECT (the broker drops the will)."""
        self._closing = True
        link = self.link
        if link is None or not link.alive:
            return
        with contextlib.suppress(LinkError, PublishRejected):
            await link.publish(self.topics.state, self._state("offline", "stopped"), retain=True)
        await link.close()

    def abort(self) -> None:
        """Power-cut end: drop TCP without DISCONNECT so the broker publishes our will."""
        self._closing = True
        if self.link is not None:
            self.link.abort()

    # -- payloads --------------------------------------------------------------------------

    def _state(self, state: Any, reason: Any) -> bytes:
        return encode(
            NodeState(
                node=self.topics.node_id,
                state=state,
                boot_id=self.boot_id,
                birth_seq=self.birth_seq,
                ts=self._clock(),
                reason=reason,
                health_interval_s=self.config.health_interval_s,
                sw_version=self.sw_version,
            )
        )

    def _birth(self) -> bytes:
        return self._state("online", "connect")

    async def _publish_quiet(self, topic: str, data: bytes, *, retain: bool) -> bool:
        """Publish if connected; False if not (re-published on the next connect)."""
        link = self.link
        if link is None or not link.alive:
            return False
        try:
            await link.publish(topic, data, retain=retain)
        except LinkError:
            return False
        except PublishRejected as e:
            self.metrics.rejected.labels(str(e.reason)).inc()
        return True
