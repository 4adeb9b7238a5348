"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, a real
``shilian central run`` on a free port, a real mosquitto, and nodes published by the test as
retained births and deaths (the same messages edge agents send).

One central and one browser serve the whole module (starting them is most of the cost); each test
gets a fresh page that records console errors and every request, and fails on either.
Screenshots go to test-artifacts/dashboard/; `make screenshots` refreshes the README's copies
in docs/screenshots/.
"""

from __future__ import annotations

import contextlib
import csv
import io
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from registry import Registry
from shilian.broker import Mosquitto
from tests.dashboard_client import Fleet
from tests.peers import missing
from tests.processes import ADMIN, ADMIN_PASSWORD, Central, add_user, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
#: The issue's requirement: a node dropping off is on screen within 2 s of central knowing it.
ON_SCREEN_S = 2.0
#: Page loads and view changes on a shared, noisy 2-core machine.
PAGE_TIMEOUT_MS = 30_000
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
NANNING = Registry.from_package("4501")
COUNTIES = [u.code for u in NANNING.children("4501")]
#: Drilled into by clicking the map: 武鸣区 is large there (small city districts sit under labels).
DRILL_COUNTY = "450110"

try:
    from playwright import sync_api
except ImportError:
    missing("playwright (Python)", "pip install -e '.[dev]'", module_level=True)
if not CHROMIUM.exists():
    missing("Debian's chromium", "apt-get install chromium", module_level=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Central, Fleet]]:
    """Central with a fleet: in every county every 3rd village online, every 7th offline."""
    work = tmp_path_factory.mktemp("dashboard")
    (work / "mosquitto").mkdir()
    broker = Mosquitto(workdir=work / "mosquitto")
    broker.start()
    central = Central(work / "central", broker.port)
    fleet: Fleet | None = None
    try:
        central.start()
        fleet = Fleet(broker.port)
        villages = [v.code for v in NANNING.villages()]
        online = [f"{v}-a" for i, v in enumerate(villages) if i % 3 == 0]
        offline = [f"{v}-a" for i, v in enumerate(villages) if i % 7 == 1 and i % 3]
        fleet.state(online + offline, True)
        fleet.state(offline, False)
        # The drill-down test ends in this township: its nodes report health, devices, events.
        township = NANNING.children(DRILL_COUNTY)[0].code
        detailed = [n for n in online if n.startswith(township)]
        for node in detailed:
            fleet.details(node)
        wait_for(lambda: all(central.node(n)["events"] for n in detailed), what="details stored")
        wait_for(
            lambda: (
                central.get("/healthz")["nodes_online"] == len(online)
                and central.get("/healthz")["nodes_known"] == len(online) + len(offline)
            ),
            what="fleet known to central",
        )
        yield central, fleet
    finally:
        if fleet is not None:
            fleet.close()
        central.close()
        broker.stop()


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless (one per test module: starting it is most of the cost)."""
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def login_state(browser: Any, site: tuple[Central, Fleet]) -> dict[str, Any]:
    """Log in once through the login page (which is tested so), keep the session cookie for
    every page of the module."""
    central, _ = site
    ctx = browser.new_context(locale="zh-CN")
    try:
        pg = ctx.new_page()
        pg.set_default_timeout(PAGE_TIMEOUT_MS)
        pg.goto(central.api + "/dashboard/#/u/450102")
        pg.wait_for_selector("[data-test=login-form]")  # redirected: no session yet
        assert "/dashboard/login?next=" in pg.url
        pg.fill("[data-test=login-user]", ADMIN)
        pg.fill("[data-test=login-password]", "wrong-password")
        pg.click("[data-test=login-submit]")
        pg.wait_for_selector("[data-test=login-error]:has-text('用户名或密码错误')")
        pg.fill("[data-test=login-password]", ADMIN_PASSWORD)
        pg.click("[data-test=login-submit]")
        pg.wait_for_selector('body[data-ready="1"]')
        assert pg.url.endswith("/dashboard/")  # back where it was going
        state: dict[str, Any] = ctx.storage_state()
    finally:
        ctx.close()
    return state


