"""The pages' shared kit (central/dashboard/kit.js): every page that reads its boot data loads it
before its own scripts, it is served and cached like the other assets and allowed by the pages'
Content-Security-Policy, and no page script carries its own copy of it again (a second top-level
``t`` or ``api`` would stop the dashboard with a SyntaxError). The pages' behaviour with it is
what the browser tests (tests/test_dashboard*.py) check."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from central import dashboard
from tests.central_site import CentralSite, central_site

KIT = "/dashboard/static/kit.js"
PAGES = ("index.html", "meeting.html", "broadcast.html")
SCRIPT_SRC = re.compile(r'<script src="([^"]+)"')


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[CentralSite]:
    async with central_site(tmp_path) as s:
        yield s


@pytest.mark.parametrize("page", PAGES)
def test_each_page_loads_the_kit_first_after_its_boot_data(page: str) -> None:
    html = (dashboard.ASSETS / page).read_text(encoding="utf-8")
    assert SCRIPT_SRC.findall(html)[0] == KIT
    assert html.index('<script id="boot"') < html.index(KIT)


def test_no_page_script_defines_the_kit_again() -> None:
    copies = re.compile(
        r"\bfunction (?:t|esc|api)\s*\(|\b(?:const|let|var) (?:\$|BOOT|LANG)\s*=|"
        r"getElementById\(\"boot\"\)"
    )
    found = {
        js.name: copies.findall(js.read_text(encoding="utf-8"))
        for js in Path(dashboard.ASSETS).glob("*.js")
        if js.name != "kit.js"
    }
    assert {name: hits for name, hits in found.items() if hits} == {}


async def test_the_kit_is_served_like_the_other_assets(site: CentralSite) -> None:
    site.user("op", "operator")
    http = await site.session("op")
    async with http:
        async with http.get("/dashboard/") as r:
            assert r.status == 200
            csp = r.headers["Content-Security-Policy"]
            assert KIT in SCRIPT_SRC.findall(await r.text())
        assert "script-src 'self'" in csp
        # Cache-Control, ETag and Last-Modified as the dashboard's own script has them.
        caching = {}
        for name in ("kit.js", "app.js"):
            async with http.get(f"/dashboard/static/{name}") as r:
                assert r.status == 200 and "javascript" in r.content_type
                caching[name] = (
                    r.headers.get("Cache-Control"),
                    "ETag" in r.headers,
                    "Last-Modified" in r.headers,
                )
        assert caching["kit.js"] == caching["app.js"]
