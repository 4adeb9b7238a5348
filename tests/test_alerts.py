"""Alerts: the pure evaluator, the rule models, webhook delivery against a real
aiohttp receiver, and end to end with a real central and mosquitto: a node goes offline, the
alert fires after N, the webhook arrives, the node comes back, the resolved webhook arrives."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import prometheus_client
import pytest
from pydantic import ValidationError

from central.alerts import (
    MAX_ALERTS_PER_RULE,
    AlertRule,
    AlertsConfig,
    Condition,
    Evaluator,
    WebhookConfig,
    observe_coverage,
    observe_offline,
)
from central.config import CentralConfig
from central.webhooks import WEBHOOK_QUEUE, WebhookSender, webhook_body
from registry import Registry
from shilian.broker import Mosquitto
from tests.dashboard_client import Client, Fleet, Receiver, add_user
from tests.peers import program
from tests.processes import Central, wait_for

NANNING = Registry.from_package("4501")
TOWNSHIP = NANNING.children("450102")[0].code
VILLAGES = [u.code for u in NANNING.children(TOWNSHIP)]
RULES_FILE = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "shilian-alerts.yml"


def _rule(**kw: object) -> AlertRule:
    return AlertRule.model_validate({"id": "r", "kind": "node_offline", "minutes": 5, **kw})


def _offline(node: str, since: float) -> Condition:
    return observe_offline(_rule(), [(node, since)], {}, since)[0]


# -- rules and the evaluator (pure) ---------------------------------------------------------------


def test_rules_are_validated_with_the_field_that_is_wrong() -> None:
    with pytest.raises(ValidationError, match="threshold_pct"):
        AlertRule.model_validate({"id": "c", "kind": "coverage_below"})
    with pytest.raises(ValidationError, match="minutes"):
        AlertRule.model_validate({"id": "n", "kind": "node_offline"})
    with pytest.raises(ValidationError, match="duplicate rule id"):
        AlertsConfig.model_validate(
            {"rules": [{"id": "a", "kind": "node_offline", "minutes": 1}] * 2}
        )
    with pytest.raises(ValidationError):
        WebhookConfig.model_validate({"url": "ftp://x"})
    cfg = CentralConfig.model_validate(
        {
            "alerts": {
                "rules": [{"id": "cov", "kind": "coverage_below", "threshold_pct": 80}],
                "webhooks": [{"url": "http://127.0.0.1:9/hook"}],
            }
        }
    )
    assert cfg.alerts.rules[0].threshold_pct == 80


def test_an_offline_node_fires_after_n_minutes_and_resolves_when_back() -> None:
    ev = Evaluator()
    ev.set_rules([_rule(minutes=5)])
    node = f"{VILLAGES[0]}-a"
    assert ev.step({"r": [_offline(node, 1000.0)]}, 1000.0 + 299) == []
    [t] = ev.step({"r": [_offline(node, 1000.0)]}, 1000.0 + 300)
    assert t.status == "firing" and t.alert.key == node and t.alert.since == 1000.0
    assert "离线超过 5 分钟" in t.alert.zh and "offline for more than 5 min" in t.alert.en
    assert ev.step({"r": [_offline(node, 1000.0)]}, 1400.0) == []  # announced once
    [t] = ev.step({"r": []}, 1500.0)
    assert t.status == "resolved" and t.alert.resolved == 1500.0
    assert ev.firing == {}


def test_coverage_rule_holds_for_its_minutes_and_a_changed_rule_starts_over() -> None:
    rule = AlertRule(id="cov", kind="coverage_below", threshold_pct=80, minutes=1)
    ev = Evaluator()
    ev.set_rules([rule])
    low = observe_coverage(rule, 0.5, 5, 10, "兴宁区")
    assert observe_coverage(rule, 0.8, 8, 10, "兴宁区") == []  # at the threshold: fine
    assert ev.step({"cov": low}, 0.0) == []
    assert ev.step({"cov": low}, 59.0) == []
    assert ev.step({"cov": []}, 60.0) == []  # recovered before the minute: never fired
    assert ev.step({"cov": low}, 100.0) == []  # pending again from 100
    [t] = ev.step({"cov": low}, 160.0)
    assert t.status == "firing" and "低于 80%" in t.alert.zh
    ev.set_rules([rule.model_copy(update={"threshold_pct": 40.0})])
    [t] = ev.step({"cov": observe_coverage(ev.rules["cov"], 0.5, 5, 10, "兴宁区")}, 170.0)
    assert t.status == "resolved"  # 50% is not below 40%: the old alert ends


def test_removed_rule_resolves_its_alerts_and_restored_alerts_keep_their_start() -> None:
    ev = Evaluator()
    ev.set_rules([_rule(minutes=1)])
    node = f"{VILLAGES[0]}-a"
    [fired] = ev.step({"r": [_offline(node, 0.0)]}, 60.0)
    again = Evaluator()
    again.set_rules([_rule(minutes=1)])
    again.restore([fired.alert])
    assert again.step({"r": [_offline(node, 0.0)]}, 500.0) == []  # not announced twice
    again.set_rules([])
    [t] = again.step({}, 600.0)
    assert t.status == "resolved" and t.alert.fired == 60.0


def test_one_rule_fires_at_most_its_cap() -> None:
    ev = Evaluator()
    ev.set_rules([_rule(minutes=1)])
    conds = [_offline(f"{VILLAGES[0]}-n{i}", 0.0) for i in range(MAX_ALERTS_PER_RULE + 10)]
    fired = ev.step({"r": conds}, 100.0)
    assert len(fired) == MAX_ALERTS_PER_RULE


def test_webhook_body_is_alertmanager_like_with_chinese_first() -> None:
    ev = Evaluator()
    ev.set_rules([_rule(minutes=1)])
    node = f"{VILLAGES[0]}-a"
    [t] = ev.step({"r": [_offline(node, 0.0)]}, 60.0)
    body = webhook_body(t)
    assert body["status"] == "firing" and body["version"] == "4"
    [a] = body["alerts"]
    assert a["labels"]["alertname"] == "r" and a["labels"]["node"] == node
    assert a["startsAt"] == "1970-01-01T00:01:00Z" and a["endsAt"] is None
    assert body["text"].startswith("【告警】节点") and "[FIRING]" in body["text"]


# -- webhook delivery against a real receiver -----------------------------------------------------


def _counter() -> prometheus_client.Counter:
    return prometheus_client.Counter(
        "t_webhook", "t", ["outcome"], registry=prometheus_client.CollectorRegistry()
    )


def _count(c: prometheus_client.Counter, outcome: str) -> float:
    return float(c.labels(outcome)._value.get())


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def _drain(sender: WebhookSender) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(sender.run(session))
        try:
            for _ in range(6000):  # a 60 s deadline, polled
                if not sender.queue:
                    break
                await asyncio.sleep(0.01)
            assert not sender.queue
        finally:
            task.cancel()


async def test_webhook_retries_a_5xx_then_delivers_and_does_not_retry_a_4xx() -> None:
    rx = Receiver([503, 500, 200, 400])
    try:
        outcomes = _counter()
        waits: list[float] = []

        async def sleep(s: float) -> None:
            waits.append(s)
            await asyncio.sleep(0)

        sender = WebhookSender(WebhookConfig(url=rx.url), outcomes, sleep=sleep)
        sender.put({"n": 1})
        sender.put({"n": 2})  # answered 400: the receiver refuses it
        await asyncio.wait_for(_drain(sender), 60)
        assert rx.bodies == [{"n": 1}]
        assert rx.attempts == 4
        assert _count(outcomes, "delivered") == 1 and _count(outcomes, "retried") == 2
        assert _count(outcomes, "rejected") == 1
        # Full jitter under a doubling cap: 0..1 s, then 0..2 s.
        assert len(waits) == 2 and 0 <= waits[0] <= 1 and 0 <= waits[1] <= 2
    finally:
        rx.close()


async def test_webhook_to_a_dead_receiver_gives_up_and_the_queue_is_bounded() -> None:
    from shilian.broker import free_port

    outcomes = _counter()
    cfg = WebhookConfig(url=f"http://127.0.0.1:{free_port()}/hook", max_attempts=3, timeout_s=2)
    sender = WebhookSender(cfg, outcomes, sleep=_no_sleep)
    for i in range(WEBHOOK_QUEUE + 5):
        sender.put({"n": i})
    assert len(sender.queue) == WEBHOOK_QUEUE and _count(outcomes, "dropped") == 5
    while len(sender.queue) > 2:
        sender.queue.pop()
    await asyncio.wait_for(_drain(sender), 60)
    assert _count(outcomes, "failed") == 2 and _count(outcomes, "retried") == 4


# -- end to end: a real central -------------------------------------------------------------------


@pytest.fixture
def site(broker: Mosquitto, tmp_path: Path) -> Iterator[tuple[Central, Fleet, Receiver, Client]]:
    rx = Receiver()
    central = Central(tmp_path / "central", broker.port)
    conf = tmp_path / "central" / "central.toml"
    conf.write_text(
        conf.read_text(encoding="utf-8")
        + f"""
