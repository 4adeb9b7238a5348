"""One simulated node: a real MQTT 5 client on its own TCP (optionally TLS) connection to a real
broker, speaking the wire contract as docs/protocol.md states it — birth with a matching will, a
new birth (``birth_seq`` + 1) on every connection, health with ``boot_id`` every interval, info
events numbered ``seq`` from 1 per boot — and reconnecting with the edge's own backoff
(:class:`resilience.backoff.Backoff`). What it leaves out is what coverage does not depend on: the
durable outbox, devices, commands.

A scenario drives it: :meth:`SimNode.down` (a power cut: the broker publishes the will; or a clean
stop: ``offline``/``stopped`` then DISCONNECT) and :meth:`SimNode.up`; :meth:`SimNode.kill` is a
power cut it never comes back from."""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import wire
from resilience.backoff import Backoff
from shilian.simulate.packets import (
    PacketError,
    connack_refused,
    connect_packet,
    disconnect_packet,
    publish_packet,
    read_packet,
)
from wire.event_kinds import EVENT_KINDS, PATROL_CHECKIN

#: The kind of the events simulated nodes send: an info-priority kind of the catalogue, so
#: central stores it as it would a real one.
EVENT_KIND = PATROL_CHECKIN
SW_VERSION = "sim-0.1.0"

_LINK_FAULTS = (OSError, TimeoutError, asyncio.IncompleteReadError, ConnectionError)