class Recorder:
    """A page's console errors and its requests off localhost."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.foreign: list[str] = []

    def request(self, url: str) -> None:
        u = urlparse(url)
        if u.scheme == "data":
            return
        if u.hostname not in ("127.0.0.1", "localhost"):
            self.foreign.append(url)

    def check(self) -> None:
        """Fail the test on a console error or a request off localhost."""
        assert self.errors == [], self.errors
        assert self.foreign == [], self.foreign


def watched(pg: Any) -> Any:
    """``pg`` with the page timeout set and a :class:`Recorder` attached as ``pg.rec``."""
    pg.set_default_timeout(PAGE_TIMEOUT_MS)
    rec = Recorder()
    pg.on("console", lambda m: rec.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: rec.errors.append(str(e)))
    pg.on("request", lambda r: rec.request(r.url))
    pg.rec = rec
    return pg


@pytest.fixture
def page(browser: Any, login_state: dict[str, Any]) -> Iterator[Any]:
    """A fresh 1366x768 page, logged in as the admin; the test fails on a console error or a
    request off localhost."""
    ctx = browser.new_context(
        viewport={"width": 1366, "height": 768}, locale="zh-CN", storage_state=login_state
    )
    pg = watched(ctx.new_page())
    try:
        yield pg
    finally:
        ctx.close()
    pg.rec.check()


def open_dashboard(page: Any, central: Central, path: str = "/dashboard/") -> None:
    page.goto(central.api + path)
    page.wait_for_selector('body[data-ready="1"]')


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.2f}%"


def _covered(page: Any) -> int:
    return int(page.get_attribute("[data-test=covered-of]", "data-covered"))


def test_overview_shows_the_api_figures_for_the_city_and_every_county(
    page: Any, site: tuple[Central, Fleet]
) -> None:
    central, _ = site
    open_dashboard(page, central)
    # Stable figures: wait until the page shows what the API says now.
    api = central.get("/api/v1/coverage/4501")
    city = api["unit"]
    assert _covered(page) == city["covered"]
    assert page.get_attribute("[data-test=covered-of]", "data-villages") == "1856"
    assert page.inner_text("[data-test=ratio]") == _pct(city["ratio"])
    assert "综治视联网覆盖率" in page.inner_text("[data-test=headline]")
    health = central.get("/healthz")
    assert page.inner_text("[data-test=nodes-online]") == f"{health['nodes_online']:,}"
    offline = health["nodes_known"] - health["nodes_online"]
    assert page.inner_text("[data-test=nodes-offline]") == f"{offline:,}"
    alarms = central.get("/api/v1/alarms?state=open")["total"]
    assert alarms > 0 and page.inner_text("[data-test=alarms-open]") == f"{alarms:,}"
    assert "摄像机 正常" in page.inner_text("[data-test=devices-summary]")
    assert page.locator("[data-test=events] li").count() > 0
    children = {c["code"]: c for c in api["children"]}
    assert sorted(children) == sorted(COUNTIES)
    for code, c in children.items():
        row = f"[data-test=children-table] tr[data-code='{code}']"
        assert page.inner_text(f"{row} td[data-col=name]") == c["name"]
        assert page.inner_text(f"{row} td[data-col=villages]") == f"{c['villages']:,}"
        assert page.inner_text(f"{row} td[data-col=provisioned]") == f"{c['provisioned']:,}"
        assert page.inner_text(f"{row} td[data-col=covered]") == f"{c['covered']:,}"
        assert page.inner_text(f"{row} td[data-col=ratio]") == _pct(c["ratio"])
    # The map: one region per county, joined by code (横县 450127 in the shapes is 横州市 450181).
    regions = page.evaluate(
        "() => echarts.getMap('shilian-4501').geoJSON.features.map(f => f.properties.name)"
    )
    assert sorted(regions) == sorted(COUNTIES)
    shown = page.evaluate(
        "() => window.__shilian.charts.map.getOption().series[0].data"
        ".map(d => [d.name, d.covered, d.villages])"
    )
    assert sorted(shown) == sorted(
        [c["code"], c["covered"], c["villages"]] for c in api["children"]
    )
    ranked = page.evaluate(
        "() => window.__shilian.charts.rank.getOption().series[0].data.map(d => d.code)"
    )
    assert sorted(ranked) == sorted(COUNTIES)
    screenshot(page, "overview")


def test_node_offline_is_on_screen_within_2_s_and_back_online_restores_it(
    page: Any, site: tuple[Central, Fleet]
) -> None:
    central, fleet = site
    village = next(v.code for i, v in enumerate(NANNING.villages()) if i % 3 == 0)
    node = f"{village}-a"
    county = village[:6]
    open_dashboard(page, central)
    before = central.get("/api/v1/coverage/4501")["unit"]["covered"]
    shown_covered = "n => document.querySelector('[data-test=covered-of]').dataset.covered == n"
    page.wait_for_function(shown_covered, arg=str(before))
    fleet.state([node], False)
    wait_for(lambda: central.node(node)["state"] == "offline", what="central knows")
    page.wait_for_function(
        shown_covered,
        arg=str(before - 1),
        timeout=ON_SCREEN_S * 1000,
    )
    county_covered = central.get(f"/api/v1/coverage/{county}")["unit"]["covered"]
    cell = f"[data-test=children-table] tr[data-code='{county}'] td[data-col=covered]"
    page.wait_for_function(
        "([sel, n]) => document.querySelector(sel).textContent == n",
        arg=[cell, f"{county_covered:,}"],
        timeout=ON_SCREEN_S * 1000,
    )
    fleet.state([node], True)
    wait_for(lambda: central.node(node)["state"] == "online", what="central knows")
    page.wait_for_function(
        shown_covered,
        arg=str(before),
        timeout=ON_SCREEN_S * 1000,
    )


def test_drill_down_from_the_map_to_a_node_and_back_by_clicks(
    page: Any, site: tuple[Central, Fleet]
) -> None:
    central, _ = site
    county = DRILL_COUNTY
    open_dashboard(page, central)
    # Click the county on the map where ECharts drew it (its centre point in the shape file).
    x, y = page.evaluate(
        """code => {
          const c = window.__shilian.charts.map;
          const f = echarts.getMap('shilian-4501').geoJSON.features
            .find(f => f.properties.name === code);
          return c.convertToPixel({seriesIndex: 0}, f.properties.cp);
        }""",
        county,
    )
    box = page.locator("[data-test=map]").bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_function(f"() => location.hash == '#/u/{county}'")
    page.wait_for_selector(f"[data-test=crumbs] >> text={NANNING.unit(county).name}")  # type: ignore[union-attr]
    page.wait_for_selector("[data-test=children-table] tr[data-code]")
    screenshot(page, "county")
    township = NANNING.children(county)[0]
    page.click(f"[data-test=children-table] tr[data-code='{township.code}'] td[data-col=ratio]")
    page.wait_for_function(f"() => location.hash == '#/u/{township.code}'")
    # Filter "never covered": only villages without a node are left.
    page.wait_for_selector("[data-test=children-table] td[data-col=state]")
    page.select_option("[data-test=filter]", "never")
    states = page.locator("[data-test=children-table] td[data-col=state]").all_inner_texts()
    assert states and set(states) == {"无节点"}
    page.select_option("[data-test=filter]", "all")
    api = central.get(f"/api/v1/coverage/{township.code}")
    village = next(c for c in api["children"] if c["covered"])
    page.click(f"[data-test=children-table] tr[data-code='{village['code']}'] td[data-col=code]")
    page.wait_for_selector("[data-test=nodes-table]")
    assert page.inner_text("[data-test=unit-name]") == village["name"]
    screenshot(page, "village")
    node = f"{village['code']}-a"
    page.click(f"[data-test=nodes-table] a[href='#/n/{node}']")
    page.wait_for_selector("[data-test=node-state][data-state=online]")
    assert page.locator("[data-test=timeline] .timeline div").count() >= 1
    screenshot(page, "node")
    # Back up by the breadcrumb, then by the browser's back button.
    page.click(f"[data-test=crumbs] a[href='#/u/{county}']")
    page.wait_for_function(f"() => location.hash == '#/u/{county}'")
    page.wait_for_selector(f"[data-test=children-table] tr[data-code='{township.code}']")
    page.go_back()
    page.wait_for_selector("[data-test=node-state]")


def test_a_node_whose_clock_is_off_says_so_on_its_page(
    page: Any, site: tuple[Central, Fleet]
) -> None:
    central, fleet = site
    node = f"{next(v.code for i, v in enumerate(NANNING.villages()) if i == 3)}-a"
    for _ in range(2):  # two live reports that agree: the box's clock is an hour ahead
        fleet.health(node, clock_off_s=3600)
        time.sleep(1.0)
    wait_for(lambda: central.node(node)["clock_off_s"], what="central flags the clock")
    open_dashboard(page, central, f"/dashboard/#/n/{node}")
    page.wait_for_selector("[data-test=clock-off]:has-text('时钟与中心相差 +3,600 秒')")
    fleet.health(node)  # NTP fixed it
    wait_for(lambda: central.node(node)["clock_off_s"] is None, what="flag cleared")
    page.reload()
    page.wait_for_selector('body[data-ready="1"]')
    page.wait_for_selector("[data-test=node-state][data-state=online]")
    page.wait_for_selector("[data-test=clock-off]", state="detached")


def test_search_finds_a_village_by_name_and_a_county_by_code(
    page: Any, site: tuple[Central, Fleet]
) -> None:
    central, _ = site
    open_dashboard(page, central)
    village = next(v for v in NANNING.villages() if v.code.startswith("450181"))
    page.fill("[data-test=search]", village.name)
    page.click(f"[data-test=search-results] li[data-code='{village.code}']")
    page.wait_for_function(f"() => location.hash == '#/u/{village.code}'")
    page.wait_for_selector(f"[data-test=unit-name] >> text={village.name}")
    page.fill("[data-test=search]", "450181")
    page.press("[data-test=search]", "Enter")
    page.wait_for_function("() => location.hash == '#/u/450181'")
    page.wait_for_selector("[data-test=unit-name] >> text=横州市")


def test_english_and_csv_report(page: Any, site: tuple[Central, Fleet]) -> None:
    central, _ = site
    open_dashboard(page, central, "/dashboard/?lang=en")
    assert "Video network coverage" in page.inner_text("[data-test=headline]")
    assert page.evaluate("document.documentElement.lang") == "en"
    with page.expect_download() as dl:
        page.click("[data-test=csv]")
    body = Path(dl.value.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0][:3] == ["区划代码", "名称", "层级"]
    api = central.get("/api/v1/coverage/4501")
    assert [int(x) for x in rows[1][3:6]] == [
        api["unit"]["villages"],
        api["unit"]["provisioned"],
        api["unit"]["covered"],
    ]
    assert sum(int(r[5]) for r in rows[2:]) == api["unit"]["covered"]


def test_wall_screen_rotates_counties_at_1920x1080(
    browser: Any, site: tuple[Central, Fleet], login_state: dict[str, Any]
) -> None:
    central, _ = site
    ctx = browser.new_context(viewport={"width": 1920, "height": 1080}, storage_state=login_state)
    try:
        pg = ctx.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.goto(central.api + "/dashboard/?wall=1&rotate=2")
        pg.wait_for_selector("[data-test=wall-focus][data-code]", timeout=PAGE_TIMEOUT_MS)
        first = pg.get_attribute("[data-test=wall-focus]", "data-code")
        assert first in COUNTIES
        assert not pg.is_visible("[data-test=search]")
        pg.wait_for_function(
            "c => document.querySelector('[data-test=wall-focus]').dataset.code != c",
            arg=first,
            timeout=PAGE_TIMEOUT_MS,
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / "wall.png"))
        assert errors == []
    finally:
        ctx.close()


def test_live_stream_says_hello_and_the_page_assets_are_all_local(
    site: tuple[Central, Fleet],
) -> None:
    central, _ = site
    with central.open("/api/v1/live") as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        first = [r.readline() for _ in range(3)]
    assert first[0] == b"retry: 1000\n" and first[1] == b"event: hello\n"
    with central.open("/dashboard/") as r:
        html = r.read().decode()
    assert "http://" not in html.replace(central.api, "") and "https://" not in html
    with central.open("/") as r:
        assert r.url.endswith("/dashboard/")


def test_central_stops_promptly_with_a_live_stream_open(broker: Mosquitto, tmp_path: Path) -> None:
    """Shutdown ends the live streams first: an open page does not hold central's exit."""
    central = Central(tmp_path / "central", broker.port)
    try:
        central.start()
        with central.open("/api/v1/live", timeout=30) as stream:
            assert stream.readline() == b"retry: 1000\n"
            assert central.signal(signal.SIGTERM) == 0
            rest = stream.read()  # the stream ends (EOF) rather than hanging
        assert b"event: hello" in rest
    finally:
        central.close()