[alerts]
eval_interval_s = 0.3
[[alerts.rules]]
id = "offline"
kind = "node_offline"
code = "{TOWNSHIP}"
minutes = 0.03
severity = "critical"
[[alerts.webhooks]]
url = "{rx.url}"
""",
        encoding="utf-8",
    )
    add_user(tmp_path / "central" / "central.sqlite3", "h5admin", "admin")
    add_user(tmp_path / "central" / "central.sqlite3", "h5viewer", "viewer")
    fleet: Fleet | None = None
    try:
        central.start()
        fleet = Fleet(broker.port)
        yield central, fleet, rx, Client(central.api, "h5admin")
    finally:
        if fleet is not None:
            fleet.close()
        central.close()
        rx.close()


@pytest.mark.slow
def test_node_offline_fires_a_webhook_after_n_and_resolves_when_back(
    site: tuple[Central, Fleet, Receiver, Client],
) -> None:
    central, fleet, rx, client = site
    node, other = f"{VILLAGES[0]}-a", f"{VILLAGES[1]}-a"
    fleet.state([node, other], True)
    wait_for(lambda: client.get("/healthz")["nodes_online"] == 2, what="nodes online")
    fleet.state([node], False)
    wait_for(lambda: rx.bodies, what="firing webhook")
    [fired] = rx.bodies
    assert fired["status"] == "firing"
    assert fired["alerts"][0]["labels"]["node"] == node
    assert fired["alerts"][0]["labels"]["severity"] == "critical"
    assert "离线超过" in fired["text"]
    listed = client.get("/api/v1/alerts")
    assert [a["key"] for a in listed["firing"]] == [node]
    # The condition held for the rule's 1.8 s before it fired (since = when the node went off).
    a = listed["firing"][0]
    assert a["fired"] - a["since"] >= 0.03 * 60
    assert client.get(f"/api/v1/alerts?code={TOWNSHIP}")["firing"]
    assert client.get("/api/v1/alerts?code=450103")["firing"] == []
    fleet.state([node], True)
    wait_for(lambda: len(rx.bodies) == 2, what="resolved webhook")
    assert rx.bodies[1]["status"] == "resolved"
    assert rx.bodies[1]["alerts"][0]["endsAt"] is not None
    assert client.get("/api/v1/alerts")["firing"] == []
    assert client.get("/api/v1/alerts")["resolved"][0]["key"] == node
    metrics = urlopen_text(central.api + "/metrics")
    assert 'shilian_webhook_deliveries_total{outcome="delivered"} 2.0' in metrics


@pytest.mark.slow
def test_admin_replaces_the_rules_and_they_survive_a_restart(
    site: tuple[Central, Fleet, Receiver, Client], tmp_path: Path
) -> None:
    central, _, rx, client = site
    rules = [{"id": "cov", "kind": "coverage_below", "code": TOWNSHIP, "threshold_pct": 100}]
    status, body = client.raw("PUT", "/api/v1/alerts/rules", {"rules": [{"id": "x"}]})
    assert status == 400 and b"bad_rules" in body
    viewer = Client(central.api, "h5viewer")
    assert viewer.raw("PUT", "/api/v1/alerts/rules", {"rules": rules})[0] == 403
    out = client.call("PUT", "/api/v1/alerts/rules", {"rules": rules})
    assert out["source"] == "api" and out["rules"][0]["id"] == "cov"
    # No node in the township: coverage 0% < 100% fires at once.
    wait_for(lambda: any(b["alerts"][0]["labels"]["alertname"] == "cov" for b in rx.bodies))
    central.close()
    central.start()
    fresh = Client(central.api, "h5admin")
    assert fresh.get("/api/v1/alerts/rules")["source"] == "api"
    firing = wait_for(lambda: fresh.get("/api/v1/alerts")["firing"], what="alert kept")
    assert firing[0]["rule"] == "cov"
    assert sum(1 for b in rx.bodies if b["status"] == "firing") == 1  # not announced again


def urlopen_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


# -- Prometheus rules -----------------------------------------------------------------------------


def test_prometheus_rules_pass_promtool() -> None:
    promtool = program("promtool", "apt-get install prometheus")
    out = subprocess.run(
        [promtool, "check", "rules", str(RULES_FILE)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
