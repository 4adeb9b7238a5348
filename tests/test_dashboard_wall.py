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
from tests.test_dashboard import chromium, open_dashboard, screenshot, watched

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
def fleet_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Central, Fleet]]:
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
        yield central, fleet
    finally:
        if fleet is not None:
            fleet.close()
        central.close()
        broker.stop()


@pytest.fixture(scope="module")
def site(fleet_site: tuple[Central, Fleet]) -> Central:
    return fleet_site[0]


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


def test_a_former_name_finds_the_renamed_county(page: Any, site: Central) -> None:
    """Officers and old documents still say 横县 (横州市 since 2021) and 武鸣县 (武鸣区)."""
    open_dashboard(page, site)
    for typed, code, name in (("横县", "450181", "横州市"), ("wmx", "450110", "武鸣区")):
        page.fill("[data-test=search]", typed)
        hit = f"[data-test=search-results] li[data-code='{code}']"
        page.wait_for_selector(hit)
        assert (
            page.inner_text(f"{hit} [data-test=former]")
            == f"原名 {typed if typed != 'wmx' else '武鸣县'}"
        )
        page.keyboard.press("Enter")
        page.wait_for_function("c => location.hash == '#/u/' + c", arg=code)
        page.wait_for_selector(f"[data-test=unit-name] >> text={name}")


def test_a_node_id_opens_the_node(page: Any, site: Central) -> None:
    """An officer reads a node id off an alert, a report or a phone call and types it."""
    village = next(iter(NANNING.villages()))  # its node is online (fleet_site)
    node = f"{village.code}-a"
    open_dashboard(page, site)
    page.fill("[data-test=search]", node)
    hit = f"[data-test=search-results] li[data-node='{node}']"
    page.wait_for_selector(hit)
    assert page.locator("[data-test=search-results] li").first.get_attribute("data-node") == node
    assert "在线" in page.inner_text(hit) and village.name in page.inner_text(hit)
    page.keyboard.press("Enter")
    page.wait_for_function("n => location.hash == '#/n/' + n", arg=node)
    page.wait_for_selector("[data-test=node-state][data-state=online]")
    # The village's code and a dash list the village's nodes; an unknown node finds none.
    assert [
        n["node_id"] for n in site.get(f"/api/v1/dashboard/search?q={village.code}-")["nodes"]
    ] == [node]
    assert site.get(f"/api/v1/dashboard/search?q={village.code}-zz")["nodes"] == []


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


# -- the wall screen fits the screen -----------------------------------------------------------

#: Boxes of an element and of every visible element it must not cover: the header's items, the
#: banners and the cards (minus the element's own ancestors and descendants).
OVERLAPS_JS = """sel => {
  const me = document.querySelector(sel);
  const box = (e) => e.getBoundingClientRect();
  const others = [...document.querySelectorAll(
    "header > *, body > section, #view > .grid > *, [data-test=wall-focus] .grid > *")]
    .filter((e) => !e.contains(me) && !me.contains(e) && e.getClientRects().length);
  const a = box(me);
  return others.filter((e) => {
    const b = box(e);
    return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  }).map((e) => e.outerHTML.slice(0, 80));
}"""


def _rgb(color: str) -> tuple[int, int, int]:
    c = color.strip().lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _distance(a: str, b: str) -> float:
    return float(sum((x - y) ** 2 for x, y in zip(_rgb(a), _rgb(b), strict=True)) ** 0.5)


def _wall(browser: Any, site: Central, width: int, height: int) -> Any:
    pg = _page(browser, site, width, height)
    pg.goto(site.api + "/dashboard/?wall=1&rotate=2")
    pg.wait_for_selector("[data-test=wall-focus][data-code]")
    pg.wait_for_selector("[data-test=trend-card][data-range]")
    pg.wait_for_selector("[data-test=session]")
    return pg


def _fits(pg: Any) -> None:
    size = pg.evaluate(
        "() => { const s = document.scrollingElement; "
        "return [s.scrollWidth, s.scrollHeight, innerWidth, innerHeight]; }"
    )
    assert size[0] <= size[2] and size[1] <= size[3], size  # nothing below the fold, no scrollbar


