"""A county's uplink cut: several village nodes behind one link, cut for 30 s (8 s in ``make
test``), while every village goes on making events.

Five real edge agents share the village-side namespace (the county's network), mosquitto and
central the centre's; the one veth pair between them is the county's uplink. What users rely on,
as docs/faults.md (row 1) says: central shows a node offline only by its own rules, its last
will when the broker's keepalive expires (<= 1.5 x keepalive, confirmed 1 s later) or
``HEALTH_GRACE_FACTOR`` x its health interval of silence, whichever comes first, never sooner;
after the link returns every event arrives, once and in order, and the county's coverage is whole
again. The times are measured for docs/reliability.md.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.backlog import village_nodes
from tests.faults.lan import Lan, NsBroker, NsCentral, NsEdge, lan
from tests.faults.test_network_faults import LONG, exactly_once, record, wait
from wire.limits import HEALTH_GRACE_FACTOR

NODES = 5
CUT_S = 30.0 if LONG else 8.0
#: NsEdge's settings (a tenth of production's, so the test is short; the rule is the same).
KEEPALIVE_S = 5.0
HEALTH_INTERVAL_S = 2.0
#: docs/faults.md: the earliest a silent node may be shown offline after the cut. Its last packet
#: may be up to one health interval old at the cut, so both rules may fire that much earlier.
EARLIEST_OFFLINE_S = min(
    (HEALTH_GRACE_FACTOR - 1) * HEALTH_INTERVAL_S, 1.5 * KEEPALIVE_S - HEALTH_INTERVAL_S + 1.0
)
#: ... and the latest, plus a margin for central's tick and a loaded 2-core machine.
LATEST_OFFLINE_S = min(HEALTH_GRACE_FACTOR * HEALTH_INTERVAL_S, 1.5 * KEEPALIVE_S + 1.0) + 5.0
#: The clock's and the polling's slack on the lower bound.
POLL_SLACK_S = 0.3


class County:
    def __init__(self, net: Lan, workdir: Path) -> None:
        self.net = net
        self.broker = NsBroker(net, workdir / "broker")
        self.broker.start()
        self.central = NsCentral(net, workdir / "central", self.broker.port)
        self.central.start()
        self.nodes = village_nodes(NODES)
        self.edges = [NsEdge(net, workdir / n, n, self.broker.port) for n in self.nodes]
        for e in self.edges:
            e.start_nowait()
        for e in self.edges:
            e.wait_ready()

    def states(self) -> dict[str, str]:
        with sqlite3.connect(f"file:{self.central.db}?mode=ro", uri=True, timeout=5) as c:
            rows = c.execute("SELECT node_id, state FROM nodes").fetchall()
        return {str(n): str(s) for n, s in rows if n in self.nodes}

    def seqs(self) -> dict[str, list[int]]:
        with sqlite3.connect(f"file:{self.central.db}?mode=ro", uri=True, timeout=5) as c:
            rows = c.execute("SELECT node_id, seq FROM events ORDER BY id").fetchall()
        out: dict[str, list[int]] = {n: [] for n in self.nodes}
        for n, q in rows:
            out[str(n)].append(int(q))
        return out

    def close(self) -> None:
        for p in (*self.edges, self.central, self.broker):
            p.close()


@pytest.fixture
def county(tmp_path: Path) -> Iterator[County]:
    with lan() as net:
        c = County(net, tmp_path)
        try:
            yield c
        finally:
            c.close()


def test_a_county_uplink_cut_shows_offline_by_the_rules_and_loses_nothing(county: County) -> None:
    all_online = lambda: county.states() == dict.fromkeys(county.nodes, "online")  # noqa: E731
    wait(all_online, "every node of the county online")
    sent = {e.node_id: e.emit(10) for e in county.edges}
    wait(lambda: county.seqs() == sent, "events before the cut at central")

    offline_at: dict[str, float] = {}
    stop = threading.Event()

    def watch() -> None:  # when central first shows each node offline
        while not stop.is_set():
            now = time.monotonic()
            for n, s in county.states().items():
                if s != "online" and n not in offline_at:
                    offline_at[n] = now
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    county.net.cut()
    t_cut = time.monotonic()
    watcher.start()
    try:
        while time.monotonic() - t_cut < CUT_S:  # the villages go on, each event stored locally
            for e in county.edges:
                sent[e.node_id] += e.emit(2)
            time.sleep(1.0)
        county.net.heal()
        t_heal = time.monotonic()
    finally:
        stop.set()
        watcher.join()
    offline_s = {n: t - t_cut for n, t in offline_at.items()}
    assert set(offline_s) == set(county.nodes), f"not shown offline during the cut: {offline_s}"
    assert min(offline_s.values()) >= EARLIEST_OFFLINE_S - POLL_SLACK_S, offline_s
    assert max(offline_s.values()) <= LATEST_OFFLINE_S, offline_s

    # both measured from the heal, each when it first holds
    done: dict[str, float] = {}
    checks = {
        "events": lambda: all(len(v) >= len(sent[n]) for n, v in county.seqs().items()),
        "coverage": all_online,
    }

    def both() -> bool:
        for what, cond in checks.items():
            if what not in done and cond():
                done[what] = time.monotonic() - t_heal
        return len(done) == len(checks)

    wait(both, "every event and every node online after the link came back")
    for n, got in county.seqs().items():
        exactly_once(got, sent[n])
    record("county_cut", nodes=NODES, cut_s=CUT_S,
           offline_min_s=round(min(offline_s.values()), 1),
           offline_max_s=round(max(offline_s.values()), 1),
           recover_s=round(done["events"], 2), coverage_s=round(done["coverage"], 2),
           events=sum(map(len, sent.values())), lost=0, duplicated=0)  # fmt: skip