@dataclass
class SimNode:
    node_id: str
    host: str
    port: int
    interval_s: float
    backoff: Backoff
    connect_timeout_s: float
    #: Seconds added to this node's wall clock in every ``ts`` it sends (a wrong RTC).
    skew_s: float = 0.0
    #: Mean seconds between info events (0: none).
    event_interval_s: float = 0.0
    ssl_context: ssl.SSLContext | None = None
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.time
    boot_id: str = ""
    birth_seq: int = 0
    seq: int = 0
    connected: bool = False
    connects: int = 0
    dead: bool = False
    _writer: asyncio.StreamWriter | None = None
    _mid: int = 0
    _want_up: asyncio.Event = field(default_factory=asyncio.Event)
    _leave: asyncio.Event = field(default_factory=asyncio.Event)
    _how: Literal["cut", "stop"] = "cut"

    def __post_init__(self) -> None:
        self.topics = wire.Topics(self.node_id)
        self.boot_id = self.boot_id or f"{self.rng.getrandbits(128):032x}"
        self._want_up.set()

    def _ts(self) -> float:
        return max(0.0, self.clock() + self.skew_s)

    def _state(self, st: str, reason: str) -> bytes:
        return wire.encode(
            wire.NodeState(
                node=self.node_id,
                state=st,  # type: ignore[arg-type]
                boot_id=self.boot_id,
                birth_seq=self.birth_seq,
                ts=self._ts(),
                reason=reason,  # type: ignore[arg-type]
                health_interval_s=self.interval_s,
                sw_version=SW_VERSION,
            )
        )

    def _health(self, started: float) -> bytes:
        return wire.encode(
            wire.Health(
                node=self.node_id,
                boot_id=self.boot_id,
                ts=self._ts(),
                interval_s=self.interval_s,
                uptime_s=max(0.0, time.monotonic() - started),
                sw_version=SW_VERSION,
                cpu_pct=5,
                mem_used_pct=30,
                disk_used_pct=20,
                outbox_depth=0,
            )
        )

    def _event(self) -> bytes:
        self.seq += 1
        return wire.encode(
            wire.Event(
                node=self.node_id,
                boot_id=self.boot_id,
                seq=self.seq,
                ts=self._ts(),
                priority=EVENT_KINDS[EVENT_KIND],
                kind=EVENT_KIND,
                data={"simulated": True},
            )
        )

    def _next_mid(self) -> int:
        self._mid = self._mid % 65535 + 1
        return self._mid

    def down(self, how: Literal["cut", "stop"] = "cut") -> None:
        """Leave the broker and stay away until :meth:`up`: ``cut`` drops the connection without
        DISCONNECT (the broker publishes the will), ``stop`` is a clean stop."""
        self._want_up.clear()
        self._how = how
        if how == "cut" and self._writer is not None:
            self._writer.transport.abort()
        self._leave.set()

    def up(self) -> None:
        self._leave.clear()
        self._want_up.set()

    def kill(self) -> None:
        """A power cut the node never comes back from."""
        self.dead = True
        self.down("cut")

    async def run(self, stop: asyncio.Event) -> None:
        """Keep connected while wanted, until ``stop`` (a clean stop of every connection)."""
        started = time.monotonic()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set() and not self.dead:
                if not self._want_up.is_set():
                    wanted = asyncio.ensure_future(self._want_up.wait())
                    await asyncio.wait({wanted, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    wanted.cancel()
                    continue
                await self._connection(stop, stopping, started)
        finally:
            stopping.cancel()

    async def _connection(
        self, stop: asyncio.Event, stopping: asyncio.Future[Any], started: float
    ) -> None:
        self.birth_seq += 1  # per attempt, as the edge persists it
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.ssl_context
                )
                try:
                    will = self._state("offline", "will")
                    writer.write(connect_packet(self.node_id, self.topics.state, will))
                    refused = connack_refused(*await read_packet(reader))
                except BaseException:
                    writer.close()
                    raise
                if refused:
                    writer.close()
                    raise PacketError(f"CONNACK refused: {refused}")
        except _LINK_FAULTS:
            await self._sleep(stopping, self.backoff.next())
            return
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
        except _LINK_FAULTS:
            pass
        finally:
            self.connected = False
            self._writer = None
            writer.close()
        if not stop.is_set() and self._want_up.is_set():
            await self._sleep(stopping, self.backoff.next())

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stop: asyncio.Event,
        started: float,
    ) -> None:
        # PUBACKs are read and dropped; EOF (the broker went away) ends the connection.
        lost = asyncio.ensure_future(_drain(reader))
        leave = asyncio.ensure_future(_either(stop, self._leave))
        try:
            # First report after a random part of the interval: a fleet's reports spread out.
            next_health = time.monotonic() + self.rng.random() * self.interval_s
            next_event = self._next_event_at()
            while True:
                delay = max(0.0, min(next_health, next_event) - time.monotonic())
                # FIRST_COMPLETED: asyncio.wait's default waits for both, and a lost connection
                # would go unnoticed until the next report failed to send.
                done, _ = await asyncio.wait(
                    {lost, leave}, timeout=delay, return_when=asyncio.FIRST_COMPLETED
                )
                if lost in done:
                    return
                if leave in done:
                    if stop.is_set() or self._how == "stop":
                        await self._say_goodbye(writer)
                    return
                now = time.monotonic()
                if now >= next_health:
                    topic, body = self.topics.health, self._health(started)
                    next_health = now + self.interval_s
                else:
                    topic, body = self.topics.event, self._event()
                    next_event = self._next_event_at()
                writer.write(publish_packet(topic, body, self._next_mid(), retain=False))
                await writer.drain()
        finally:
            lost.cancel()
            leave.cancel()

    def _next_event_at(self) -> float:
        if self.event_interval_s <= 0:
            return float("inf")
        return time.monotonic() + self.rng.expovariate(1.0 / self.event_interval_s)

    async def _say_goodbye(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            publish_packet(
                self.topics.state, self._state("offline", "stopped"), self._next_mid(), retain=True
            )
        )
        writer.write(disconnect_packet())
        with contextlib.suppress(*_LINK_FAULTS):
            async with asyncio.timeout(self.connect_timeout_s):
                await writer.drain()

    async def _sleep(self, stopping: asyncio.Future[Any], delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await asyncio.shield(stopping)


async def _either(a: asyncio.Event, b: asyncio.Event) -> None:
    wa, wb = asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())
    try:
        await asyncio.wait({wa, wb}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        wa.cancel()
        wb.cancel()


async def _drain(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(*_LINK_FAULTS):
        while True:
            await read_packet(reader)


def make_fleet(
    node_ids: list[str],
    port: int,
    *,
    interval_s: float,
    backoff_base_s: float,
    backoff_cap_s: float,
    connect_timeout_s: float,
    seed: int = 1,
    host: str = "127.0.0.1",
) -> list[SimNode]:
    """Nodes with the edge's backoff at the given (possibly shortened) base and cap; jitter and
    boot ids from a seeded generator per node."""
    rng = random.Random(seed)
    fleet = []
    for node_id in node_ids:
        own = random.Random(rng.random())
        backoff = Backoff(own.random, base=backoff_base_s, cap=backoff_cap_s)
        fleet.append(SimNode(node_id, host, port, interval_s, backoff, connect_timeout_s, rng=own))
    return fleet
