"""Central's ingest core when a wall clock is stepped (NTP, ``date -s``): deadlines run on the
monotonic clock, so a step of central's wall clock neither takes nodes offline nor keeps a dead
one online; a node whose clock is off central's is flagged once two of its reports agree. No
I/O: both clocks are numbers passed in. The same rules with real processes and libfaketime:
tests/faults/test_clock_jumps.py."""

from __future__ import annotations

import pytest

import wire
from central.ingest import CLOCK_OFF_S, Ingest
from tests.test_central_ingest import BOOT, NODE, make_ingest, state

INTERVAL = 30.0
WALL0, MONO0 = 1_800_000_000.0, 500.0


def health_at(ts: float) -> tuple[str, bytes]:
    msg = wire.Health(
        node=NODE, boot_id=BOOT, ts=ts, interval_s=INTERVAL, uptime_s=5, sw_version="0.1.0",
        cpu_pct=1, mem_used_pct=1, disk_used_pct=1, outbox_depth=0,
    )  # fmt: skip
    return wire.Topics(NODE).health, wire.encode(msg)


def online() -> Ingest:
    ing = make_ingest()
    ing.handle(*state(interval=INTERVAL), WALL0, MONO0)
    ing.take()
    assert ing.nodes[NODE].state == "online"
    return ing


@pytest.mark.parametrize("step", [3600.0, 86400.0, -3600.0, -600.0])
def test_a_step_of_centrals_wall_clock_moves_no_deadline(step: float) -> None:
    ing = online()
    # Just before the node's deadline by the monotonic clock, with the wall clock stepped.
    assert ing.expire(WALL0 + 1.4 * INTERVAL + step, MONO0 + 1.4 * INTERVAL) == []
    assert ing.nodes[NODE].state == "online"
    # Past it: offline, at the deadline the node was given, however the wall clock moved.
    assert ing.expire(WALL0 + 1.6 * INTERVAL + step, MONO0 + 1.6 * INTERVAL) == [NODE]
    assert ing.nodes[NODE].state_reason == "health_timeout"


def test_health_keeps_a_node_online_across_a_forward_step() -> None:
    ing = online()
    for i in range(1, 5):  # the wall clock one day ahead from the second report on
        wall = WALL0 + i * INTERVAL + (86400.0 if i > 1 else 0.0)
        ing.handle(*health_at(wall), wall, MONO0 + i * INTERVAL)
        assert ing.expire(wall + 1.0, MONO0 + i * INTERVAL + 1.0) == []
    assert ing.nodes[NODE].state == "online"


@pytest.mark.parametrize("off", [3600.0, 86400.0, -3600.0, -600.0])
def test_a_node_whose_clock_is_off_is_flagged_after_two_reports_and_cleared(off: float) -> None:
    ing = online()
    now = WALL0
    for _ in range(2):
        assert NODE not in ing.clock_off  # one report is not enough: it may have been queued
        now += INTERVAL
        ing.handle(*health_at(now + off), now, now - WALL0 + MONO0)
    assert ing.clock_off[NODE] == pytest.approx(off)
    ((node, flagged),) = ing.take_clock_changes()
    assert node == NODE and flagged == pytest.approx(off)
    now += INTERVAL
    ing.handle(*health_at(now), now, now - WALL0 + MONO0)  # NTP fixed it
    assert NODE not in ing.clock_off
    assert ing.take_clock_changes() == [(NODE, None)]


def test_reports_queued_while_central_was_away_do_not_flag_the_node() -> None:
    ing = online()
    # Ten reports a node made over five minutes, delivered together after central's restart.
    arrive = WALL0 + 600.0
    for i in range(10):
        ing.handle(*health_at(WALL0 + i * INTERVAL), arrive + i * 0.001, MONO0 + 600.0)
    assert ing.clock_off == {}
    # A small offset within the bound is no flag either.
    for i in range(3):
        now = arrive + (i + 1) * INTERVAL
        ing.handle(*health_at(now + CLOCK_OFF_S / 2), now, MONO0 + 600.0 + (i + 1) * INTERVAL)
    assert ing.clock_off == {}
