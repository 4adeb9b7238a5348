"""Central's MQTT link: gmqtt 0.8 (MQTT 5, asyncio) wrapped completely; no gmqtt type leaves
this module.

- Persistent session (clean_start=False + session expiry): QoS 1 messages queue in the broker
  while central is away and are delivered when it comes back.
- PUBACK after commit, in bulk. gmqtt's own way (``optimistic_acknowledgement=False`` and an
  async ``on_message`` whose return sends the PUBACK) costs a task, a future wake-up and a socket
  write per message: measured, it capped central's whole pipeline near 9-10k msg/s
  (docs/central.md). So the link takes QoS 1 deliveries straight from gmqtt's packet handler
  (gmqtt 0.8.0 internals, pinned and confined to :mod:`central.gmqtt_adapter`), appends them to
  the current batch with their packet id, and after the service has committed the batch writes
  all its PUBACKs in one socket write, on the connection that delivered them (or not at all if
  that connection is gone: the broker redelivers, ingest deduplicates).
- Bounded memory: the link stops reading the socket while :data:`MAX_HELD` received messages
  wait for their commit (mosquitto 2.0.11 does not keep to central's Receive Maximum under a
  backlog), and reads on when a commit makes room; TCP holds the broker back meanwhile.
- Central runs two links (central/service.py): the main one, and the alarm lane, a session of its
  own (client id ``<client_id>-alarms``) subscribed only to alarm-priority events, so that the
  broker never queues an alarm behind history on the main session. Both feed the same ingest.
- Reconnection is ours, not gmqtt's (its fixed-delay loop is disabled): exponential backoff with
  full jitter capped at 60 s, auth refusals straight to the cap; the first failure is a WARNING
  naming when the next attempt is, retries DEBUG, recovery INFO with the downtime. Each
  connection gets a fresh gmqtt client, so an acknowledgement can never reach a connection other
  than the one that delivered the message.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import gmqtt
from gmqtt import MQTTConnectError

from central.config import BrokerConfig
from central.gmqtt_adapter import Delivering, IngestClient, refusal_code, send_pubacks
from pki.tls import client_context
from resilience.backoff import Backoff, next_try
from wire.topics import CENTRAL_ALARM_SUBSCRIPTIONS, CENTRAL_SUBSCRIPTIONS, shared_subscriptions

log = logging.getLogger("shilian.central.link")

#: Reconnect backoff: first retry within 1 s, doubling, capped at 60 s.
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
#: A broker that accepts TCP but never answers CONNECT is as good as down.
CONNECT_TIMEOUT_S = 10.0
#: QoS 1 messages the broker may have in flight to central (MQTT 5 Receive Maximum). It bounds
#: a batch and the memory held before commit, and keeps the pipeline full while a batch commits.
RECEIVE_MAXIMUM = 10_000
#: Messages received and not yet committed at which the link stops reading the socket. The
#: broker should never send more than RECEIVE_MAXIMUM unacknowledged, but mosquitto 2.0.11 does
#: once PUBACKs come back in bulk (measured: ~8,800 in flight against a Receive Maximum of 100,
#: ~10,700 against 2,000): under a backlog, what central holds would grow without bound.
MAX_HELD = RECEIVE_MAXIMUM
#: What gmqtt reads off the socket at once (its read loop's read size, gmqtt 0.8.0): the
#: messages already read when the link stops reading are delivered too, so the link may hold
#: MAX_HELD plus what fits in this many bytes.
READ_SLACK_BYTES = 64 * 1024
#: Messages per batch (one transaction). Smaller than RECEIVE_MAXIMUM so that the next batch
#: is being received and parsed while one commits (the commit runs in a worker thread).
MAX_BATCH = 2_000
#: Payload bytes per batch: a batch is closed at this size whatever its count. A batch is
#: applied under the write lock that the alarm lane's batches take too, so its size is how long
#: an alarm may wait: 2,000 snapshots (~59 KiB each) would be ~115 MiB to parse, decode and
#: store first. 1 MiB is ~17 snapshots, or ~4,000 ordinary events (~230 B: MAX_BATCH binds).
MAX_BATCH_BYTES = 1024 * 1024
#: At stop, how long to wait for the received messages to be committed and acknowledged.
DRAIN_TIMEOUT_S = 10.0
#: CONNACK codes that retrying soon cannot fix (bad credentials, not authorised, banned).
_AUTH_REFUSALS = frozenset({4, 5, 134, 135, 138, 140})
#: Appended to central's client id for the alarm lane's session (its own persistent session).
ALARM_CLIENT_SUFFIX = "-alarms"
#: A retiring member session (docs/scale.md) is ended once nothing has arrived on it for this
#: long and all it received is committed: the broker sends a session's queue as fast as the
#: receive maximum lets it, so a second of silence after the unsubscribe means it is empty.
RETIRE_QUIET_S = 1.0


@dataclass(frozen=True, slots=True)
class Lane:
    """Which of central's sessions a link is: its name in logs, its client id suffix, what it
    subscribes to, and whether it connects with the alarm session's certificate."""

    name: str
    client_suffix: str
    subscriptions: tuple[str, ...]
    alarm_identity: bool = False


