"""Faults on a real network path: the village's uplink cut, central and the broker killed, with a
known event stream. Every event must reach central exactly once and in order, and the time until
central's view is right again is measured (``make reliability`` writes the figures to
docs/reliability.md; the short forms here run in ``make test``).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.lan import Lan, NsBroker, NsCentral, NsEdge, lan

NODE = "450102001003-a"
#: Long forms for ``make reliability`` (SHILIAN_RELIABILITY=1), short ones for ``make test``.
LONG = bool(os.environ.get("SHILIAN_RELIABILITY"))
PARTITION_S = 30.0 if LONG else 8.0
#: Generous bound on recovery on a shared, noisy 2-core machine (the figure is measured, not
#: asserted: this only stops a hung run).
RECOVER_WITHIN_S = 180.0
#: Where measured recovery times go for docs/reliability.md (``make reliability``).
RESULTS = os.environ.get("SHILIAN_RELIABILITY_RESULTS")


@dataclass
class Site:
    net: Lan
    broker: NsBroker
    central: NsCentral
    edge: NsEdge

    def seqs(self) -> list[int]:
        """Event seqs central stored for the node (all boots: the agent is not restarted)."""
        with sqlite3.connect(f"file:{self.central.db}?mode=ro", uri=True, timeout=5) as c:
            rows = c.execute("SELECT seq FROM events WHERE node_id = ? ORDER BY id", (NODE,))
            return [int(r[0]) for r in rows]

    def state(self) -> str | None:
        with sqlite3.connect(f"file:{self.central.db}?mode=ro", uri=True, timeout=5) as c:
            row = c.execute("SELECT state FROM nodes WHERE node_id = ?", (NODE,)).fetchone()
            return None if row is None else str(row[0])


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with lan() as net:
        broker = NsBroker(net, tmp_path / "broker")
        broker.start()
        central = NsCentral(net, tmp_path / "central", broker.port)
        edge = NsEdge(net, tmp_path / "edge", NODE, broker.port)
        try:
            central.start()
            edge.start()
            yield Site(net, broker, central, edge)
        finally:
            for p in (edge, central, broker):
                p.close()


def wait(cond: object, what: str, within: float = RECOVER_WITHIN_S) -> float:
    """Seconds until ``cond()`` is true (AssertionError after ``within``)."""
    assert callable(cond)
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > within:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.1)
    return time.monotonic() - t0


def exactly_once(stored: list[int], sent: list[int]) -> None:
    assert len(stored) == len(set(stored)), "duplicates stored"
    assert stored == sorted(stored) == sent, f"stored {len(stored)} of {len(sent)}"


def record(name: str, **figures: float) -> None:
    if RESULTS:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(json.dumps({"fault": name, **figures}) + "\n")


def test_uplink_cut_loses_nothing_and_recovers(site: Site) -> None:
    sent = site.edge.emit(20)
    wait(lambda: site.seqs() == sent, "events before the cut at central")
    site.net.cut()
    t_cut = time.monotonic()
    sent += site.edge.emit(30)  # the village goes on: each accepted durably by the agent
    time.sleep(max(0.0, PARTITION_S - (time.monotonic() - t_cut)))
    site.net.heal()
    recovered = wait(lambda: len(site.seqs()) >= len(sent), "events after the link came back")
    exactly_once(site.seqs(), sent)
    online = wait(lambda: site.state() == "online", "node online after the cut")
    record("uplink_cut", partition_s=PARTITION_S, recover_s=round(recovered, 2),
           online_s=round(online, 2), events=len(sent), lost=0)  # fmt: skip


def _emit_during(site: Site, n: int, done: list[int]) -> threading.Thread:
    def run() -> None:
        for _ in range(n // 10):
            done.extend(site.edge.emit(10))
            time.sleep(0.05)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_central_killed_mid_stream_loses_and_duplicates_nothing(site: Site) -> None:
    sent: list[int] = []
    emitter = _emit_during(site, 200, sent)
    wait(lambda: len(site.seqs()) >= 40, "some events at central")
    site.central.signal(signal.SIGKILL)
    t0 = time.monotonic()
    time.sleep(1.0)
    site.central.start()
    emitter.join()
    recovered = wait(lambda: len(site.seqs()) >= len(sent), "every event after the restart")
    exactly_once(site.seqs(), sent)
    record("central_kill9", recover_s=round(time.monotonic() - t0, 2),
           drain_s=round(recovered, 2), events=len(sent), lost=0)  # fmt: skip


def test_broker_killed_mid_stream_loses_and_duplicates_nothing(site: Site) -> None:
    # Central's sessions were made a moment ago: give the broker a save so they survive the
    # crash (in service central's sessions are days old).
    time.sleep(BROKER_SAVE_S)
    sent: list[int] = []
    emitter = _emit_during(site, 200, sent)
    wait(lambda: len(site.seqs()) >= 40, "some events at central")
    site.broker.signal(signal.SIGKILL)
    t0 = time.monotonic()
    time.sleep(1.0)
    site.broker.start()
    emitter.join()
    # What the broker acknowledged and neither delivered nor saved, the node still holds until
    # central acknowledges it (docs/faults.md, broker crash): nothing is lost.
    recovered = wait(lambda: len(site.seqs()) >= len(sent), "every event after the restart")
    time.sleep(1.0)
    exactly_once(site.seqs(), sent)
    record("broker_kill9", recover_s=round(time.monotonic() - t0, 2), drain_s=round(recovered, 2),
           events=len(sent), lost=0)  # fmt: skip


#: Random fault cycles over one event stream: 100 for ``make reliability``, 20 in ``make test``.
CYCLES = int(os.environ.get("SHILIAN_FAULT_CYCLES", "100" if LONG else "20"))


#: mosquitto saves once a whole second has passed since its last save (autosave_interval 1, so up
#: to 2 s apart): central's fresh sessions survive a broker crash only once saved.
BROKER_SAVE_S = 3.0


def test_random_fault_cycles_lose_and_duplicate_nothing(site: Site) -> None:
    """Uplink cuts, central and broker kills at random moments while the village emits: at the
    end every event is at central exactly once, in order, and the node is online. Broker kills
    included: an event the broker acknowledged and lost is still in the node's outbox until
    central acknowledges it (docs/protocol.md, stored-acknowledgement)."""
    import random

    rng = random.Random(int(os.environ.get("SHILIAN_FAULT_SEED", "20261205")))
    sent: list[int] = []
    counts = {"cut": 0, "central": 0, "broker": 0}
    t_start = time.monotonic()
    time.sleep(BROKER_SAVE_S)  # central's fresh sessions saved, as in service

    def emit(n: int) -> None:
        seqs = site.edge.emit(n)
        sent.extend(seqs)

    for _ in range(CYCLES):
        fault = rng.choice(list(counts))
        counts[fault] += 1
        emit(rng.randrange(1, 15))
        if fault == "cut":
            site.net.cut()
            emit(rng.randrange(1, 15))
            time.sleep(rng.uniform(0.5, 3.0))
            site.net.heal()
        elif fault == "central":
            site.central.signal(signal.SIGKILL)
            emit(rng.randrange(1, 15))
            site.central.start()
        else:
            time.sleep(rng.uniform(0.0, 2.0))
            site.broker.signal(signal.SIGKILL)
            emit(rng.randrange(1, 15))
            site.broker.start()
        time.sleep(rng.uniform(0.0, 1.0))
    try:
        recovered = wait(lambda: not set(sent) - set(site.seqs()), "every event after the faults")
    except AssertionError:
        missing = sorted(set(sent) - set(site.seqs()))
        raise AssertionError(f"lost {len(missing)} of {len(sent)}: {missing[:50]}") from None
    time.sleep(1.0)  # anything still in flight lands before the final count
    stored = site.seqs()
    duplicated = len(stored) - len(set(stored))
    record("random_cycles", cycles=CYCLES, **{f"{k}_faults": v for k, v in counts.items()},
           events=len(sent), lost=len(set(sent) - set(stored)), duplicated=duplicated,
           last_recover_s=round(recovered, 2),
           total_s=round(time.monotonic() - t_start, 1))  # fmt: skip
    assert duplicated == 0, "duplicates stored"
    assert stored == sorted(stored), "out of order"
    wait(lambda: site.state() == "online", "node online after the last fault")
