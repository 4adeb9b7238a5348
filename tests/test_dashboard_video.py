"""The stricter figure in a real browser: Debian's headless Chromium (Playwright), a real
``shilian central run``, a real mosquitto, and the seeded video scenario published as retained
node and device states. What the page shows is compared with the scenario's hand-computed
truth (tests/video_scenario.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central import dashboard, i18n
from shilian.broker import Mosquitto
from tests.processes import ADMIN, ADMIN_PASSWORD, Central, wait_for
from tests.test_central_video import _publish_scenario
from tests.video_scenario import NANNING, Scenario

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PAGE_TIMEOUT_MS = 30_000
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
VIDEO_JS = (dashboard.ASSETS / "video.js").read_text(encoding="utf-8")

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) not installed")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


def test_every_string_video_js_uses_is_in_the_catalogue() -> None:
    used = set(re.findall(r"\bt\(\"([a-z_0-9]+)\"", VIDEO_JS))
    used |= {f"network_{n}" for n in ("video_network", "public_video", "info_system")}
    used |= {f"device_{s}" for s in ("up", "degraded", "down", "unknown")}
    assert len(used) > 15
    assert used - set(i18n.catalogue()) == set()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Central, Scenario]]:
    work = tmp_path_factory.mktemp("video")
    (work / "mosquitto").mkdir()
    broker = Mosquitto(workdir=work / "mosquitto")
    broker.start()
    central = Central(work / "central", broker.port)
    try:
        central.start()
        scn = Scenario.seeded()
        _publish_scenario(broker.port, scn)
        devices = sum(len(n.devices) for n in scn.nodes)
        wait_for(
            lambda: (
                central.get(f"/api/v1/devices?code=4501&limit={devices}")["total"] == devices
                and central.get("/healthz")["nodes_known"] == len(scn.nodes)
            ),
            what="scenario ingested",
        )
        yield central, scn
    finally:
        central.close()
        broker.stop()


@pytest.fixture(scope="module")
def page(site: tuple[Central, Scenario]) -> Iterator[Any]:
    central, _ = site
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            ctx = b.new_context(viewport={"width": 1366, "height": 900}, locale="zh-CN")
            pg = ctx.new_page()
            pg.set_default_timeout(PAGE_TIMEOUT_MS)
            pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.goto(central.api + "/dashboard/")
            pg.fill("[data-test=login-user]", ADMIN)
            pg.fill("[data-test=login-password]", ADMIN_PASSWORD)
            pg.click("[data-test=login-submit]")
            pg.wait_for_selector('body[data-ready="1"]')
            yield pg
        finally:
            b.close()
    assert errors == []


def _open(page: Any, central: Central, code: str, lang: str = "") -> None:
    page.goto(f"{central.api}/dashboard/{'?lang=' + lang if lang else ''}#/u/{code}")
    page.wait_for_selector('body[data-ready="1"] [data-test=full-of][data-fully-connected]')


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_headline_and_three_networks_equal_the_truth(
    page: Any, site: tuple[Central, Scenario]
) -> None:
    central, scn = site
    for code in ("4501", "450102", "450103"):
        _open(page, central, code)
        t = scn.truth(code)
        of = page.locator("[data-test=full-of]")
        assert int(of.get_attribute("data-fully-connected")) == t["fully_connected"]
        shown = page.locator("[data-test=full-ratio]").inner_text()
        assert shown == f"{t['ratio'] * 100:.2f}%"
        for net, n in t["networks"].items():
            got = page.locator(f"[data-test=networks] [data-network={net}]").get_attribute(
                "data-count"
            )
            assert int(got) == n, (code, net)
        for state, n in t["states"]["camera"].items():
            sel = f"[data-test=device-counts] [data-kind=cameras][data-state={state}]"
            assert int(page.locator(sel).get_attribute("data-count")) == n, (code, state)
        if code == "4501":
            page.wait_for_selector("[data-test=full-rank] canvas")
            _shot(page, "video-city")
    assert "村级视联网完全接通率" in page.inner_text("[data-test=full-headline]")


def test_a_village_shows_its_three_networks_and_its_devices(
    page: Any, site: tuple[Central, Scenario]
) -> None:
    central, scn = site
    # A village with an offline node and devices: its devices show unknown (node offline).
    village = next(
        n.node_id[:12]
        for n in scn.nodes
        if n.devices and not any(m.online for m in scn.nodes if m.node_id[:12] == n.node_id[:12])
    )
    overview = central.get(f"/api/v1/dashboard/overview?code={village}")
    assert {d["state"] for d in overview["devices"]} == {"unknown"}  # not what it last said
    _open(page, central, village)
    flags = scn.village_flags(village)
    for net in ("video_network", "public_video", "info_system", "terminal"):
        on = page.locator(f"[data-test=networks] [data-network={net}]").get_attribute("data-on")
        assert on == str(int(flags[net])), net
    page.wait_for_selector("[data-test=device-list][data-rows]")
    rows = page.locator("[data-test=device-list] tbody tr")
    mine = [n for n in scn.nodes if n.node_id[:12] == village]
    assert rows.count() == sum(len(n.devices) for n in mine)
    for n in mine:
        for d in n.devices:
            row = page.locator(
                f'[data-test=device-list] tr[data-device="{n.node_id}/{d.device_id}"]'
            )
            expect = d.health if n.online else "node_offline"
            assert row.get_attribute("data-health") == expect
            if not n.online:
                assert "未知（节点离线）" in row.inner_text()
    _shot(page, "video-village")


def test_cameras_not_ok_table_lists_the_failing_cameras_longest_first_and_sorts(
    page: Any, site: tuple[Central, Scenario]
) -> None:
    central, scn = site
    county = "450102"
    _open(page, central, county)
    page.wait_for_selector("[data-test=cameras-not-ok][data-rows]")
    expect = {
        f"{n.node_id}/{d.device_id}"
        for n in scn.nodes
        if n.online and n.node_id.startswith(county)
        for d in n.devices
        if d.kind == "camera" and d.health != "ok"
    }
    rows = page.locator("[data-test=cameras-not-ok] tbody tr")
    assert {rows.nth(i).get_attribute("data-device") for i in range(rows.count())} == expect
    since = [float(rows.nth(i).get_attribute("data-since")) for i in range(rows.count())]
    assert since == sorted(since) and len(set(since)) > 1  # longest first
    page.click("[data-test=cameras-not-ok] th[data-sort=since]")
    rows = page.locator("[data-test=cameras-not-ok] tbody tr")
    since = [float(rows.nth(i).get_attribute("data-since")) for i in range(rows.count())]
    assert since == sorted(since, reverse=True)
    _shot(page, "video-county")


def test_english_second(page: Any, site: tuple[Central, Scenario]) -> None:
    central, _ = site
    _open(page, central, "450102", lang="en")
    assert "Villages fully connected" in page.inner_text("[data-test=full-headline]")
    assert "Public video surveillance" in page.inner_text("[data-test=networks]")
    assert NANNING.unit("450102") is not None