#: Everything nodes send but alarm-priority events.
MAIN_LANE = Lane("main", "", CENTRAL_SUBSCRIPTIONS)
#: Alarm-priority events only: a queue no history shares.
ALARM_LANE = Lane("alarms", ALARM_CLIENT_SUFFIX, CENTRAL_ALARM_SUBSCRIPTIONS, alarm_identity=True)
#: Everything on one session: only when the alarm session has no certificate of its own
#: (the broker would make both sessions one client id); alarms may then queue behind history.
SHARED_LANE = Lane("main", "", CENTRAL_SUBSCRIPTIONS + CENTRAL_ALARM_SUBSCRIPTIONS)


def member_lane(group: str, member: int) -> Lane:
    """Member ``member`` of the ingest processes' shared group ``group``: a persistent session
    of its own (client id ``<client_id>-m<member>``) subscribed to everything central takes,
    alarms included, as shared subscriptions."""
    return Lane(f"ingest-m{member}", f"-m{member}", shared_subscriptions(group))


class LinkDown(ConnectionError):
    """Central is not connected to the broker; nothing was sent."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message from the broker."""

    topic: str
    payload: bytes
    retained: bool
    correlation: bytes | None


@dataclass(frozen=True, slots=True)
class Taken:
    """Messages taken off a link by :meth:`MqttLink.take_received`, to be committed by the
    taker and then handed back to :meth:`MqttLink.acknowledge`."""

    messages: list[Inbound]
    _acks: list[tuple[Delivering | None, int]]


