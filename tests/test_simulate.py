"""``shilian simulate``: the plan states what central must show, the verdict catches any
difference, and 2,000 real MQTT nodes in two worker processes, against a real mosquitto and a
real central process, pass the simulator's own check through a county outage and its return
(short phases: 8 s instead of the default 60 s)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import wire
from registry import Registry
from shilian.broker import Mosquitto
from shilian.simulate.check import CentralCoverage, Verdict
from shilian.simulate.node import make_fleet
from shilian.simulate.plan import Change, Phase, Scenario, SimSpec, Timeline, make_plan
from shilian.simulate.runner import Simulation
from tests.processes import ADMIN, ADMIN_PASSWORD, Central

NANNING = Registry.from_package("4501")


def _spec(scenario: Scenario, **kw: object) -> SimSpec:
    return SimSpec.model_validate({"scope": "4501", "nodes": 2000, "coverage": 0.6,
                                   "scenario": scenario, **kw})  # fmt: skip


def test_the_plan_covers_the_target_share_with_valid_node_ids() -> None:
    plan = make_plan(_spec(Scenario.STEADY), NANNING)
    villages = {n[:12] for n in plan.node_ids}
    assert len(plan.node_ids) == len(set(plan.node_ids)) == 2000
    assert all(wire.valid_node_id(n) for n in plan.node_ids)
    assert plan.truth["4501"] == len(villages) == round(0.6 * 1856)
    counties = NANNING.child_codes("4501")
    assert sum(plan.truth[c] for c in counties) == plan.truth["4501"]
    assert plan.phases[0].expect["4501"] == (plan.truth["4501"],) * 2


def test_a_county_outage_shows_that_county_empty_then_back() -> None:
    spec = _spec(Scenario.COUNTY_OUTAGE, county="450103", phase_s=10, settle_s=3)
    plan = make_plan(spec, NANNING)
    steady, outage, back = plan.phases
    assert outage.expect["450103"] == (0, 0)
    lost = plan.truth["450103"]
    assert lost > 0
    assert outage.expect["4501"] == (plan.truth["4501"] - lost,) * 2
    assert outage.expect["450102"] == steady.expect["450102"]
    assert back.expect == steady.expect
    downs = {c.index for c in plan.changes if c.action == "down"}
    assert {plan.node_ids[i][:6] for i in downs} == {"450103"}
    assert all(c.at == 10 for c in plan.changes if c.action == "down")


def test_flapping_and_skew_plans() -> None:
    flap = make_plan(_spec(Scenario.FLAPPING, flap_share=0.1, flap_period_s=3), NANNING)
    lo, hi = flap.phases[0].expect["4501"]
    assert lo < hi == flap.truth["4501"]
    flappers = {c.index for c in flap.changes}
    assert len(flappers) == 200
    last = {c.index: c for c in flap.changes}
    assert all(c.action == "up" for c in last.values())  # all up for the settled phase
    skew = make_plan(_spec(Scenario.CLOCK_SKEW, skew_share=0.25, skew_minutes=45), NANNING)
    assert sorted({abs(s) for s in skew.skew_s}) == [0.0, 2700.0]
    assert sum(1 for s in skew.skew_s if s) == 500


def test_the_timeline_hands_out_each_change_once_in_order() -> None:
    t = Timeline([Change(1.0, 0, "down"), Change(1.0, 1, "down"), Change(5.0, 0, "up")])
    assert t.due(0.5) == []
    assert [c.index for c in t.due(1.0)] == [0, 1]
    assert t.next_at() == 5.0
    assert t.due(4.0) == []
    assert [c.action for c in t.due(9.0)] == ["up"]
    assert t.next_at() is None


def test_the_verdict_fails_on_a_wrong_or_missing_figure() -> None:
    v = Verdict(
        [Phase("steady", 0, 10, 2, {"4501": (5, 5)}), Phase("x", 10, 20, 0, {"4501": (3, 5)})]
    )
    v.add(1.0, {"4501": 0})  # settling: not checked
    v.add(4.0, {"4501": 5})
    assert v.ok is False  # phase x never sampled
    v.add(12.0, {"4501": 4})
    assert v.ok
    v.add(15.0, {})
    assert not v.ok
    assert v.results[1].mismatches[0].got is None
    assert any("FAIL" in line for line in v.report())


@pytest.mark.slow
async def test_2000_nodes_through_a_county_outage_match_central(
    broker: Mosquitto, tmp_path: Path
) -> None:
    spec = _spec(
        Scenario.COUNTY_OUTAGE,
        county="450103",
        phase_s=8.0,
        settle_s=4.0,
        health_interval_s=10.0,
        event_interval_s=60.0,
        port=broker.port,
        workers=2,
    )
    sim = await _checked_run(spec, broker, tmp_path)
    assert sum(w.ready for w in sim.workers) == 2000
    assert sim.verdict is not None and all(r.samples >= 3 for r in sim.verdict.results)
    # Central really saw the outage: the county was empty in the middle phase.
    middle = [f for t, f in sim.samples if 12.0 <= t <= 16.0]
    assert middle and all(f["450103"] == 0 for f in middle)


async def _checked_run(spec: SimSpec, broker: Mosquitto, tmp_path: Path) -> Simulation:
    """The scenario against a real central process on ``broker``; it must pass the check."""
    central = Central(tmp_path / "central", broker.port)
    central.start()
    try:
        async with CentralCoverage(central.api, user=ADMIN, password=ADMIN_PASSWORD) as api:
            sim = Simulation.of(spec, central=api, poll_s=0.5)
            sim.restart = lambda: asyncio.to_thread(broker.restart)
            ok = await sim.run()
    finally:
        central.close()
    assert ok, "\n".join(sim.verdict.report() if sim.verdict else [])
    return sim


async def test_a_node_notices_the_broker_going_away_at_once(broker: Mosquitto) -> None:
    """Not at its next health report: with an hour's interval, a node that only noticed the
    lost connection when it next wrote would stay away from central for up to an hour."""
    node = make_fleet(["450102001003-sim0"], broker.port, interval_s=3600.0, backoff_base_s=0.1,
                      backoff_cap_s=1.0, connect_timeout_s=5.0)[0]  # fmt: skip
    stop = asyncio.Event()
    run = asyncio.create_task(node.run(stop))
    try:
        await _until(lambda: node.connected)
        await asyncio.to_thread(broker.restart)
        await _until(lambda: node.connects == 2)
    finally:
        stop.set()
        await run


async def _until(cond: Callable[[], bool], within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s  # a bound for a loaded machine, not a timing
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_a_settle_time_as_long_as_the_phase_is_refused() -> None:
    with pytest.raises(ValueError, match="settle_s"):
        _spec(Scenario.STEADY, phase_s=5, settle_s=5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "scenario", [Scenario.CLOCK_SKEW, Scenario.FLAPPING, Scenario.BROKER_RESTART]
)
async def test_the_other_scenarios_match_central_at_a_smaller_scale(
    scenario: Scenario, broker: Mosquitto, tmp_path: Path
) -> None:
    """600 nodes in one worker; backoff shortened (cap 2 s) so the restart's returns fit."""
    spec = _spec(
        scenario,
        nodes=600,
        phase_s=6.0,
        settle_s=3.0,
        restart_s=10.0,
        flap_share=0.1,
        flap_period_s=2.0,
        skew_share=0.5,
        skew_minutes=90,
        health_interval_s=5.0,
        backoff_cap_s=2.0,
        port=broker.port,
        workers=1,
    )
    sim = await _checked_run(spec, broker, tmp_path)
    if scenario is Scenario.FLAPPING:
        # Central did see the flapping: the city figure moved during the first phase.
        first = {f["4501"] for t, f in sim.samples if 3.0 <= t <= 12.0 and "4501" in f}
        assert len(first) > 1
    if scenario is Scenario.BROKER_RESTART:
        # The restart happened: every node connected a second time.
        assert sum(w.connects for w in sim.workers) >= 2 * 600


