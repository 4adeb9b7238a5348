"""The dashboard's operations features in a real browser (headless Chromium, Playwright): the
alert banner, reports, the 30-day trend, pinyin search, the last-seen filter and the node page's
commissioning link and role-dependent actions, against a real ``shilian central run`` and
mosquitto. Central's database is seeded before its start as a central that ran for a month
would have it: 29 days of coverage history, three nodes last seen two days ago, one
commissioning report. Every page fails its test on a console error or a request off localhost.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from central import history, pinyin
from central.history import DayRow, HistoryStore
from central.store import IntervalRow, NodeRow, SqliteStore
from registry import Registry
from shilian.broker import Mosquitto
from tests.dashboard_client import Fleet
from tests.processes import ADMIN, ADMIN_PASSWORD, Central, add_user, wait_for
from tests.test_dashboard import chromium, open_dashboard, screenshot, watched

pytestmark = pytest.mark.slow
# (Importing tests.test_dashboard skips this module too when playwright or chromium is missing.)

NANNING = Registry.from_package("4501")
COUNTY = "450102"
TOWNSHIP, STALE_TOWNSHIP = (u.code for u in NANNING.children(COUNTY)[:2])
VILLAGES = [u.code for u in NANNING.children(TOWNSHIP)]
ONLINE = [f"{v}-a" for v in VILLAGES[:4]]
STALE = [f"{u.code}-a" for u in NANNING.children(STALE_TOWNSHIP)[:3]]
#: The alert rule: a node of TOWNSHIP offline for more than 0.03 min (1.8 s).
RULE_MINUTES = 0.03
PASSWORDS = {"viewer": "pw-h5-viewer-1", "operator": "pw-h5-operator-1"}


def _seed(db: Path, now: float) -> None:
    """A month of history, nodes silent for two days, a commissioning report."""
    store = SqliteStore(db)
    try:
        old = now - 2 * 86400
        rows: list[Any] = []
        for node in STALE:
            rows.append(
                NodeRow(
                    node_id=node,
                    village=node[:12],
                    county=node[:6],
                    state="offline",
                    state_since=old,
                    state_reason="will",
                    boot_id="b",
                    birth_seq=1,
                    health_interval_s=30.0,
                    sw_version="0.1",
                    first_seen=now - 30 * 86400,
                    last_seen=old,
                )
            )
            rows.append(IntervalRow(node, "offline", old, "will"))
        store.apply(rows)
        report = {"node_id": ONLINE[0], "ok": True, "started_at": now - 86400, "steps": []}
        store.conn.execute(
            "INSERT INTO commissioning_reports(node_id, uploaded_at, ok, technician, report)"
            " VALUES (?,?,?,?,?)",
            (ONLINE[0], now - 86400, 1, "李工", json.dumps(report)),
        )
    finally:
        store.close()
    hs = HistoryStore(db)
    try:
        units = history.kept_units(NANNING)
        today = history.local_day(now)
        days = []
        for i in range(29, 0, -1):
            day = today - dt.timedelta(days=i)
            share = 0.5 + 0.01 * (29 - i)
            for code in units:
                n = _villages(code)
                days.append(
                    DayRow(day.isoformat(), code, n, n // 2, int(n * share) // 2, 0.0, "snapshot")
                )
        hs.write(days)
    finally:
        hs.close()


def _villages(code: str) -> int:
    return sum(1 for v in NANNING.villages() if v.code.startswith(code))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Central, Fleet]]:
    work = tmp_path_factory.mktemp("dashboard-ops")
    (work / "mosquitto").mkdir()
    broker = Mosquitto(workdir=work / "mosquitto")
    broker.start()
    central = Central(work / "central", broker.port)
    conf = work / "central" / "central.toml"
    conf.write_text(
        conf.read_text(encoding="utf-8")
        + f'[alerts]\neval_interval_s = 0.3\n[[alerts.rules]]\nid = "offline"\n'
        f'kind = "node_offline"\ncode = "{TOWNSHIP}"\nminutes = {RULE_MINUTES}\n',
        encoding="utf-8",
    )
    _seed(central.db, time.time())
    for role, pw in PASSWORDS.items():
        add_user(central.db, f"h5{role}", role, "", pw)
    fleet: Fleet | None = None
    try:
        central.start()
        fleet = Fleet(broker.port)
        fleet.state(ONLINE, True)
        fleet.alarm(ONLINE[1], 1)
        wait_for(lambda: central.get("/healthz")["nodes_online"] == len(ONLINE), what="online")
        wait_for(lambda: central.get(f"/api/v1/alarms?node={ONLINE[1]}")["total"] == 1)
        yield central, fleet
    finally:
        if fleet is not None:
            fleet.close()
        central.close()
        broker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def _page(browser: Any, central: Central, user: str = ADMIN, password: str = ADMIN_PASSWORD) -> Any:
    ctx = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    token = central.login(user, password)["token"]
    ctx.add_cookies([{"name": "shilian_session", "value": token, "url": central.api}])
    return watched(ctx.new_page())


@pytest.fixture
def page(browser: Any, site: tuple[Central, Fleet]) -> Iterator[Any]:
    """A fresh 1366x768 page logged in as admin; fails on console errors or foreign requests."""
    pg = _page(browser, site[0])
    try:
        yield pg
    finally:
        pg.context.close()
    pg.rec.check()


def test_alert_banner_appears_when_a_node_is_offline_past_the_rule_and_clears(
    page: Any, site: tuple[Central, Fleet]
) -> None:
    central, fleet = site
    node = ONLINE[0]
    open_dashboard(page, central)
    page.wait_for_selector("[data-test=live].on")
    assert page.get_attribute("[data-test=alerts]", "data-count") == "0"
    assert not page.is_visible("[data-test=alerts]")
    fleet.state([node], False)
    page.wait_for_selector(f"[data-test=alerts] li[data-alert='offline:{node}']")
    banner = page.inner_text("[data-test=alerts]")
    assert "正在告警 1 条" in banner and node in banner and "离线超过" in banner
    assert central.get("/api/v1/alerts")["firing"][0]["key"] == node
    screenshot(page, "alerts")
    fleet.state([node], True)
    page.wait_for_selector("[data-test=alerts]", state="hidden")
    assert page.get_attribute("[data-test=alerts]", "data-count") == "0"


def test_report_download_and_printable_page_totals_match_the_api(
    page: Any, site: tuple[Central, Fleet]
) -> None:
    central, _ = site
    open_dashboard(page, central, f"/dashboard/#/u/{COUNTY}")
    page.wait_for_selector("[data-test=children-table] tr[data-code]")
    api = central.get(f"/api/v1/coverage/{COUNTY}")
    want = (api["unit"]["villages"], api["unit"]["provisioned"], api["unit"]["covered"])
    with page.expect_download() as dl:
        page.click("[data-test=report-xlsx]")
    assert dl.value.suggested_filename.endswith(".xlsx")
    wb = openpyxl.load_workbook(io.BytesIO(Path(dl.value.path()).read_bytes()))
    rows = list(wb["汇总"].iter_rows(values_only=True))
    assert rows[3][:2] == (COUNTY, "兴宁区") and rows[3][3:6] == want
    assert rows[-1][1] == "合计" and rows[-1][3:6] == want
    days = list(wb["逐日明细"].iter_rows(values_only=True))[1:]
    assert len({d[0] for d in days}) == 30  # 29 days of history and today's live figures
    with page.context.expect_page() as popup:
        page.click("[data-test=report-page]")
    report = popup.value
    report.wait_for_selector("[data-test=report-summary] tr.total")
    total = report.locator("[data-test=report-summary] tr.total td").all_inner_texts()
    assert [int(x.replace(",", "")) for x in total[3:6]] == list(want)
    assert report.locator("[data-test=report-daily] tbody tr").count() == 30
    assert report.locator("[data-test=report-trend] polyline").count() == 1
    report.set_viewport_size({"width": 900, "height": 1200})
    screenshot(report, "report")
    pdf = report.pdf(format="A4")  # the print layout renders (headless Chromium prints to PDF)
    assert pdf.startswith(b"%PDF")


def test_trend_chart_shows_the_history_and_today(page: Any, site: tuple[Central, Fleet]) -> None:
    central, _ = site
    open_dashboard(page, central, f"/dashboard/#/u/{COUNTY}")
    page.wait_for_selector("[data-test=trend-card]:not([hidden])")
    assert page.get_attribute("[data-test=trend-card]", "data-days") == "30"
    points = page.evaluate(
        "() => window.__shilian.charts.trend.getOption().series[0].data"
        ".map(d => [d.day, d.covered, d.source])"
    )
    covered = central.get(f"/api/v1/coverage/{COUNTY}")["unit"]["covered"]
    assert points[-1][1:] == [covered, "live"]
    assert points[0][2] == "snapshot"
    screenshot(page, "trend")


def test_pinyin_initials_find_a_village(page: Any, site: tuple[Central, Fleet]) -> None:
    central, _ = site
    open_dashboard(page, central)
    village = NANNING.unit(VILLAGES[2])
    assert village is not None
    initials = "".join(r[0][0] for r in pinyin.readings(village.name))
    page.fill("[data-test=search]", initials)
    page.click(f"[data-test=search-results] li[data-code='{village.code}']")
    page.wait_for_function(f"() => location.hash == '#/u/{village.code}'")
    page.wait_for_selector(f"[data-test=unit-name] >> text={village.name}")
    page.fill("[data-test=search]", "xnq")
    page.wait_for_selector("[data-test=search-results] li[data-code='450102']")


def test_last_seen_filter_keeps_the_units_with_silent_nodes(
    page: Any, site: tuple[Central, Fleet]
) -> None:
    central, _ = site
    open_dashboard(page, central, f"/dashboard/#/u/{COUNTY}")
    page.wait_for_selector("[data-test=children-table] tr[data-code]")
    page.select_option("[data-test=seen-filter]", "24h")
    page.wait_for_selector("[data-test=children-table] td[data-col=unseen]")
    codes = page.locator("[data-test=children-table] tr[data-code]").evaluate_all(
        "rows => rows.map(r => [r.dataset.code, r.querySelector('[data-col=unseen]').textContent])"
    )
    assert codes == [[STALE_TOWNSHIP, "3"]]
    before = time.time() - 86400
    listed = central.get(f"/api/v1/nodes?county={COUNTY}&seen_before={before}")
    assert sorted(n["node_id"] for n in listed["nodes"]) == sorted(STALE)
    page.select_option("[data-test=seen-filter]", "7d")
    page.wait_for_selector("[data-test=children-table] tbody:empty", state="attached")
    page.select_option("[data-test=seen-filter]", "any")
    page.wait_for_selector(f"[data-test=children-table] tr[data-code='{TOWNSHIP}']")


def test_node_page_shows_the_commissioning_report_and_what_the_role_may_do(
    browser: Any, site: tuple[Central, Fleet]
) -> None:
    central, _ = site
    pages = []
    try:
        admin = _page(browser, central)
        pages.append(admin)
        open_dashboard(admin, central, f"/dashboard/#/n/{ONLINE[0]}")
        admin.wait_for_selector("[data-test=commissioning][data-present='1']")
        href = admin.get_attribute("[data-test=commissioning-link]", "href")
        assert href == f"/dashboard/commissioning/{ONLINE[0]}"
        assert "李工" in admin.inner_text("[data-test=commissioning]")
        admin.wait_for_selector("[data-test=actions] button[data-cmd=ping]")
        assert admin.locator("[data-test=actions] button[data-cmd=get-config]").count() == 1
        screenshot(admin, "node-actions")

        viewer = _page(browser, central, "h5viewer", PASSWORDS["viewer"])
        pages.append(viewer)
        open_dashboard(viewer, central, f"/dashboard/#/n/{ONLINE[1]}")
        viewer.wait_for_selector("[data-test=view-only]")
        assert viewer.locator("[data-test=actions] button").count() == 0
        assert viewer.locator("[data-test=open-alarms] button").count() == 0
        assert viewer.get_attribute("[data-test=commissioning]", "data-present") == "0"

        operator = _page(browser, central, "h5operator", PASSWORDS["operator"])
        pages.append(operator)
        open_dashboard(operator, central, f"/dashboard/#/n/{ONLINE[1]}")
        operator.wait_for_selector("[data-test=open-alarms] button[data-ack]")
        assert operator.locator("[data-test=actions] button").count() == 0  # no commands
        operator.click("[data-test=open-alarms] button[data-ack]")
        operator.wait_for_selector("[data-test=open-alarms] button[data-ack]", state="detached")
        acked = central.get(f"/api/v1/alarms?node={ONLINE[1]}&state=acked")["alarms"]
        assert acked[0]["ack"]["by"] == "h5operator"
    finally:
        for pg in pages:
            pg.context.close()
    for pg in pages:
        pg.rec.check()


def test_a_township_report_lists_its_villages_today(site: tuple[Central, Fleet]) -> None:
    """Villages have no daily history: a township's report has them with today's figures."""
    central, _ = site
    with central.open(f"/api/v1/reports/coverage.xlsx?code={TOWNSHIP}") as r:
        wb = openpyxl.load_workbook(io.BytesIO(r.read()))
    rows = list(wb["汇总"].iter_rows(values_only=True))
    unit, *villages, total = rows[3:]
    api = central.get(f"/api/v1/coverage/{TOWNSHIP}")
    assert unit[0] == TOWNSHIP and [v[0] for v in villages] == VILLAGES
    assert total[1] == "合计" and total[3:6] == unit[3:6]
    assert unit[3:6] == (
        api["unit"]["villages"],
        api["unit"]["provisioned"],
        api["unit"]["covered"],
    )