class MqttLink:
    """Keeps central connected and subscribed; hands batches of messages to ``handle_batch``.

    ``handle_batch`` must have committed the batch's effects when it returns; the messages are
    acknowledged after that. ``on_up``/``on_down`` are called when the connection comes up (after
    CONNACK, before subscribing) and goes down. ``lane`` says which session this is.
    """

    def __init__(
        self,
        cfg: BrokerConfig,
        handle_batch: Callable[[list[Inbound]], Awaitable[None]],
        *,
        on_up: Callable[[], None] = lambda: None,
        on_down: Callable[[], None] = lambda: None,
        rng: Callable[[], float] = random.random,
        lane: Lane = MAIN_LANE,
        retire: bool = False,
        max_held: int = MAX_HELD,
    ) -> None:
        """``retire``: take the session over only to end it (docs/scale.md): unsubscribe, take
        what the broker still has queued or in flight for it, and once that is committed and
        acknowledged, disconnect ending the session; :meth:`run` then returns. ``max_held``: the
        Receive Maximum announced, and the number of uncommitted messages at which the link
        stops reading the socket until a commit makes room (:data:`MAX_HELD`)."""
        self.cfg = cfg
        self.max_held = max_held
        #: Messages received and not yet committed (and acknowledged).
        self.held = 0
        #: Set once the broker has confirmed the subscriptions of the current connection.
        self.subscribed = asyncio.Event()
        self.retire = retire
        self._last_receive = 0.0
        self.lane = lane
        self.client_id = cfg.client_id + lane.client_suffix
        self._handle_batch = handle_batch
        self._on_up, self._on_down = on_up, on_down
        self._backoff = Backoff(rng, base=BACKOFF_BASE_S, cap=BACKOFF_CAP_S)
        self._client: IngestClient | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        # Batches being filled, oldest first: the messages, and (connection, packet id) to ack.
        self._chunks: deque[tuple[list[Inbound], list[tuple[Delivering | None, int]]]] = deque()
        self._chunk_bytes = 0  # payload bytes in the last (filling) batch
        self._closed = False
        self._idle = asyncio.Event()  # set when every received message is committed
        self._idle.set()
        self._room = asyncio.Event()  # clear while ``max_held`` messages wait for their commit
        self._room.set()
        self.connected = False
        self.connects = 0  # successful connections (reconnects = connects - 1)

    # -- the supervisor-facing API -------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking messages: the batch in progress is committed, then central disconnects."""
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Connect, subscribe, ingest; reconnect forever until :meth:`stop`."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._batcher())
            try:
                await self._connection_loop()
            finally:
                self._closed = True
                self._wake.set()

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        expiry_s: int | None = None,
        retain: bool = False,
    ) -> None:
        """Publish at QoS 1 (commands, acknowledgements). :class:`LinkDown` if not connected."""
        client = self._client
        if client is None or not self.connected:
            raise LinkDown("not connected to the MQTT broker / 未连接 MQTT 代理")
        props: dict[str, Any] = {}
        if response_topic is not None:
            props["response_topic"] = response_topic
        if correlation_data is not None:
            props["correlation_data"] = correlation_data
        if expiry_s is not None:
            props["message_expiry_interval"] = max(1, expiry_s)
        client.publish(topic, payload, qos=1, retain=retain, **props)

    def take_received(self) -> Taken | None:
        """Everything received and not yet handed to ``handle_batch``, taken off the link (None
        if nothing is waiting): central writes the alarm lane's messages into a main-lane
        transaction under way rather than after it. The taker commits them, then calls
        :meth:`acknowledge`; until then they count as held."""
        if not self._chunks:
            return None
        messages: list[Inbound] = []
        acks: list[tuple[Delivering | None, int]] = []
        while self._chunks:
            batch, chunk_acks = self._chunks.popleft()
            messages += batch
            acks += chunk_acks
        self._chunk_bytes = 0
        return Taken(messages, acks)

    def acknowledge(self, taken: Taken) -> None:
        """``taken`` is committed: acknowledge it on the connection that delivered it."""
        self._acknowledge(taken.messages, taken._acks)

    def _acknowledge(self, batch: list[Inbound], acks: list[tuple[Delivering | None, int]]) -> None:
        by_conn: dict[int, tuple[Delivering | None, list[int]]] = {}
        for conn, mid in acks:
            by_conn.setdefault(id(conn), (conn, []))[1].append(mid)
        for conn, mids in by_conn.values():
            send_pubacks(conn, mids)
        self.held -= len(batch)
        if self.held < self.max_held:
            self._room.set()
        if not self.held:
            self._idle.set()

    # -- connection ------------------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        down_since: float | None = None
        while not self._stop.is_set():
            lost = asyncio.Event()
            client = IngestClient(
                self.client_id,
                clean_session=False,
                lost=lost,
                sink=self._receive,
                room=self._room,
                session_expiry_interval=self.cfg.session_expiry_s,
                receive_maximum=self.max_held,
            )
            if self.cfg.username is not None:
                client.set_auth_credentials(self.cfg.username, self.cfg.password)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await client.connect(
                        self.cfg.host,
                        self.cfg.port,
                        keepalive=self.cfg.keepalive_s,
                        ssl=self._tls_context() or False,
                    )
            except (OSError, TimeoutError, MQTTConnectError) as e:
                await _close_quietly(client)
                auth = refusal_code(e) in _AUTH_REFUSALS
                delay = self._backoff.to_cap() if auth else self._backoff.next()
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning(
                        "无法连接 MQTT 代理 / cannot connect to broker %s:%s (%s session): %s; %s",
                        self.cfg.host,
                        self.cfg.port,
                        self.lane.name,
                        e,
                        next_try(time.time(), delay),
                    )
                else:
                    log.debug("broker still unreachable (%s); next try in %.1f s", e, delay)
                await self._sleep_or_stop(delay)
                continue
            self._client = client
            self.connected = True
            self.connects += 1
            self._backoff.reset()
            if down_since is not None:
                log.info(
                    "已重新连接 MQTT 代理 / reconnected to broker (%s session) after %.1f s",
                    self.lane.name,
                    time.monotonic() - down_since,
                )
                down_since = None
            else:
                log.info(
                    "已连接 MQTT 代理 / connected to broker %s:%s (%s session)",
                    self.cfg.host,
                    self.cfg.port,
                    self.lane.name,
                )
            self._on_up()
            if self.retire:
                client.unsubscribe(list(self.lane.subscriptions))
                if await self._retired(client, lost):
                    self.connected = False
                    self._on_down()
                    return
            else:
                client.on_subscribe = self._subscribed
                client.subscribe([gmqtt.Subscription(t, qos=1) for t in self.lane.subscriptions])
            stop_wait = asyncio.ensure_future(self._stop.wait())
            lost_wait = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({stop_wait, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
                lost_wait.cancel()
            self.connected = False
            self.subscribed.clear()
            self._on_down()
            if self._stop.is_set():
                # Messages received from now on are ignored in _receive (unacknowledged, so the
                # broker keeps them); commit and acknowledge what was received, disconnect.
                self._wake.set()
                try:
                    async with asyncio.timeout(DRAIN_TIMEOUT_S):
                        await self._idle.wait()
                except TimeoutError:
                    log.warning("stopping with messages not yet committed; the broker keeps them")
                await _close_quietly(client)
            else:
                down_since = time.monotonic()
                log.warning(
                    "与 MQTT 代理的连接中断 / lost the broker connection (%s session); "
                    "reconnecting",
                    self.lane.name,
                )
                await _close_quietly(client)
                await self._sleep_or_stop(self._backoff.next())

    def _subscribed(self, client: Any, mid: int, qos: Any, props: Any) -> None:
        self.subscribed.set()
        log.info("已订阅 / subscribed (%s session)", self.lane.name)

    async def _retired(self, client: IngestClient, lost: asyncio.Event) -> bool:
        """Wait until the session is drained, then end it (session expiry 0 on DISCONNECT).
        False if the connection was lost first (the session, and what it holds, remain)."""
        self._last_receive = time.monotonic()
        while not lost.is_set():
            await asyncio.sleep(RETIRE_QUIET_S / 4)
            quiet = time.monotonic() - self._last_receive >= RETIRE_QUIET_S
            if quiet and self._idle.is_set() and not self._chunks:
                await client.disconnect(session_expiry_interval=0)
                log.info("已结束成员会话 / member session %s drained and ended", self.client_id)
                return True
        return False

    def _tls_context(self) -> ssl.SSLContext | None:
        """Verify the broker against our CA and present central's certificate (read at every
        connect, so renewed files are picked up). Unreadable files are an OSError: retried."""
        tls = self.cfg.tls
        if tls is None:
            return None
        cert, key = tls.cert_file, tls.key_file
        if self.lane.alarm_identity and tls.alarm_cert_file and tls.alarm_key_file:
            cert, key = tls.alarm_cert_file, tls.alarm_key_file
        try:
            return client_context(tls.ca_file, cert, key)
        except ssl.SSLError as e:
            raise OSError(f"TLS files unusable: {e}") from None

    async def _sleep_or_stop(self, delay: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._stop.wait()
        except TimeoutError:
            pass

    # -- batching ---------------------------------------------------------------------------------

    def _receive(
        self,
        topic: str,
        payload: bytes,
        props: dict[str, Any],
        mid: int | None,
        conn: Delivering | None,
    ) -> None:
        if self._stop.is_set():
            return  # stopping: not acknowledged, so the broker delivers it to the next session
        self._last_receive = time.monotonic()
        chunks = self._chunks
        if not chunks or len(chunks[-1][0]) >= MAX_BATCH or self._chunk_bytes >= MAX_BATCH_BYTES:
            chunks.append(([], []))
            self._chunk_bytes = 0
        batch, acks = chunks[-1]
        self._chunk_bytes += len(payload)
        corr = props.get("correlation_data")
        batch.append(Inbound(topic, payload, bool(props.get("retain")), corr[0] if corr else None))
        if mid is not None:
            acks.append((conn, mid))
        self.held += 1
        if self.held >= self.max_held:
            self._room.clear()  # gmqtt stops reading the socket (central/gmqtt_adapter.py)
        self._idle.clear()
        self._wake.set()

    async def _batcher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._chunks:
                batch, acks = self._chunks.popleft()
                await self._handle_batch(batch)
                self._acknowledge(batch, acks)
            if self._closed:
                return


async def _close_quietly(client: IngestClient) -> None:
    try:
        await client.disconnect()
    except Exception as e:  # the socket may already be gone; nothing to save
        log.debug("disconnect: %s", e)
