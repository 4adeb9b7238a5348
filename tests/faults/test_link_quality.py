"""A poor line between the village and the centre, not a cut one: 300 ms added each way, 5 % of
packets lost each way, and a 4G uplink capped at 256 kbit/s while the node sends its backlog.

Real mosquitto and central in the centre's namespace, the real edge agent in the village's, the
line shaped on the village's end (tests/faults/shaping.py). What users rely on: the node comes
online through such a line, every event arrives once and in order, and an alarm is not stuck
behind the backlog. The delays are measured (``make reliability`` writes them to
docs/reliability.md), never asserted: this is a shared 2-core machine.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.backlog import fill_outbox
from tests.faults.lan import Lan, NsBroker, NsCentral, NsEdge, lan
from tests.faults.shaping import Shape, shaped
from tests.faults.test_network_faults import LONG, NODE, exactly_once, record, wait

#: Events made through the poor line, one at a time as a village makes them.
EVENTS = 300 if LONG else 40
#: Seconds between two events (a busy village: several a second).
EVENT_GAP_S = 0.1
#: The 4G uplink: 256 kbit/s up (32,000 bytes/s), 1 Mbit/s down.
UP_BYTES_S = 32_000
DOWN_BYTES_S = 125_000
#: Backlog buffered at the node before it reaches the 4G line (~300 bytes an event on the wire:
#: the short form is seconds of the line's capacity, the long one minutes).
BACKLOG = 20_000 if LONG else 1_500
#: Alarms made while the backlog drains, one every ALARM_GAP_S.
ALARMS = 20 if LONG else 4
ALARM_GAP_S = 1.0


class Village:
    def __init__(self, net: Lan, workdir: Path) -> None:
        self.net, self.workdir = net, workdir
        self.broker = NsBroker(net, workdir / "broker")
        self.broker.start()
        self.central = NsCentral(net, workdir / "central", self.broker.port)
        self.central.start()
        self.edge = NsEdge(net, workdir / "edge", NODE, self.broker.port)

    def rows(self) -> list[sqlite3.Row]:
        with sqlite3.connect(f"file:{self.central.db}?mode=ro", uri=True, timeout=5) as c:
            c.row_factory = sqlite3.Row
            return c.execute(
                "SELECT id, seq, kind, priority, ts, recv_ts FROM events WHERE node_id = ? "
                "ORDER BY id",
                (NODE,),
            ).fetchall()

    def state(self) -> str | None:
        with sqlite3.connect(f"file:{self.central.db}?mode=ro", uri=True, timeout=5) as c:
            row = c.execute("SELECT state FROM nodes WHERE node_id = ?", (NODE,)).fetchone()
            return None if row is None else str(row[0])

    def close(self) -> None:
        for p in (self.edge, self.central, self.broker):
            p.close()


@pytest.fixture
def village(tmp_path: Path) -> Iterator[Village]:
    with lan() as net:
        v = Village(net, tmp_path)
        try:
            yield v
        finally:
            v.close()


def _ms(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (seconds) in ms."""
    if len(values) == 1:
        return round(values[0] * 1000, 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]
                 * 1000, 1)  # fmt: skip


LINES = {
    "latency_300ms": Shape(delay_ms=300),
    "loss_5pct": Shape(loss_pct=5),
}


@pytest.mark.parametrize("fault", list(LINES))
def test_a_poor_line_brings_the_node_online_and_loses_no_event(
    village: Village, fault: str
) -> None:
    with shaped(village.net, LINES[fault], village.workdir / "line"):
        t0 = time.monotonic()
        village.edge.start()
        online = wait(lambda: village.state() == "online", "node online through the line")
        online_s = time.monotonic() - t0
        sent: list[int] = []
        for _ in range(EVENTS):  # one at a time, as a village makes them
            sent += village.edge.emit(1)
            time.sleep(EVENT_GAP_S)
        drained = wait(lambda: len(village.rows()) >= len(sent), "every event at central")
    rows = village.rows()
    exactly_once([int(r["seq"]) for r in rows], sent)
    delays = [float(r["recv_ts"]) - float(r["ts"]) for r in rows]
    assert village.state() == "online"
    record(fault, online_s=round(online_s, 2), online_after_edge_ready_s=round(online, 2),
           event_p50_ms=_ms(delays, 0.5), event_p99_ms=_ms(delays, 0.99),
           event_max_ms=round(max(delays) * 1000, 1), drain_s=round(drained, 2),
           events=len(sent), lost=0, duplicated=0)  # fmt: skip


def test_a_4g_uplink_drains_the_backlog_and_alarms_are_not_starved(village: Village) -> None:
    asyncio.run(fill_outbox(village.edge.workdir / "outbox.sqlite3", NODE, BACKLOG / 3600, 3600))
    line = Shape(up_bytes_s=UP_BYTES_S, down_bytes_s=DOWN_BYTES_S)
    with shaped(village.net, line, village.workdir / "line"):
        t0 = time.monotonic()
        village.edge.start()
        alarm_seqs: list[int] = []
        history_at_alarm: list[int] = []
        for _ in range(ALARMS):
            history_at_alarm.append(sum(r["priority"] != "alarm" for r in village.rows()))
            alarm_seqs += village.edge.emit(1, priority="alarm", kind="panic")
            time.sleep(ALARM_GAP_S)
        wait(lambda: len(village.rows()) >= BACKLOG + ALARMS, "backlog and alarms")
        drain_s = time.monotonic() - t0
    rows = village.rows()
    alarms = [r for r in rows if r["priority"] == "alarm"]
    history = [r for r in rows if r["priority"] != "alarm"]
    assert len(history) == BACKLOG and len({int(r["seq"]) for r in history}) == BACKLOG
    assert sorted(int(r["seq"]) for r in alarms) == alarm_seqs
    # Not starved: the first alarm is stored while most of the backlog still waits at the node
    # (the outbox sends by priority; the line, not the CPU, is the bottleneck here).
    last_history = max(int(r["id"]) for r in history)
    assert history_at_alarm[0] < BACKLOG // 2, "the backlog drained before the alarm was made"
    assert int(alarms[0]["id"]) < last_history, "the alarm waited for the whole backlog"
    delays = [float(r["recv_ts"]) - float(r["ts"]) for r in alarms]
    record("poor_4g", up_kbit_s=UP_BYTES_S * 8 // 1000, down_kbit_s=DOWN_BYTES_S * 8 // 1000,
           backlog=BACKLOG, drain_s=round(drain_s, 1),
           drain_events_per_s=round(BACKLOG / max(drain_s, 1e-3)),
           alarms=len(alarms), alarm_p50_ms=_ms(delays, 0.5), alarm_max_ms=round(max(delays) *
           1000, 1), alarms_before_backlog_end=sum(int(r["id"]) < last_history for r in alarms),
           lost=0, duplicated=0)  # fmt: skip
