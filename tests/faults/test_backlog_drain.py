"""Backlog drain, short form (bench/faults/backlog.py is the long one: 100 nodes, 24 h): nodes
come back with an hour of buffered history each, all at once, to a real mosquitto and a real
central. An alarm made at each node while its history is draining reaches central before that
node's history has finished arriving (no head-of-line blocking behind history), and at the end
every event is stored exactly once.

Real edge agents (``shilian edge run``, one process each) on the outbox files written by
tests/faults/backlog.py; the alarms go in through each agent's local socket, as the board's
would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from shilian.broker import Mosquitto
from tests.faults.backlog import PROBE_KIND, Drain, fill_outboxes, stored_seqs, village_nodes
from tests.processes import Central, Edge

NODES = 10
HOURS = 1.0
#: Denser than the bench's day (one event a second): an hour at ten nodes is then 36,000
#: events, a drain long enough to make an alarm during it.
PER_HOUR = 3_600
#: Bound on the whole drain (stops a hung run; the figure is the bench's, not asserted here).
DRAIN_WITHIN_S = 240.0


@pytest.fixture
def drain_site(broker: Mosquitto, tmp_path: Path) -> Iterator[tuple[Central, list[Edge]]]:
    central = Central(tmp_path / "central", broker.port)
    edges = [Edge(tmp_path / node, node, broker.port) for node in village_nodes(NODES)]
    try:
        central.start()
        yield central, edges
    finally:
        for p in (*edges, central):
            p.close()


def test_alarms_made_during_a_drain_overtake_the_backlog_and_nothing_is_lost(
    drain_site: tuple[Central, list[Edge]],
) -> None:
    central, edges = drain_site
    total = asyncio.run(
        fill_outboxes({e.node_id: e.workdir / "outbox.sqlite3" for e in edges}, HOURS, PER_HOUR)
    )
    drain = Drain(central.db)
    drain.start()
    try:
        for e in edges:  # all at once: every node reconnects with its backlog
            e.start_nowait()
        alarms: dict[str, int] = {}
        for e in edges:
            e.wait_ready()
            # during the drain: once the node's history has started arriving at central
            drain.wait(lambda e=e: drain.history.get(e.node_id), 60, f"{e.node_id} draining")
            reply = e.request({"op": "emit", "priority": "alarm", "kind": PROBE_KIND, "data": {}})
            assert reply["ok"], reply
            alarms[e.node_id] = int(reply["seq"])
        drain.wait(lambda: drain.history_total >= total, DRAIN_WITHIN_S, "the whole backlog")
        drain.wait(lambda: len(drain.probes) >= len(edges), 30, "every alarm")
    finally:
        drain.stop.set()
        drain.join()
    for p in drain.probes:  # each alarm is at central before its own node's history drained
        assert p.row_id < drain.last_row[p.node], f"{p.node}: alarm stored after its backlog"
    history = stored_seqs(central.db)
    assert len(history) == len(edges)  # one previous run per node
    assert sum(len(v) for v in history.values()) == total
    for (node, _), got in history.items():
        # exactly once; in send order (device health before information, each in its order)
        assert sorted(got) == list(range(1, len(got) + 1)), f"{node}: history lost or duplicated"
        assert got == [q for q in got if q % 4 == 1] + [q for q in got if q % 4 != 1], node
    probes = stored_seqs(central.db, PROBE_KIND)
    assert {node: seqs for (node, _), seqs in probes.items()} == {
        node: [seq] for node, seq in alarms.items()
    }, "an alarm lost or duplicated"
