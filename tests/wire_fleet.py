"""Lightweight nodes for fleet-sized tests and benchmarks: each one a real MQTT 5 client on its own
TCP connection to a real broker, speaking the wire contract as docs/protocol.md states it (birth
with a matching will, health every interval, a new birth on every connection), and reconnecting
with the edge's own backoff (:class:`resilience.backoff.Backoff`). What it leaves out is what the
coverage figure does not depend on: the outbox, events, devices, commands.

A thousand real edge agents (SQLite outbox, paho client, supervisor each) cost a few hundred MB and
most of a core here; these cost a socket and a coroutine each. The MQTT 5 packets are encoded
here, the few a node needs: CONNECT (with will), CONNACK, PUBLISH at QoS 1, PUBACK, DISCONNECT.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import wire
from resilience.backoff import Backoff

#: MQTT 5 packet types (first byte, high nibble) and the CONNECT flags used here.
_CONNECT, _CONNACK, _PUBLISH, _PUBACK, _DISCONNECT = 1, 2, 3, 4, 14
_CLEAN_START, _WILL, _WILL_QOS1, _WILL_RETAIN = 0x02, 0x04, 0x08, 0x20
#: Keepalive the nodes announce; health every few seconds keeps the connection busy anyway.
KEEPALIVE_S = 30


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect_packet(client_id: str, will_topic: str, will_payload: bytes) -> bytes:
    flags = _CLEAN_START | _WILL | _WILL_QOS1 | _WILL_RETAIN
    head = _str("MQTT") + bytes([5, flags]) + struct.pack("!H", KEEPALIVE_S) + _varint(0)
    payload = _str(client_id) + _varint(0) + _str(will_topic) + _str_bytes(will_payload)
    return _packet(_CONNECT << 4, head + payload)


def _str_bytes(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def publish_packet(topic: str, payload: bytes, mid: int, *, retain: bool) -> bytes:
    first = (_PUBLISH << 4) | 0x02 | (0x01 if retain else 0)  # QoS 1
    return _packet(first, _str(topic) + struct.pack("!H", mid) + _varint(0) + payload)


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        b = (await reader.readexactly(1))[0]
        length |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    return first >> 4, await reader.readexactly(length)


@dataclass
class WireNode:
    """One node: ``run()`` keeps it connected until ``stop`` (a clean stop) or ``kill()``
    (a power cut: never connects again)."""

    node_id: str
    host: str
    port: int
    interval_s: float
    backoff: Backoff
    connect_timeout_s: float
    clock: Callable[[], float] = time.time
    boot_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    birth_seq: int = 0
    connected: bool = False
    connects: int = 0
    dead: bool = False
    _writer: asyncio.StreamWriter | None = None
    _mid: int = 0

    def __post_init__(self) -> None:
        self.topics = wire.Topics(self.node_id)

    def _state(self, st: str, reason: str) -> bytes:
        return wire.encode(
            wire.NodeState(
                node=self.node_id,
                state=st,  # type: ignore[arg-type]
                boot_id=self.boot_id,
                birth_seq=self.birth_seq,
                ts=self.clock(),
                reason=reason,  # type: ignore[arg-type]
                health_interval_s=self.interval_s,
            )
        )

    def _health(self, started: float) -> bytes:
        return wire.encode(
            wire.Health(
                node=self.node_id,
                boot_id=self.boot_id,
                ts=self.clock(),
                interval_s=self.interval_s,
                uptime_s=max(0.0, time.monotonic() - started),
                sw_version="0.1.0",
                cpu_pct=5,
                mem_used_pct=30,
                disk_used_pct=20,
                outbox_depth=0,
            )
        )

    def _next_mid(self) -> int:
        self._mid = self._mid % 65535 + 1
        return self._mid

    async def run(self, stop: asyncio.Event) -> None:
        started = time.monotonic()
        while not stop.is_set() and not self.dead:
            self.birth_seq += 1  # per attempt, as the edge persists it
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                    will = self._state("offline", "will")
                    writer.write(connect_packet(self.node_id, self.topics.state, will))
                    kind, body = await _read_packet(reader)
                    if kind != _CONNACK or body[1] >= 0x80:
                        writer.close()
                        raise ConnectionError(f"CONNACK refused: {body[1:2].hex()}")
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                await self._sleep(stop, self.backoff.next())
                continue
            self.backoff.reset()
            self._writer = writer
            self.connected = True
            self.connects += 1
            try:
                writer.write(
                    publish_packet(
                        self.topics.state,
                        self._state("online", "connect"),
                        self._next_mid(),
                        retain=True,
                    )
                )
                await self._serve(reader, writer, stop, started)
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                self.connected = False
                self._writer = None
                writer.close()
            if not stop.is_set() and not self.dead:
                await self._sleep(stop, self.backoff.next())

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stop: asyncio.Event,
        started: float,
    ) -> None:
        # PUBACKs are read and dropped; EOF (the broker went away) ends the connection.
        lost = asyncio.ensure_future(_drain(reader))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            # First health after a random part of the interval: a fleet's reports spread out.
            delay = random.random() * self.interval_s
            while True:
                done, _ = await asyncio.wait({lost, stopping}, timeout=delay)
                if lost in done or self.dead:
                    return
                if stopping in done:
                    writer.write(
                        publish_packet(
                            self.topics.state,
                            self._state("offline", "stopped"),
                            self._next_mid(),
                            retain=True,
                        )
                    )
                    writer.write(_packet(_DISCONNECT << 4, b""))
                    with contextlib.suppress(OSError):
                        await writer.drain()
                    return
                writer.write(
                    publish_packet(
                        self.topics.health, self._health(started), self._next_mid(), retain=False
                    )
                )
                await writer.drain()
                delay = self.interval_s
        finally:
            lost.cancel()
            stopping.cancel()

    def kill(self) -> None:
        """A power cut: the connection drops without DISCONNECT (the broker sends the will, if it
        is up) and the node never comes back."""
        self.dead = True
        if self._writer is not None:
            self._writer.transport.abort()

    async def _sleep(self, stop: asyncio.Event, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()


async def _drain(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, OSError):
        while True:
            await _read_packet(reader)


def make_fleet(
    node_ids: list[str],
    port: int,
    *,
    interval_s: float,
    backoff_base_s: float,
    backoff_cap_s: float,
    connect_timeout_s: float,
    seed: int = 1,
) -> list[WireNode]:
    """Nodes with the edge's backoff at the given (possibly shortened) base and cap; jitter from a
    seeded generator per node."""
    rng = random.Random(seed)
    return [
        WireNode(
            node_id,
            "127.0.0.1",
            port,
            interval_s,
            Backoff(random.Random(rng.random()).random, base=backoff_base_s, cap=backoff_cap_s),
            connect_timeout_s,
        )
        for node_id in node_ids
    ]
