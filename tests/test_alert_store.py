"""Alert storage (central.alerting: rules, webhook settings, firing and resolved alerts) and the
alert task over a real store, on SQLite and PostgreSQL (``db_target``)."""

from __future__ import annotations

import asyncio
import json

import prometheus_client

from central.alerting import AlertStore, AlertTask
from central.alerts import Alert, AlertRule, AlertsConfig, Transition, WebhookConfig
from central.coverage import CoverageIndex
from central.db import Target
from central.live import LiveHub
from central.store import EventRow, NodeRow
from registry import Registry
from tests.stores import open_store

NANNING = Registry.from_package("4501")
V1 = "450102001003"
NODE = f"{V1}-a"
BOOT = "b" * 32


def _alert(key: str, fired: float, resolved: float | None = None) -> Alert:
    return Alert(
        "offline", "node_offline", "warning", key, {"node": key, "code": V1}, "离线", "offline",
        60.0, fired - 60, fired, resolved,
    )  # fmt: skip


def test_rules_webhooks_and_alerts_are_kept(db_target: Target) -> None:
    store = AlertStore(db_target)
    try:
        assert store.rules() is None and store.webhooks() == {}
        rules = [AlertRule(id="gone", kind="node_offline", minutes=5)]
        store.set_rules(rules, "boss", 10.0)
        cov = AlertRule(id="cov", kind="coverage_below", threshold_pct=90)
        store.set_rules([*rules, cov], "boss", 11.0)
        assert [r.id for r in store.rules() or []] == ["gone", "cov"]
        store.set_rules(None, "boss", 12.0)
        assert store.rules() is None
        hook = WebhookConfig(url="https://example.org/hook", timeout_s=2)
        store.set_webhooks({"abc": hook}, "boss", 13.0)
        store.set_webhooks({"abc": hook, "def": hook}, "boss", 14.0)
        assert store.webhooks() == {"abc": hook, "def": hook}
        a, b = _alert("n1", 100.0), _alert("n2", 110.0)
        store.record([Transition("firing", a), Transition("firing", b)])
        store.record([Transition("resolved", _alert("n1", 100.0, resolved=150.0))])
        assert [(x.key, x.since, x.labels) for x in store.firing()] == [("n2", 50.0, b.labels)]
        (done,) = store.recent_resolved(5)
        assert (done.key, done.resolved) == ("n1", 150.0)
    finally:
        store.close()


async def test_an_unacknowledged_alarm_fires_and_survives_a_restart(db_target: Target) -> None:
    ingest = open_store(db_target)
    ingest.apply(
        [
            NodeRow(
                NODE,
                V1,
                V1[:6],
                "online",
                1.0,
                "connect",
                BOOT,
                1,
                30.0,
                "0.1",
                1.0,
                1.0,
                json.dumps({"outbox_depth": 0}),
            ),
            EventRow(NODE, V1, BOOT, 1, 100.0, 100.0, "alarm", "panic", None, "{}"),
        ]
    )
    ingest.close()
    cfg = AlertsConfig(rules=[AlertRule(id="unacked", kind="alarm_unacked", minutes=1)])
    now = [1000.0]

    def task() -> AlertTask:
        cov = CoverageIndex(NANNING)
        return AlertTask(
            cfg, db_target, NANNING, cov, lambda: [],
            LiveHub(cov, lambda v: (), lambda: now[0]), prometheus_client.CollectorRegistry(),
            lambda: now[0],
        )  # fmt: skip

    first = task()
    stop = asyncio.Event()
    run = asyncio.create_task(first.run(stop))
    for _ in range(3000):  # a 30 s deadline, polled
        if first.evaluations:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(run, 30)
    (fired,) = first.firing(None)
    assert (fired.rule, fired.since, fired.labels["node"]) == ("unacked", 100.0, NODE)
    again = task()
    done = asyncio.Event()
    done.set()
    await again.run(done)  # loads what is stored, then stops
    assert [(a.key, a.since, a.fired) for a in again.firing(None)] == [
        (fired.key, 100.0, fired.fired)
    ]
