"""The wall screen's fit, the city map's county labels, the search box's keyboard and the
date-range picker of the trend and the reports, in a real browser (headless Chromium driven by
Playwright) against a real ``shilian central run`` and mosquitto. Central's database is seeded
with four weeks of coverage history (so the trend exists); a third of the villages have a node
online. Every page fails its test on a console error or a request off localhost.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central import history
from central.history import DayRow, HistoryStore
from central.store import SqliteStore
from registry import Registry
from shilian.broker import Mosquitto
from tests.dashboard_client import Fleet
from tests.processes import ADMIN, ADMIN_PASSWORD, Central, wait_for
from tests.test_dashboard import chromium, open_dashboard, watched

pytestmark = pytest.mark.slow
# (Importing tests.test_dashboard skips this module too when playwright or chromium is missing.)

NANNING = Registry.from_package("4501")
COUNTIES = NANNING.children("4501")
#: Days of history before today: the trend and the reports have figures for each.
HISTORY_DAYS = 40
#: Desk laptop, the usual wall screen, a 4K wall screen.
VIEWPORTS = [(1366, 768), (1920, 1080), (3840, 2160)]


def _seed(db: Path, now: float) -> None:
    """Daily history for the kept units, coverage rising by a percent a day."""
    SqliteStore(db).close()
    hs = HistoryStore(db)
    try:
        today = history.local_day(now)
        rows = []
        for code in history.kept_units(NANNING):
            n = sum(1 for v in NANNING.villages() if v.code.startswith(code))
            for i in range(HISTORY_DAYS, 0, -1):
                day = (today - dt.timedelta(days=i)).isoformat()
                share = 0.3 + 0.01 * (HISTORY_DAYS - i)
                rows.append(DayRow(day, code, n, n // 2, int(n * share), 0.0, "snapshot"))
        hs.write(rows)
    finally:
        hs.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Central]:
    work = tmp_path_factory.mktemp("dashboard-wall")
    (work / "mosquitto").mkdir()
    broker = Mosquitto(workdir=work / "mosquitto")
    broker.start()
    central = Central(work / "central", broker.port)
    _seed(central.db, time.time())
    fleet: Fleet | None = None
    try:
        central.start()
        fleet = Fleet(broker.port)
        online = [f"{v.code}-a" for i, v in enumerate(NANNING.villages()) if i % 3 == 0]
        fleet.state(online, True)
        wait_for(lambda: central.get("/healthz")["nodes_online"] == len(online), what="online")
        yield central
    finally:
        if fleet is not None:
            fleet.close()
        central.close()
        broker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def _page(browser: Any, central: Central, width: int = 1366, height: int = 768) -> Any:
    ctx = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN")
    token = central.login(ADMIN, ADMIN_PASSWORD)["token"]
    ctx.add_cookies([{"name": "shilian_session", "value": token, "url": central.api}])
    return watched(ctx.new_page())


@pytest.fixture
def page(browser: Any, site: Central) -> Iterator[Any]:
    """A fresh 1366x768 page logged in as admin; fails on console errors or foreign requests."""
    pg = _page(browser, site)
    try:
        yield pg
    finally:
        pg.context.close()
    pg.rec.check()


# -- search box keyboard ------------------------------------------------------------------


def test_search_results_follow_the_arrow_keys_enter_opens_escape_closes(
    page: Any, site: Central
) -> None:
    open_dashboard(page, site)
    hits = site.get("/api/v1/dashboard/search?q=45010")["results"]
    assert len(hits) >= 3
    box = "[data-test=search]"
    page.click(box)
    page.keyboard.type("45010")
    page.wait_for_selector(f"[data-test=search-results] li[data-code='{hits[0]['code']}']")
    for key in ("ArrowDown", "ArrowDown", "ArrowDown", "ArrowUp"):
        page.keyboard.press(key)
    selected = "[data-test=search-results] li[aria-selected=true]"
    assert page.get_attribute(selected, "data-code") == hits[1]["code"]
    assert page.locator(selected).count() == 1
    page.keyboard.press("Enter")
    page.wait_for_function("c => location.hash == '#/u/' + c", arg=hits[1]["code"])
    assert page.is_hidden("[data-test=search-results]")
    # Up from no selection wraps to the last hit; Escape closes the list and keeps the page.
    page.click(box)
    page.keyboard.type("45010")
    page.wait_for_selector("[data-test=search-results] li[data-code]")
    page.keyboard.press("ArrowUp")
    assert page.get_attribute(selected, "data-code") == hits[-1]["code"]
    page.keyboard.press("Escape")
    page.wait_for_selector("[data-test=search-results]", state="hidden")
    assert page.evaluate("() => location.hash") == f"#/u/{hits[1]['code']}"


# -- date range of the trend and the reports ------------------------------------------------


def _trend_asks(page: Any) -> list[str]:
    """The query strings of the page's trend requests so far (recorded by :func:`_record`)."""
    asks: list[str] = page.asks
    return asks