@pytest.mark.slow
def test_the_command_passes_a_true_fleet_and_fails_when_central_cannot_see_it(
    broker: Mosquitto, tmp_path: Path
) -> None:
    central = Central(tmp_path / "central", broker.port)
    central.start()
    elsewhere = Mosquitto().start()  # a broker central is not connected to
    env = {**os.environ, "SHILIAN_PASSWORD": ADMIN_PASSWORD}

    def simulate(port: int) -> subprocess.CompletedProcess[str]:
        args = ["--nodes", "300", "--coverage", "0.1", "--phase", "5", "--settle", "3",
                "--health-interval", "5", "--poll", "0.5", "--broker", f"127.0.0.1:{port}",
                "--check", central.api, "--user", ADMIN]  # fmt: skip
        return subprocess.run(
            [sys.executable, "-m", "shilian", "simulate", *args],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip

    try:
        seen = simulate(broker.port)
        assert seen.returncode == 0, seen.stdout + seen.stderr
        assert "steady: 通过 / pass" in seen.stdout
        blind = simulate(elsewhere.port)
        assert blind.returncode == 1, blind.stdout + blind.stderr
        assert "steady: 不符 / FAIL" in blind.stdout
        assert "expected 186 个村, 中心显示 / central shows 0" in blind.stdout
    finally:
        elsewhere.close()
        central.close()
