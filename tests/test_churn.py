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
