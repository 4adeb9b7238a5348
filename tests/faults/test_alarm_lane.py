"""The alarm lane: an alarm never waits in the broker behind history queued for central.

Real mosquitto, real central, real edge agents. Central is stopped while several nodes send their
buffered history, so all of it is queued at the broker for central's persistent session; central
comes back and starts draining that queue; an alarm made now is stored before the queue has
drained (it travels on ``event/alarm``, which central takes on a session of its own). Before the
alarm lane, the alarm was queued behind every node's history and stored last.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from shilian.broker import Mosquitto
from tests.faults.backlog import PROBE_KIND, Drain, fill_outboxes, stored_seqs, village_nodes
from tests.processes import Central, Edge, wait_for

NODES = 6
#: History per node: 6 x 3,600 events queued for central, seconds of draining on this machine,
#: so that there is a backlog still queued when the alarm is made. A node's 900 device events
#: are sent ahead of its information events, which opens 900 gaps at central: below ingest's
#: MAX_OPEN_GAPS (beyond it, the oldest gaps' events would be taken for duplicates).
HOURS = 1.0
PER_HOUR = 3_600
#: Bounds that stop a hung run (the assertions are on order, not on time).
QUEUED_WITHIN_S = 120.0
DRAIN_WITHIN_S = 240.0


@pytest.fixture
def site(broker: Mosquitto, tmp_path: Path) -> Iterator[tuple[Central, list[Edge]]]:
    central = Central(tmp_path / "central", broker.port)
    edges = [Edge(tmp_path / node, node, broker.port) for node in village_nodes(NODES)]
    try:
        yield central, edges
    finally:
        for p in (*edges, central):
            p.close()


@pytest.mark.skipif(
    not os.environ.get("SHILIAN_RELIABILITY"),
    reason="load ordering run: make reliability (it lost the race once in a fresh-clone make test)",
)
def test_an_alarm_is_stored_before_the_history_queued_for_central_has_drained(
    site: tuple[Central, list[Edge]],
) -> None:
    central, edges = site
    central.start()  # creates central's persistent sessions (main and alarm lane)
    assert central.signal(signal.SIGTERM) == 0
    total = asyncio.run(
        fill_outboxes({e.node_id: e.workdir / "outbox.sqlite3" for e in edges}, HOURS, PER_HOUR)
    )
    for e in edges:
        e.start()
    for e in edges:  # every event acknowledged by the broker: queued there for central
        wait_for(
            lambda e=e: e.request({"op": "status"})["outbox_depth"] == 0,  # type: ignore[misc]
            QUEUED_WITHIN_S,
            f"{e.node_id} history queued at the broker",
        )
    drain = Drain(central.db)
    drain.start()
    try:
        central.start()
        drain.wait(lambda: drain.history_total > 0, 60, "the drain to start")
        # the alarm is made at the node whose history is last in central's queue
        reply = edges[-1].request(
            {"op": "emit", "priority": "alarm", "kind": PROBE_KIND, "data": {}}
        )
        assert reply["ok"], reply
        drain.wait(lambda: drain.history_total >= total, DRAIN_WITHIN_S, "the whole backlog")
        drain.wait(lambda: len(drain.probes) == 1, 30, "the alarm")
    finally:
        drain.stop.set()
        drain.join()
    (probe,) = drain.probes
    last_history_row = max(drain.last_row.values())
    assert probe.row_id < last_history_row, "the alarm was stored after the whole backlog"
    assert probe.row_id < drain.last_row[edges[-1].node_id], "stored after its own history"
    # nothing lost or duplicated on either topic; the alarm's seq follows its node's history
    history = stored_seqs(central.db)
    assert sum(len(v) for v in history.values()) == total
    for (node, _), got in history.items():
        assert sorted(got) == list(range(1, len(got) + 1)), f"{node}: history lost or duplicated"
    probes = stored_seqs(central.db, PROBE_KIND)
    assert list(probes.values()) == [[int(reply["seq"])]]
