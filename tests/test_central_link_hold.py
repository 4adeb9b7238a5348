"""Central's link holds a bounded number of uncommitted messages, whatever the broker sends.

Real mosquitto 2.0.11: a backlog queued for central's persistent session is drained by a link
whose commits are slow. mosquitto does not keep to the Receive Maximum central announces once
PUBACKs come back in bulk (measured: ~8,800 unacknowledged in flight at once against a Receive
Maximum of 100), so the link itself stops reading the socket while ``max_held`` messages wait for
their commit, and reads on once a commit has made room. Nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import aiomqtt

from central.config import BrokerConfig
from central.link import READ_SLACK_BYTES, Inbound, Lane, MqttLink
from shilian.broker import Mosquitto

#: The link's bound in this test: small, so that the backlog is many times larger.
MAX_HELD = 200
#: Messages queued for central before it connects.
BACKLOG = 6_000
#: Each message's payload; on the wire a little more (topic, packet id, properties).
PAYLOAD_BYTES = 1_000
#: A session of its own on the test's topic.
LANE = Lane("main", "", ("shilian/v1/#",))
#: Upper bound of any wait on the shared machine (not a timing assertion).
WAIT_S = 120.0


async def _queue_backlog(port: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="p-" + uuid.uuid4().hex[:8]) as p:
        for i in range(BACKLOG):
            await p.publish("shilian/v1/x", f"{i:08d}".encode().ljust(PAYLOAD_BYTES, b"."), qos=1)


async def test_a_slow_commit_holds_at_most_max_held_and_loses_nothing(broker: Mosquitto) -> None:
    cfg = BrokerConfig(host="127.0.0.1", port=broker.port, client_id="c-" + uuid.uuid4().hex[:8])
    stored: set[bytes] = set()
    peak = 0

    async def slow_commit(batch: list[Inbound]) -> None:
        nonlocal peak
        peak = max(peak, link.held)
        await asyncio.sleep(0.01 * len(batch) / 100)  # a slow store: the broker is faster
        stored.update(m.payload[:8] for m in batch)

    # A first connection creates the persistent session (subscribed), then goes away.
    link = MqttLink(cfg, slow_commit, max_held=MAX_HELD, lane=LANE)
    task = asyncio.create_task(link.run())
    async with asyncio.timeout(WAIT_S):
        await link.subscribed.wait()
    link.stop()
    await task

    await _queue_backlog(broker.port)
    link = MqttLink(cfg, slow_commit, max_held=MAX_HELD, lane=LANE)
    task = asyncio.create_task(link.run())
    try:
        async with asyncio.timeout(WAIT_S):
            while len(stored) < BACKLOG:
                peak = max(peak, link.held)
                await asyncio.sleep(0.005)
    finally:
        link.stop()
        with contextlib.suppress(Exception):
            await task
    assert len(stored) == BACKLOG, "messages lost"
    # What gmqtt had already read off the socket when the link stopped reading is delivered
    # too: at most one read of READ_SLACK_BYTES, each message more than PAYLOAD_BYTES.
    assert peak <= MAX_HELD + READ_SLACK_BYTES // PAYLOAD_BYTES, f"held {peak} at once"