def _record(page: Any) -> None:
    page.asks = []
    page.on(
        "request",
        lambda r: (
            page.asks.append(r.url.split("?", 1)[1])
            if "/api/v1/history/coverage?" in r.url
            else None
        ),
    )


def _trend_days(page: Any) -> list[str]:
    days: list[str] = page.evaluate(
        "() => window.__shilian.charts.trend.getOption().series[0].data.map(d => d.day)"
    )
    return days


def test_the_date_range_picker_drives_the_trend_the_reports_and_the_address(
    page: Any, site: Central
) -> None:
    county = COUNTIES[0].code
    today = dt.date.fromisoformat(site.get("/api/v1/history/coverage")["to"])
    _record(page)
    open_dashboard(page, site, f"/dashboard/#/u/{county}")
    card = "[data-test=trend-card]"
    page.wait_for_selector(f"{card}[data-days='30']")  # the default: 30 days up to today
    want = f"since={today - dt.timedelta(days=29)}&until={today}"
    assert _trend_asks(page)[-1] == f"code={county}&{want}"

    page.click("[data-test=range-preset][data-days='7']")
    since = today - dt.timedelta(days=6)
    page.wait_for_selector(f"{card}[data-range='{since}/{today}']")
    assert _trend_asks(page)[-1] == f"code={county}&since={since}&until={today}"
    assert _trend_days(page) == [(since + dt.timedelta(days=i)).isoformat() for i in range(7)]
    assert page.evaluate("() => location.search") == f"?since={since}&until={today}"
    for link in ("report-xlsx", "report-page"):
        assert page.get_attribute(f"[data-test={link}]", "href").endswith(
            f"&since={since}&until={today}"
        )
    page.click("[data-test=range-preset][data-days='90']")
    page.wait_for_selector(f"{card}[data-range='{today - dt.timedelta(days=89)}/{today}']")
    assert page.get_attribute(card, "data-days") == str(HISTORY_DAYS + 1)  # the history, today

    # A range typed in: the address keeps it across a reload and a drill-down.
    first, last = today - dt.timedelta(days=12), today - dt.timedelta(days=3)
    page.fill("[data-test=range-since]", first.isoformat())
    page.fill("[data-test=range-until]", last.isoformat())
    page.wait_for_selector(f"{card}[data-range='{first}/{last}']")
    assert _trend_days(page) == [(first + dt.timedelta(days=i)).isoformat() for i in range(10)]
    page.reload()
    page.wait_for_selector(f"{card}[data-range='{first}/{last}']")
    assert page.input_value("[data-test=range-since]") == first.isoformat()
    assert page.input_value("[data-test=range-until]") == last.isoformat()
    assert _trend_asks(page)[-1] == f"code={county}&since={first}&until={last}"
    page.evaluate("() => { location.hash = '#/u/4501'; }")
    page.wait_for_selector("[data-test=unit-name] >> text=南宁市")
    page.wait_for_selector(f"{card}[data-range='{first}/{last}']")
    assert _trend_asks(page)[-1] == f"code=4501&since={first}&until={last}"

    # A wrong range is explained, and nothing is asked.
    asked = len(_trend_asks(page))
    error = "[data-test=range-error]"
    page.fill("[data-test=range-since]", (last + dt.timedelta(days=1)).isoformat())
    page.wait_for_selector(f"{error}:has-text('开始日期不能晚于结束日期')")
    page.fill("[data-test=range-since]", "2024-01-01")
    page.wait_for_selector(f"{error}:has-text('时间范围最长 366 天')")
    assert len(_trend_asks(page)) == asked
    assert page.evaluate("() => location.search") == f"?since={first}&until={last}"
    page.click("[data-test=range-preset][data-days='30']")
    page.wait_for_selector(f"{error}", state="hidden")


def test_a_wrong_range_in_the_address_is_explained_in_english(page: Any, site: Central) -> None:
    _record(page)
    open_dashboard(page, site, "/dashboard/?lang=en&since=2026-11-20&until=2026-11-01")
    page.wait_for_selector(
        "[data-test=range-error]:has-text('The start date must not be after the end date')"
    )
    assert _trend_asks(page) == []
    assert page.get_attribute("[data-test=trend-card]", "data-range") is None