def test_a_county_viewer_sees_only_their_county_and_can_log_out(
    browser: Any, site: tuple[Central, Fleet]
) -> None:
    """Scope in the browser: the page starts at the user's county, the corner shows who is
    logged in, and logging out leads back to the login page (the session is dead)."""
    central, _ = site
    county = NANNING.unit(DRILL_COUNTY)
    assert county is not None
    password = add_user(central.db, "county-viewer", "viewer", DRILL_COUNTY)
    ctx = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    try:
        pg = ctx.new_page()
        pg.set_default_timeout(PAGE_TIMEOUT_MS)
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(central.api + "/dashboard/login")
        pg.fill("[data-test=login-user]", "county-viewer")
        pg.fill("[data-test=login-password]", password)
        pg.click("[data-test=login-submit]")
        pg.wait_for_selector('body[data-ready="1"]')
        pg.wait_for_selector("[data-test=session-user]")
        assert "county-viewer" in pg.inner_text("[data-test=session-user]")
        assert "查看员" in pg.inner_text("[data-test=session-user]")
        assert county.name in pg.inner_text("[data-test=brand]")
        session = pg.evaluate("window.shilianSession")
        assert (session["role"], session["scope"]) == ("viewer", DRILL_COUNTY)
        api = central.get(f"/api/v1/coverage/{DRILL_COUNTY}")["unit"]
        assert _covered(pg) == api["covered"]
        pg.click("[data-test=logout]")
        pg.wait_for_selector("[data-test=login-form]")
        pg.goto(central.api + "/dashboard/")
        pg.wait_for_selector("[data-test=login-form]")  # logged out for good
        assert errors == []
    finally:
        ctx.close()
