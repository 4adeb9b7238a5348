"""A hostile web page against a logged-in operator's browser, over the real HTTP app: state
changes need a JSON body (a page cannot send one cross-site without CORS) and, with the session
cookie, an Origin (or Referer) naming central itself; bearer-token clients are unaffected; pages
carry CSP, frame and sniffing headers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.central_site import NODE1, V1, CentralSite, central_site

EVIL = "https://evil.example"


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[CentralSite]:
    async with central_site(tmp_path) as s:
        s.user("op", "operator")
        s.user("boss", "admin")
        yield s


async def _acked(site: CentralSite, http: aiohttp.ClientSession) -> bool:
    async with http.get(f"/api/v1/alarms?village={V1}&state=all") as r:
        alarms = (await r.json())["alarms"]
    return any(a["ack"] for a in alarms if a["id"] == site.alarms[V1])


async def _me(http: aiohttp.ClientSession) -> int:
    async with http.get("/api/v1/me") as r:
        return r.status


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_state_changes_without_a_json_body_are_415(
    site: CentralSite, content_type: str | None
) -> None:
    http = await site.session("boss")
    async with http:
        headers = {"Content-Type": content_type} if content_type else {}
        ack = f"/api/v1/alarms/{site.alarms[V1]}/ack"
        for path in (ack, f"/api/v1/nodes/{NODE1}/commands", "/api/v1/logout"):
            async with http.post(path, data=b'{"cmd":"ping"}', headers=headers) as r:
                assert r.status == 415, (path, await r.text())
                body = await r.json()
                assert body["error"]["code"] == "unsupported_media_type"
                assert " / " in body["error"]["message"]
        assert not await _acked(site, http)
        assert await _me(http) == 200  # logout did not happen


async def test_a_foreign_origin_with_the_cookie_is_403_csrf(site: CentralSite) -> None:
    http = await site.session("op")
    async with http:
        ack = f"/api/v1/alarms/{site.alarms[V1]}/ack"
        for headers in ({"Origin": EVIL}, {"Referer": EVIL + "/page"}, {"Origin": "null"}):
            for path in (ack, "/api/v1/logout"):
                async with http.post(path, json={}, headers=headers) as r:
                    assert r.status == 403, (path, headers, await r.text())
                    assert (await r.json())["error"]["code"] == "csrf"
        assert not await _acked(site, http)
        assert await _me(http) == 200
        # The dashboard itself: same origin.
        async with http.post(ack, json={}, headers={"Origin": site.base}) as r:
            assert r.status == 200, await r.text()
        assert await _acked(site, http)
    assert site.sample("shilian_central_auth_denied_total", reason="csrf") == 6


async def test_login_from_a_foreign_page_is_refused(site: CentralSite) -> None:
    async with site.client() as http:
        body = {"user": "op", "password": site.passwords["op"]}
        async with http.post("/api/v1/login", json=body, headers={"Origin": EVIL}) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == "csrf"
        async with http.post("/api/v1/login", json=body, headers={"Origin": site.base}) as r:
            assert r.status == 200


async def test_bearer_token_clients_are_unaffected(site: CentralSite) -> None:
    async with (
        site.client() as http,
        http.post("/api/v1/login", json={"user": "op", "password": site.passwords["op"]}) as r,
    ):
        token = (await r.json())["token"]
    async with aiohttp.ClientSession(site.base) as bare:  # no cookie jar: the token only
        headers = {"Authorization": f"Bearer {token}", "Origin": EVIL}
        ack = f"/api/v1/alarms/{site.alarms[V1]}/ack"
        async with bare.post(ack, data=json.dumps({}), headers=headers) as r:
            assert r.status == 415  # still JSON only
        headers["Content-Type"] = "application/json; charset=utf-8"
        async with bare.post(ack, data=json.dumps({}), headers=headers) as r:
            assert r.status == 200, await r.text()


async def test_pages_and_answers_carry_the_security_headers(site: CentralSite) -> None:
    http = await site.session("op")
    async with http:
        for path in ("/dashboard/login", "/dashboard/", "/api/v1/me", "/api/v1/nope"):
            async with http.get(path, headers={"Accept": "text/html"}) as r:
                h = r.headers
                assert h["X-Content-Type-Options"] == "nosniff", path
                assert h["X-Frame-Options"] == "DENY", path
                assert h["Referrer-Policy"] == "same-origin", path
                csp = h["Content-Security-Policy"]
                assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
                assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
