"""The demo's month of history (shilian.demo_history): consistent with the registry and the
fleet's nodes, the same for the same seed, and — in a central started the way ``shilian demo``
starts it, over a database seeded the way it seeds it — a 30-day trend, alerts firing and
resolved, alarms acknowledged and closed by someone at some time, reports and commissioning
records, on the dashboard in a real browser.
"""

from __future__ import annotations

import csv
import io
import itertools
import random
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registry import Registry
from shilian import demo, demo_history
from shilian.broker import Mosquitto
from shilian.churn import ChurnPlan
from tests.processes import Central

NANNING = Registry.from_package("4501")
NOW = 1_764_900_000.0


def _plan(seed: int = demo.DEMO_SEED) -> tuple[ChurnPlan, demo_history.History]:
    villages = [u.code for u in NANNING.villages()]
    fleet = ChurnPlan(villages, 0.7688, random.Random(seed), start_time=NOW)
    return fleet, demo_history.plan(fleet.nodes, fleet.up, NOW, random.Random(seed))


def test_the_month_is_the_fleets_nodes_and_the_same_for_the_same_seed() -> None:
    fleet, h = _plan()
    assert [n.node_id for n in h.nodes] == fleet.nodes
    assert all(NANNING.has_village(n.village) for n in h.nodes)
    assert _plan()[1] == h
    assert _plan(7)[1] != h
    # A node's intervals alternate from its first sighting, and its stored state is the last.
    by_node: dict[str, list[Any]] = {}
    for r in h.intervals:
        by_node.setdefault(r.node_id, []).append(r)
    for n in h.nodes:
        rows = by_node[n.node_id]
        assert rows[0].start == n.first_seen and rows[0].state == "online"
        assert all(a.state != b.state and a.start < b.start for a, b in itertools.pairwise(rows))
        assert (rows[-1].state, rows[-1].start) == (n.state, n.state_since)
        assert (n.state == "online") == (n.node_id in fleet.up)

    # Events happen while their node was online, with seqs in time order.
    def online_at(node: str, t: float) -> bool:
        rows = by_node[node]
        now = max((r for r in rows if r.start <= t), key=lambda r: r.start, default=None)
        return now is not None and now.state == "online"

    assert h.events and all(online_at(e.node_id, e.ts) for e in h.events)
    seqs: dict[str, list[int]] = {}
    for e in sorted(h.events, key=lambda e: e.ts):
        seqs.setdefault(e.node_id, []).append(e.seq)
    assert all(s == list(range(1, len(s) + 1)) for s in seqs.values())
    handled = [a for a in h.alarms if a.ack is not None]
    assert len(handled) >= 0.9 * len(h.alarms) and any(a.ack is None for a in h.alarms)
    assert all(a.ack is None or a.ack[1] > a.ts for a in h.alarms)
    assert all(a.close is None or (a.ack and a.close[1] > a.ack[1]) for a in h.alarms)
    assert all(NOW - demo_history.DAYS * 86400 <= a.ts < NOW for a in h.alarms)


def test_the_rules_are_valid_config() -> None:
    from central.alerts import AlertsConfig

    cfg = AlertsConfig.model_validate(tomllib.loads(demo_history.rules_toml(NANNING))["alerts"])
    kinds = {r.kind for r in cfg.rules}
    assert kinds == {"coverage_below", "node_offline", "alarm_unacked"}
    counties = [r for r in cfg.rules if r.kind == "coverage_below"]
    assert len(counties) == 12 and all(r.threshold_pct == 80 for r in counties)


# -- a demo-like central ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Central]:
    work = tmp_path_factory.mktemp("demo-history")
    (work / "mosquitto").mkdir()
    broker = Mosquitto(workdir=work / "mosquitto")
    broker.start()
    c = Central(work / "central", broker.port)
    conf = work / "central" / "central.toml"
    conf.write_text(
        conf.read_text(encoding="utf-8")
        + "[alerts]\neval_interval_s = 1\n"
        + demo_history.rules_toml(NANNING),
        encoding="utf-8",
    )
    demo.seed_history(c.db, "4501", 0.7688, time.time())
    try:
        c.start()
        yield c
    finally:
        c.close()
        broker.stop()


@pytest.mark.slow
def test_a_demo_central_has_a_month_of_trend_alerts_alarms_and_reports(central: Central) -> None:
    from tests.processes import wait_for

    trend = central.get("/api/v1/history/coverage?code=4501&days=30")["days"]
    assert len(trend) >= 30 and trend[0]["source"] == "snapshot"
    assert trend[0]["ratio"] < trend[-2]["ratio"]  # the month improves
    firing = wait_for(lambda: central.get("/api/v1/alerts")["firing"], what="alerts firing")
    rules = {a["rule"] for a in firing}
    assert "alarm-unacked" in rules and any(r.startswith("coverage-") for r in rules), rules
    resolved = central.get("/api/v1/alerts")["resolved"]
    assert resolved and all(a["rule"] == "alarm-unacked" and a["resolved"] for a in resolved)
    closed = central.get("/api/v1/alarms?state=closed&limit=5")
    assert closed["total"] > 50
    a = closed["alarms"][0]
    assert a["ack"]["by"] in demo_history.OPERATORS and a["close"]["at"] > a["ack"]["at"] > a["ts"]
    text = central.open("/api/v1/reports/coverage.csv?code=4501").read().decode("utf-8-sig")
    days = {r[0] for r in csv.reader(io.StringIO(text)) if r and r[0][:2] == "20"}
    assert len(days) >= 30
    node = central.get("/api/v1/nodes?county=450102&limit=1")["nodes"][0]["node_id"]
    record = central.get(f"/api/v1/nodes/{node}/commissioning")["latest"]
    assert record["ok"] and record["technician"] in demo_history.TECHNICIANS
    audit = central.get("/api/v1/audit?action=alarm_close&limit=1")
    assert (
        audit["total"] == closed["total"] and audit["entries"][0]["user"] in demo_history.OPERATORS
    )


@pytest.mark.slow
def test_the_demo_dashboard_shows_the_month(central: Central, tmp_path: Path) -> None:
    from tests.test_dashboard import chromium, open_dashboard, screenshot, watched

    with chromium() as browser:
        ctx = browser.new_context(viewport={"width": 1366, "height": 900}, locale="zh-CN")
        ctx.add_cookies([{"name": "shilian_session", "value": central.token, "url": central.api}])
        page = watched(ctx.new_page())
        try:
            open_dashboard(page, central)
            page.wait_for_selector("[data-test=trend-card]:not([hidden])")
            n = page.evaluate(
                "() => window.__shilian.charts.trend.getOption().series[0].data.length"
            )
            assert n >= 30
            page.wait_for_selector("[data-test=alerts]:not([hidden])")
            assert int(page.get_attribute("[data-test=alerts]", "data-count")) > 0
            screenshot(page, "demo-overview")
            open_dashboard(page, central, "/dashboard/#/alarms?state=closed")
            page.wait_for_selector("[data-test=alarm-close-by]")
            assert any(
                op in page.inner_text("[data-test=alarm-console]") for op in demo_history.OPERATORS
            )
            page.rec.check()
        finally:
            ctx.close()
