"""The wall clock stepped while everything runs (NTP after a long offline spell, an RTC battery
gone flat, an operator's ``date -s``): forward one hour and one day, back one hour and ten
minutes, on the village box and on central (docs/faults.md, rows 93 and 94).

Real mosquitto, real central and agent processes; the stepped process runs under libfaketime
(tests/faults/clock.py), its monotonic clock untouched, as a real step leaves it. While events
stream, each step must leave: every event at central exactly once, the node never shown offline,
no event sent again for a timeout the step faked (central's duplicate counter stays 0), the node's
events listed in its own order (the newest by sequence first, whatever its clock said), and a node
whose clock is off central's flagged with the offset (``clock_off_s``) and cleared when it is
right again. The time from each step until central's view is right again is measured
(``make reliability`` writes it to docs/reliability.md).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from central.ingest import CLOCK_OFF_S
from shilian.broker import Mosquitto
from tests.faults.backlog import stored_seqs
from tests.faults.clock import WallClock
from tests.faults.test_network_faults import LONG, NODE, exactly_once, record, wait
from tests.processes import ADMIN, ADMIN_PASSWORD, Central, Edge

#: Offsets of the stepped clock from the real one, in order. Long form: +1 h, back 1 h, +1 day,
#: back 1 day, back 10 min, forward 10 min; short form: +1 day, then back 1 day 10 min (each
#: step of the long form is also taken by tests/test_central_clock_steps.py, in-process).
STEPS = (3600, 0, 86400, 0, -600, 0) if LONG else (86400, -600)
#: Health every 2 s: a stepped node is flagged after two reports that agree, and a report late
#: on this shared machine is still far inside the 3 s deadline.
HEALTH_S = 2.0
#: Seconds the stream goes on after each step once central's view is right (long form only).
DWELL_S = 15.0 if LONG else 0.0
#: Events per burst and pause between bursts: the outbox is rarely empty when a step lands.
BURST, PAUSE_S = 5, 0.1


class Stream(threading.Thread):
    """Emits bursts of events to the agent until stopped; ``sent`` in acceptance order."""

    def __init__(self, edge: Edge) -> None:
        super().__init__()
        self.edge, self.sent, self.halt = edge, list[int](), threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.halt.is_set():
            seqs = self.edge.emit(BURST)
            with self.lock:
                self.sent += seqs
            time.sleep(PAUSE_S)

    def newest(self) -> int:
        with self.lock:
            return self.sent[-1] if self.sent else 0


def _api(central: Central, path: str) -> Any:
    """A GET as the admin, logging in again when a step of central's clock ended the session
    (sessions expire by wall time)."""
    try:
        return central.get(path)
    except urllib.error.HTTPError as e:
        if e.code != 401:
            raise
        central.token = central.login(ADMIN, ADMIN_PASSWORD)["token"]
        return central.get(path)


def _seqs(db: Path) -> list[int]:
    """The node's event seqs central stored, in storage order (one boot: the agent runs on)."""
    return [q for (node, _), seqs in stored_seqs(db).items() if node == NODE for q in seqs]


def _offline_spells(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
        row = c.execute(
            "SELECT count(*) FROM state_history WHERE node_id = ? AND state = 'offline'", (NODE,)
        ).fetchone()
        return int(row[0])


def _duplicates(central: Central) -> float:
    with central.open("/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith("shilian_duplicate_events_total "):
                return float(line.split()[1])
    return 0.0


def _view_right(central: Central, after: int, node_offset: int) -> bool:
    """Central shows the node online, its newest event (sent after the step) first, and its
    clock flagged iff it is off by more than the bound, with about that offset."""
    try:
        n = _api(central, f"/api/v1/nodes/{NODE}")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return False  # not heard of yet
        raise
    events = n["events"]
    if n["state"] != "online" or not events or events[0]["seq"] <= after:
        return False
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs, reverse=True), f"node's events not in its order: {seqs}"
    off = n.get("clock_off_s")
    if abs(node_offset) <= CLOCK_OFF_S:
        return off is None
    return off is not None and abs(off - node_offset) < CLOCK_OFF_S


@pytest.mark.parametrize("side", ["edge", "central"])
def test_wall_clock_steps_lose_nothing_and_flag_the_node(
    broker: Mosquitto, tmp_path: Path, side: str
) -> None:
    clock = WallClock(tmp_path / "clock")
    central = Central(tmp_path / "central", broker.port)
    edge = Edge(tmp_path / "edge", NODE, broker.port, keepalive_s=5, health_interval_s=HEALTH_S)
    (edge if side == "edge" else central).env = clock.env()
    stream = Stream(edge)
    recover: dict[str, float] = {}
    try:
        central.start()
        edge.start()
        stream.start()
        wait(lambda: _view_right(central, 0, 0), "node online with its events")
        for offset in STEPS:
            step = offset - clock.offset_s
            clock.step(offset)
            t0 = time.monotonic()
            after = stream.newest()
            # What central should read: the node's clock minus its own.
            node_offset = offset if side == "edge" else -offset
            wait(
                lambda a=after, o=node_offset: _view_right(central, a, o),
                f"view after {step:+d} s",
            )
            recover[f"recover_s_{step:+d}"] = round(time.monotonic() - t0, 2)
            time.sleep(DWELL_S)
        stream.halt.set()
        stream.join(30)
        sent = stream.sent
        wait(lambda: len(_seqs(central.db)) >= len(sent), "every event at central")
        time.sleep(1.0)  # anything still in flight lands before the final count
        exactly_once(_seqs(central.db), sent)
        assert _offline_spells(central.db) == 0, "node shown offline by a clock step"
        assert _duplicates(central) == 0, "events sent again for a timeout the step faked"
        record(f"clock_steps_{side}", events=len(sent), **recover, offline=0, duplicated=0,
               lost=0)  # fmt: skip
    finally:
        stream.halt.set()
        for p in (edge, central):
            p.close()
        if stream.is_alive():
            stream.join(30)
