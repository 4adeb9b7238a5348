"""The coverage figure never dips below the truth through a broker outage longer than the nodes'
backoff cap: a thousand real MQTT clients speaking the wire contract, central in this process,
one real mosquitto stopped (SIGTERM: it publishes every node's will and keeps them retained) and
started again.

Durations are a tenth of production's (health 3 s instead of 30 s, backoff cap 6 s instead of
60 s, outage 12 s instead of 120 s; the connect timeout 3 s instead of 10 s) so that it runs in
well under a minute; central's reconnect grace is derived from the shortened node constants
exactly as production's is from the real ones (``wire.limits.reconnect_window_s``).
``bench/broker_outage.py`` (``make outage``) runs the full-length form.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from central.config import BrokerConfig, CentralConfig, HttpConfig, StoreConfig
from central.service import CentralService
from registry import Registry
from shilian.broker import Mosquitto
from shilian.simulate.node import make_fleet
from wire.limits import HEALTH_GRACE_FACTOR, reconnect_window_s

CITY = "4501"
NODES = 1000
#: A tenth of production's timings (see the module docstring).
SCALE = 0.1
INTERVAL_S = 30.0 * SCALE
BACKOFF_BASE_S = 1.0 * SCALE
BACKOFF_CAP_S = 60.0 * SCALE
#: Not shortened as much as the rest: on a shared 2-core machine a thousand connects in a few
#: seconds can take over a second each, and a node that gives up an attempt waits its backoff
#: again. Central's grace below is derived from whatever the nodes use, as in production.
CONNECT_TIMEOUT_S = 3.0
OUTAGE_S = 120.0 * SCALE
GRACE_S = reconnect_window_s(BACKOFF_CAP_S, CONNECT_TIMEOUT_S)
#: Boxes that die (power cut) while the broker is away: they must still show offline afterwards.
DEAD = 10
SAMPLE_S = 0.05
WAIT_S = 60.0  # generous bound for a shared, noisy machine; polls return as soon as true


async def _until(cond: Callable[[], bool], what: str, within_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_120_s_broker_outage_never_shows_coverage_below_the_truth(
    broker: Mosquitto, tmp_path: Path
) -> None:
    villages = [u.code for u in Registry.from_package(CITY).villages()][:NODES]
    fleet = make_fleet(
        [f"{v}-a" for v in villages],
        broker.port,
        interval_s=INTERVAL_S,
        backoff_base_s=BACKOFF_BASE_S,
        backoff_cap_s=BACKOFF_CAP_S,
        connect_timeout_s=CONNECT_TIMEOUT_S,
    )
    cfg = CentralConfig(
        broker=BrokerConfig(port=broker.port, client_id="central-outage", keepalive_s=5),
        store=StoreConfig(path=tmp_path / "central.db"),
        http=HttpConfig(port=0),
    )
    # Central retries at once (its own jitter is not under test); the nodes keep theirs.
    svc = CentralService(cfg, reconnect_grace_s=GRACE_S, rng=lambda: 0.01)
    central = asyncio.create_task(svc.run())
    stop = asyncio.Event()
    samples: list[tuple[float, int, int]] = []  # (time, covered, truth)

    async def sample() -> None:
        while not stop.is_set():
            truth = sum(1 for n in fleet if not n.dead)
            samples.append((time.monotonic(), svc.coverage.summary(CITY).covered, truth))
            await asyncio.sleep(SAMPLE_S)

    async with asyncio.TaskGroup() as tg:
        await _until(lambda: svc._started.is_set() and svc.link.connected, "central up")
        for node in fleet:
            tg.create_task(node.run(stop))
        await _until(lambda: svc.coverage.summary(CITY).covered == NODES, "every node online")
        sampler = tg.create_task(sample())
        try:
            await asyncio.to_thread(broker.stop)
            await _until(lambda: not svc.link.connected, "central sees the broker gone")
            for node in fleet[:DEAD]:
                node.kill()  # died while the broker was away: no will, never back
            await asyncio.sleep(OUTAGE_S)
            await asyncio.to_thread(broker.start)
            await _until(lambda: svc.link.connected, "central reconnected")
            back = time.monotonic()
            # Every live node reconnects within the window; the dead ones go when it ends.
            await asyncio.sleep(GRACE_S + HEALTH_GRACE_FACTOR * INTERVAL_S + 1.0)
            await _until(
                lambda: svc.coverage.summary(CITY).covered == NODES - DEAD, "dead nodes offline"
            )
        finally:
            stop.set()
            svc.stop()
        await sampler
    await central
    live = fleet[DEAD:]
    assert all(n.connects >= 2 for n in live), "every live node reconnected after the outage"
    below = [(round(t - back, 2), c, truth) for t, c, truth in samples if c < truth]
    assert below == [], f"coverage below the truth (s after reconnect, shown, truth): {below[:5]}"
    assert max(t for t, _, _ in samples) > back + GRACE_S  # the samples cover the whole window
