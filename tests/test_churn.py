"""The demo fleet's plan: the configured share of villages online, and churn that keeps it there."""

from __future__ import annotations

import random

from shilian.churn import Action, ChurnPlan

VILLAGES = [f"4501{i:08d}" for i in range(1856)]


def test_initial_share_and_provisioned_nodes() -> None:
    plan = ChurnPlan(VILLAGES, 0.7688, random.Random(1))
    starts = plan.initial()
    assert len(starts) == round(1856 * 0.7688) == 1427
    assert {s.action for s in starts} == {Action.START}
    assert plan.up <= set(plan.nodes)
    assert all(n[:12] in set(VILLAGES) for n in plan.nodes)
    assert len({n[:12] for n in plan.nodes}) == len(plan.nodes)  # one node per village


def test_churn_keeps_the_share_and_only_touches_known_nodes() -> None:
    plan = ChurnPlan(VILLAGES, 0.5, random.Random(2))
    plan.initial()
    up = set(plan.up)
    drops = events = 0
    for t in range(1, 601):
        for step in plan.step(float(t)):
            assert step.node_id in plan.nodes
            if step.action in (Action.CRASH, Action.STOP):
                assert step.node_id in up
                up.discard(step.node_id)
                drops += 1
            elif step.action is Action.START:
                up.add(step.node_id)
            else:
                assert step.node_id in up  # events only from nodes that are up
                events += 1
        assert len(up) == 928 and up == plan.up
    assert drops > 50 and events > 300


def test_every_node_has_devices_whose_health_varies_and_changes_only_on_up_nodes() -> None:
    plan = ChurnPlan(VILLAGES, 0.5, random.Random(3), start_time=1_764_000_000.0)
    plan.initial()
    devices = [d for n in plan.nodes for d in plan.devices[n]]
    assert all(any(d.kind == "camera" for d in plan.devices[n]) for n in plan.nodes)
    kinds = {d.kind for d in devices}
    assert kinds == {"camera", "conference_terminal", "info_system"}
    healths = {d.health for d in devices}
    assert {"ok", "black", "stalled", "unavailable", "down"} <= healths
    assert any(
        not any(d.kind == "conference_terminal" for d in plan.devices[n]) for n in plan.nodes
    )
    assert all(d.since < plan.start_time for d in devices)
    changes = 0
    for t in range(1, 301):
        up = set(plan.up)
        for step in plan.step(1000.0 + t):
            if step.action is Action.DEVICE:
                assert step.node_id in up and step.device is not None
                assert step.device in plan.devices[step.node_id]
                assert step.device.since == plan.start_time + t - 1  # wall time from step one
                changes += 1
    assert changes > 20
