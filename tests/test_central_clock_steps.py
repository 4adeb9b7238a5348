"""Central's cores when a wall clock is stepped (NTP, ``date -s``): deadlines and windows run on
the monotonic clock, so a step of central's wall clock neither takes nodes offline nor keeps a
dead one online nor moves the renewal limit; a node whose clock is off central's is flagged once
two of its reports agree. Both clocks are numbers passed in (the renewal test signs real
certificates). The same rules with real processes and libfaketime:
tests/faults/test_clock_jumps.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import wire
from central.config import CaConfig
from central.ingest import CLOCK_OFF_S, Ingest
from central.link import Inbound
from central.renewal import RenewalService
from pki.ca import CertificateAuthority, make_csr, new_key
from tests.test_central_ingest import BOOT, NODE, make_ingest, state
from wire.messages import CertRequest, CertResponse

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


@pytest.mark.parametrize("step", [86400.0, -86400.0])
def test_a_step_of_centrals_wall_clock_neither_ends_nor_stretches_the_renewal_limit(
    tmp_path: Path, step: float
) -> None:
    """Three certificates a day per node (a node in a renewal loop must not grow the CA's list):
    the window runs on the monotonic clock, so a forward step does not reopen it early and a
    backward one does not keep it shut for longer."""
    ca = CertificateAuthority.create(tmp_path / "ca")
    ca.issue_node(make_csr(new_key(), NODE), days=5)
    answers: list[CertResponse] = []
    wall, mono = [WALL0], [MONO0]
    svc = RenewalService(
        CaConfig(dir=tmp_path / "ca", broker_host="127.0.0.1"),
        lambda topic, payload, corr: answers.append(
            wire.decode(CertResponse, payload, node_id=NODE)
        ),
        CollectorRegistry(),
        clock=lambda: wall[0],
        mono=lambda: mono[0],
    )

    async def ask() -> CertResponse:
        req = CertRequest(node=NODE, ts=wall[0], csr_pem=make_csr(new_key(), NODE).decode())
        n = len(answers)
        svc.take([Inbound(wire.Topics(NODE).cert_req, wire.encode(req), False, b"1")])
        for _ in range(500):
            if len(answers) > n:
                return answers[-1]
            await asyncio.sleep(0.01)
        raise AssertionError("no renewal answer")

    async def scenario() -> None:
        stop = asyncio.Event()
        runner = asyncio.create_task(svc.run(stop))
        for _ in range(3):
            assert (await ask()).ok
        wall[0] += step  # central's clock stepped; an hour passes on the monotonic clock
        mono[0] += 3600.0
        refused = await ask()
        assert not refused.ok and refused.error is not None
        assert refused.error.code == "rate_limited"
        wall[0] += 86400.0 - step  # a real day after the first renewal: the window is open again
        mono[0] += 86400.0
        assert (await ask()).ok
        stop.set()
        await runner

    asyncio.run(scenario())