def test_the_wall_screen_fits_1366_1920_and_4k_screens_and_scales_with_them(
    browser: Any, site: Central
) -> None:
    fonts, maps = [], []
    for width, height in VIEWPORTS:
        pg = _wall(browser, site, width, height)
        try:
            _fits(pg)
            for sel in ("[data-test=session]", "[data-test=wall-focus-label]"):
                assert pg.evaluate(OVERLAPS_JS, sel) == [], (width, sel)
            fonts.append(pg.evaluate("() => parseFloat(getComputedStyle(document.body).fontSize)"))
            maps.append(pg.evaluate("() => window.__shilian.charts.map.getWidth()"))
            # The focus is its own colour: not a warning's, not a coverage step's.
            focus = pg.evaluate(
                "() => getComputedStyle(document.documentElement).getPropertyValue('--focus')"
            )
            css = pg.evaluate(
                "() => ['--warn', '--bad', '--ok'].map(v => "
                "getComputedStyle(document.documentElement).getPropertyValue(v))"
            )
            option = pg.evaluate("() => window.__shilian.charts.map.getOption()")
            steps = [p["color"] for p in option["visualMap"][0]["pieces"]]
            emphasis = option["series"][0]["emphasis"]["itemStyle"]["areaColor"]
            assert _rgb(emphasis) == _rgb(focus)
            assert min(_distance(focus, c) for c in [*css, *steps]) > 120, (focus, css, steps)
            label = pg.evaluate(
                "() => getComputedStyle(document.querySelector('[data-test=wall-focus-label]'))"
                ".backgroundColor"
            )
            assert label == "rgb({}, {}, {})".format(*_rgb(focus))
            screenshot(pg, f"wall-{width}x{height}")
        finally:
            pg.context.close()
        pg.rec.check()
    assert fonts == sorted(fonts) and fonts[-1] >= 2.5 * fonts[0], fonts  # the type scales
    assert maps == sorted(maps) and maps[-1] >= 2.5 * maps[0], maps  # and so do the charts


def test_the_wall_screen_follows_a_window_resize(browser: Any, site: Central) -> None:
    pg = _wall(browser, site, 1920, 1080)
    try:
        rank_font = "() => window.__shilian.charts.rank.getOption().yAxis[0].axisLabel.fontSize"
        before = pg.evaluate(rank_font)
        pg.set_viewport_size({"width": 1366, "height": 768})
        pg.wait_for_function(
            "() => { const m = document.querySelector('[data-test=map]'); "
            "return window.__shilian.charts.map.getWidth() === m.clientWidth "
            "&& window.__shilian.charts.map.getHeight() === m.clientHeight; }"
        )
        pg.wait_for_function(f"f => ({rank_font})() < f", arg=before)
        _fits(pg)
        for sel in ("[data-test=session]", "[data-test=wall-focus-label]"):
            assert pg.evaluate(OVERLAPS_JS, sel) == [], sel
    finally:
        pg.context.close()
    pg.rec.check()


def test_the_wall_screen_still_fits_with_an_alarm_flashing_and_every_name_is_readable(
    browser: Any, fleet_site: tuple[Central, Fleet]
) -> None:
    central, fleet = fleet_site
    node = f"{next(iter(NANNING.villages())).code}-a"
    fleet.alarm(node, 1)
    wait_for(lambda: central.get(f"/api/v1/alarms?node={node}")["total"] == 1, what="alarm")
    for width, height in VIEWPORTS[:2]:
        pg = _wall(browser, central, width, height)
        try:
            pg.wait_for_selector("[data-test=wall-alarm]:not([hidden])")
            _fits(pg)
            for sel in ("[data-test=session]", "[data-test=wall-focus-label]"):
                assert pg.evaluate(OVERLAPS_JS, sel) == [], (width, sel)
            # The rankings show every name (none skipped), no two texts overlapping.
            # (The charts re-fit their type once the banner has shrunk them: wait for that.)
            for name in ("rank", "full-rank"):

                def settled(p: Any = pg, n: str = name) -> bool:
                    return not _overlaps(p.evaluate(LABELS_JS, n))

                wait_for(settled, what=f"{name} re-fitted")
                got = pg.evaluate(LABELS_JS, name)
                names = {label["lines"][0] for label in got["labels"]}
                assert {u.name for u in COUNTIES} <= names, (name, got)
                _apart(got)
            screenshot(pg, f"wall-alarm-{width}x{height}")
        finally:
            pg.context.close()
        pg.rec.check()


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/?lang=en#/u/450102"])
def test_the_user_badge_sits_in_the_desk_header_covering_nothing(
    page: Any, site: Central, path: str
) -> None:
    open_dashboard(page, site, path)
    page.wait_for_selector("[data-test=session]")
    assert page.evaluate(OVERLAPS_JS, "[data-test=session]") == []
    assert page.locator("header [data-test=session]").count() == 1
    assert page.evaluate("() => document.scrollingElement.scrollWidth <= innerWidth")


# -- the city map labels every county, no two labels overlapping -----------------------------------

#: A chart's texts as rendered: each text's lines and its box (chart pixels).
LABELS_JS = """name => {
  const c = window.__shilian.charts[name];
  const labels = new Map();
  for (const e of c.getZr().storage.getDisplayList()) {
    if (e.type !== "tspan" || e.invisible || e.ignore) continue;
    const r = e.getBoundingRect().clone();
    const m = e.getComputedTransform();
    if (m) r.applyTransform(m);
    const got = labels.get(e.parent);
    if (got) { got.lines.push(e.style.text); got.rect.union(r); }
    else labels.set(e.parent, { lines: [e.style.text], rect: r });
  }
  return { width: c.getWidth(), height: c.getHeight(), labels: [...labels.values()].map((l) =>
    ({ lines: l.lines, x: l.rect.x, y: l.rect.y, w: l.rect.width, h: l.rect.height })) };
}"""


def _overlaps(got: dict[str, Any]) -> list[tuple[Any, Any]]:
    """The pairs of a chart's texts that intersect."""
    boxes = got["labels"]
    return [
        (a, b)
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
        if not (
            a["x"] + a["w"] <= b["x"]
            or b["x"] + b["w"] <= a["x"]
            or a["y"] + a["h"] <= b["y"]
            or b["y"] + b["h"] <= a["y"]
        )
    ]


def _apart(got: dict[str, Any]) -> None:
    """No two texts of a chart intersect, and each is inside the chart."""
    for a in got["labels"]:
        assert a["x"] >= 0 and a["x"] + a["w"] <= got["width"], a
        assert a["y"] >= 0 and a["y"] + a["h"] <= got["height"], a
    assert _overlaps(got) == []


@pytest.mark.parametrize(
    ("width", "height", "path"),
    [(1366, 768, "/dashboard/"), (1920, 1080, "/dashboard/"), (1366, 768, "/dashboard/?wall=1")],
)
def test_every_county_is_labelled_on_the_map_and_no_labels_overlap(
    browser: Any, site: Central, width: int, height: int, path: str
) -> None:
    pg = _page(browser, site, width, height)
    try:
        open_dashboard(pg, site, path)
        pg.wait_for_function(
            "n => window.__shilian.charts.map.getOption().series[0].data.length == n",
            arg=len(COUNTIES),
        )
        got = pg.evaluate(LABELS_JS, "map")
        names = {label["lines"][0] for label in got["labels"]}
        # The six small urban districts by their name without 区, every other county in full.
        small = {"兴宁区", "青秀区", "江南区", "西乡塘区", "良庆区", "邕宁区"}
        assert {u.name for u in COUNTIES} >= small
        want = {u.name.removesuffix("区") if u.name in small else u.name for u in COUNTIES}
        assert want <= names, want - names
        _apart(got)  # the counties' labels and the legend's
        pg.locator("[data-test=map]").screenshot(
            path=str(
                Path(__file__).resolve().parent.parent
                / "test-artifacts"
                / "dashboard"
                / f"map-{width}x{height}{'-wall' if 'wall' in path else ''}.png"
            )
        )
    finally:
        pg.context.close()
    pg.rec.check()
