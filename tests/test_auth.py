"""Login, roles, county scope and the audit log (central.auth) over the real aiohttp app (API and
dashboard routes) on a free port, with central's own SQLite store and an injected clock.

What users rely on: "each role can do exactly what it may; a county operator gets 403 on
another county"."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import prometheus_client
import pytest
from aiohttp import web
from typer.testing import CliRunner

from central import auth
from central.accounts import MAX_FAILURES, TOUCH_S, Role, Throttle
from central.app import make_app
from central.cli import app as central_cli
from central.config import AuthConfig
from central.coverage import CoverageIndex
from central.dashboard import add_routes as add_dashboard_routes
from central.http import ApiContext
from central.live import LiveHub, Message
from central.store import EventRow, NodeRow, SqliteStore
from registry import Registry
from tests.processes import add_user, login

NANNING = Registry.from_package("4501")
XINGNING, QINGXIU = "450102", "450103"
V1 = "450102001003"  # 兴宁区
V3 = "450103001005"  # 青秀区
BOOT = "c" * 32
IDLE_MIN, MAX_H = 60.0, 12.0
ROLES = ("viewer", "operator", "admin")


@dataclass
class Site:
    app: web.Application
    ctx: ApiContext
    base: str
    db: Path
    clock: list[float]
    hub: LiveHub
    metrics: prometheus_client.CollectorRegistry
    alarms: dict[str, int]  # village -> an alarm event id there
    passwords: dict[str, str]

    def client(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(self.base, cookie_jar=aiohttp.CookieJar(unsafe=True))

    def user(self, name: str, role: str, scope: str = "") -> str:
        self.passwords[name] = add_user(self.db, name, role, scope)
        return name

    async def session(self, name: str) -> aiohttp.ClientSession:
        http = self.client()
        await login(http, name, self.passwords[name])
        return http

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.get_sample_value(name, labels) or 0.0


def _seed(store: SqliteStore, cov: CoverageIndex) -> dict[str, int]:
    alarms = {}
    for i, village in enumerate((V1, V3)):
        node = f"{village}-a"
        store.apply(
            [
                NodeRow(node, village, village[:6], "online", 10.0, "connect", BOOT, 1, 30.0, "0.1",
                        10.0, 10.0),
                EventRow(node, village, BOOT, 1, 100.0 + i, 100.5, "alarm", "panic", None, "{}"),
                EventRow(node, village, BOOT, 2, 110.0 + i, 110.5, "info", "door", None, "{}"),
            ]
        )  # fmt: skip
        cov.set_node(node, True)
        row = store.conn.execute(
            "SELECT id FROM events WHERE node_id = ? AND priority = 'alarm'", (node,)
        ).fetchone()
        alarms[village] = int(row[0])
    return alarms


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    db = tmp_path / "central.sqlite3"
    store = SqliteStore(db)
    cov = CoverageIndex(NANNING)
    alarms = _seed(store, cov)
    clock = [1_000_000.0]
    metrics = prometheus_client.CollectorRegistry()
    ctx = ApiContext(
        db,
        NANNING,
        cov,
        metrics,
        None,
        clock=lambda: clock[0],
        auth=AuthConfig(session_idle_minutes=IDLE_MIN, session_max_hours=MAX_H),
    )
    app = make_app(ctx)
    hub = LiveHub(cov, lambda v: (u.code for u in NANNING.ancestors(v)), lambda: clock[0])
    add_dashboard_routes(app, hub)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    s = Site(app, ctx, base, db, clock, hub, metrics, alarms, {})
    try:
        yield s
    finally:
        await runner.cleanup()
        store.close()


# -- the role x route matrix --------------------------------------------------------------------

#: The least role per route of this app (None: public). Routes other helpers add later are
#: checked against the default policy (GET viewer, anything else admin) by the same test.
EXPECTED: dict[tuple[str, str], str | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/metrics"): None,
    ("POST", "/api/v1/login"): None,
    ("POST", "/api/v1/logout"): None,
    ("GET", "/"): None,
    ("GET", "/dashboard"): None,
    ("GET", "/dashboard/login"): None,
    ("GET", "/dashboard/static/{name}"): None,
    ("GET", "/dashboard/"): "viewer",
    ("GET", "/api/v1/me"): "viewer",
    ("GET", "/api/v1/coverage"): "viewer",
    ("GET", "/api/v1/coverage/{code}"): "viewer",
    ("GET", "/api/v1/nodes"): "viewer",
    ("GET", "/api/v1/nodes/{node_id}"): "viewer",
    ("GET", "/api/v1/events"): "viewer",
    ("GET", "/api/v1/alarms"): "viewer",
    ("GET", "/api/v1/live"): "viewer",
    ("GET", "/api/v1/dashboard/overview"): "viewer",
    ("GET", "/api/v1/dashboard/search"): "viewer",
    ("GET", "/api/v1/dashboard/coverage.csv"): "viewer",
    ("POST", "/api/v1/alarms/{event_id}/ack"): "operator",
    ("POST", "/api/v1/alarms/{event_id}/close"): "operator",
    ("POST", "/api/v1/nodes/{node_id}/commands"): "admin",
    ("GET", "/api/v1/audit"): "admin",
    ("GET", "/api/v1/users"): "admin",
    ("POST", "/api/v1/users"): "admin",
    ("POST", "/api/v1/users/{user}/password"): "admin",
    ("POST", "/api/v1/users/{user}/disabled"): "admin",
}


def _concrete(pattern: str, site: Site) -> str:
    return (
        pattern.replace("{code}", XINGNING)
        .replace("{node_id}", f"{V1}-a")
        .replace("{event_id}", str(site.alarms[V1]))
        .replace("{sha256}", "0" * 64)
        .replace("{name}", "app.css")
        .replace("{user}", "nobody")
    )


async def _status(http: aiohttp.ClientSession, method: str, path: str) -> int:
    body = {"cmd": "ping"} if path.endswith("/commands") else {}
    async with http.request(
        method, path, json=body if method == "POST" else None, allow_redirects=False
    ) as r:
        return r.status  # a live stream: the status is enough, leaving closes it


async def test_each_role_can_do_exactly_what_it_may(site: Site) -> None:
    for role in ROLES:
        site.user(role, role)
    sessions = {role: await site.session(role) for role in ROLES}
    anonymous = site.client()
    try:
        async with anonymous.get("/api/v1/me") as r:
            assert r.status == 401
        routes = sorted(
            {
                (r.method, r.resource.canonical)
                for r in site.app.router.routes()
                if r.resource is not None and r.method != "HEAD"
            }
        )
        assert set(EXPECTED) <= set(routes), set(EXPECTED) - set(routes)
        seen = []
        for method, pattern in routes:
            default = "viewer" if method == "GET" else "admin"
            need = EXPECTED.get((method, pattern), default)
            path = _concrete(pattern, site)
            for who in ("anonymous", *ROLES):
                # Logout with a session would end it: probe that route without one.
                keep = who == "anonymous" or pattern == "/api/v1/logout"
                http = anonymous if keep else sessions[who]
                status = await _status(http, method, path)
                if need is None or (who != "anonymous" and Role[who] >= Role[need]):
                    assert status not in (401, 403), (who, method, pattern, status)
                elif who == "anonymous":
                    assert status in (401, 302), (who, method, pattern, status)
                else:
                    assert status == 403, (who, method, pattern, status)
                seen.append((who, method, pattern, status))
        assert len(seen) == 4 * len(routes)
    finally:
        await anonymous.close()
        for s in sessions.values():
            await s.close()


def test_policy_defaults_close_new_routes() -> None:
    assert auth.required_role("GET", "/api/v1/something-new", True) is Role.viewer
    assert auth.required_role("HEAD", "/api/v1/something-new", True) is Role.viewer
    assert auth.required_role("DELETE", "/api/v1/something-new", True) is Role.admin
    assert auth.required_role("POST", "/api/v1/something-new", True) is Role.admin
    assert auth.required_role("GET", "/metrics", True) is None
    assert auth.required_role("GET", "/metrics", False) is Role.viewer
    assert auth.required_role("POST", "/api/v1/nodes/{node_id}/commissioning", True) is None
    assert auth.required_role("GET", "/api/v1/nodes/{node_id}/commissioning", True) is Role.viewer
    assert auth.required_role("GET", "/api/v1/firmware/{sha256}", True) is None
    status = "/api/v1/nodes/{node_id}/commissioning/status"  # the enrolment token's own check
    assert auth.required_role("GET", status, True) is None
    assert auth.required_role("POST", "/api/v1/firmware", True) is Role.admin


# -- county scope -------------------------------------------------------------------------------


async def test_a_county_operator_gets_403_on_another_county(site: Site) -> None:
    site.user("xn", "operator", XINGNING)
    http = await site.session("xn")
    try:
        other_alarm = site.alarms[V3]
        denied = [
            ("GET", f"/api/v1/coverage/{QINGXIU}"),
            ("GET", f"/api/v1/coverage/{V3}"),
            ("GET", "/api/v1/coverage/4501"),  # the city: other counties' figures
            ("GET", f"/api/v1/nodes/{V3}-a"),
            ("GET", f"/api/v1/nodes?county={QINGXIU}"),
            ("GET", f"/api/v1/nodes?village={V3}"),
            ("GET", f"/api/v1/events?node={V3}-a"),
            ("GET", f"/api/v1/events?county={QINGXIU}"),
            ("GET", f"/api/v1/alarms?county={QINGXIU}"),
            ("GET", f"/api/v1/alarms?node={V3}-a"),
            ("POST", f"/api/v1/alarms/{other_alarm}/ack"),
            ("GET", f"/api/v1/dashboard/coverage.csv?code={QINGXIU}"),
            ("GET", f"/api/v1/dashboard/overview?code={QINGXIU}"),
            ("GET", f"/api/v1/live?code={QINGXIU}"),
        ]
        for method, path in denied:
            async with http.request(method, path, json={} if method == "POST" else None) as r:
                assert r.status == 403, (path, r.status, await r.text())
                err = (await r.json())["error"]
                assert err["code"] == "out_of_scope" and " / " in err["message"], path
        # The refused ack left the alarm open.
        async with http.get(f"/api/v1/alarms?state=open&node={V1}-a") as r:
            assert r.status == 200
        site_admin = site.user("root", "admin")
        admin = await site.session(site_admin)
        async with admin.get(f"/api/v1/alarms?node={V3}-a&state=open") as r:
            assert [a["id"] for a in (await r.json())["alarms"]] == [other_alarm]
        await admin.close()
        # ... while its own county works, including the ack.
        async with http.post(f"/api/v1/alarms/{site.alarms[V1]}/ack", json={}) as r:
            assert r.status == 200 and (await r.json())["ack"]["by"] == "xn"
        for path in (f"/api/v1/coverage/{XINGNING}", f"/api/v1/nodes/{V1}-a",
                     f"/api/v1/dashboard/coverage.csv?code={V1}"):  # fmt: skip
            async with http.get(path) as r:
                assert r.status == 200, path
    finally:
        await http.close()
    assert site.sample("shilian_central_auth_denied_total", reason="out_of_scope") == len(denied)


async def test_lists_and_defaults_are_narrowed_to_the_scope(site: Site) -> None:
    site.user("xn", "viewer", XINGNING)
    http = await site.session("xn")
    try:

        async def get(path: str) -> Any:
            async with http.get(path) as r:
                assert r.status == 200, await r.text()
                return await r.json() if r.content_type == "application/json" else await r.text()

        assert [n["node_id"] for n in (await get("/api/v1/nodes"))["nodes"]] == [f"{V1}-a"]
        assert {e["village"] for e in (await get("/api/v1/events"))["events"]} == {V1}
        alarms = await get("/api/v1/alarms?state=all")
        assert [a["village"] for a in alarms["alarms"]] == [V1] and alarms["total"] == 1
        cov = await get("/api/v1/coverage")  # no code: the user's unit, not the city
        assert cov["unit"]["code"] == XINGNING and cov["ancestors"] == []
        assert (await get("/api/v1/dashboard/overview"))["code"] == XINGNING
        csv_text = await get("/api/v1/dashboard/coverage.csv")
        assert csv_text.splitlines()[1].startswith(XINGNING)
        assert (await get("/api/v1/dashboard/search?q=青秀"))["results"] == []
        assert [r["code"] for r in (await get("/api/v1/dashboard/search?q=兴宁区"))["results"]] == [
            XINGNING
        ]
        page = await get("/dashboard/")
        boot = json.loads(page.split('type="application/json">')[1].split("</script>")[0])
        assert boot["scope"] == XINGNING and boot["scope_name"] == "兴宁区"
        me = await get("/api/v1/me")
        assert (me["user"], me["role"], me["scope"], me["scope_name"]) == (
            "xn",
            "viewer",
            XINGNING,
            "兴宁区",
        )
    finally:
        await http.close()


async def test_the_live_stream_carries_only_messages_in_scope(site: Site) -> None:
    site.user("xn", "viewer", XINGNING)
    http = await site.session("xn")
    try:
        async with http.get("/api/v1/live") as r:
            assert r.status == 200
            assert await r.content.readline() == b"retry: 1000\n"
            assert (await r.content.readline()).startswith(b"event: hello")
            assert len(site.hub) == 1  # subscribed before the hello was sent
            site.hub.publish(
                [
                    Message("node", {"node_id": f"{V3}-a", "village": V3, "state": "offline"}),
                    Message("coverage", {"code": QINGXIU, "covered": 0}),
                    Message("coverage", {"code": "4501", "covered": 1}),
                    Message("event", {"node_id": f"{V3}-a", "village": V3, "kind": "panic"}),
                    Message("event", {"node_id": f"{V1}-a", "village": V1, "kind": "door"}),
                    Message("coverage", {"code": XINGNING, "covered": 1}),
                ]
            )
            got = b""
            async with asyncio.timeout(30):
                while b'"code":"450102"' not in got:  # the last one published
                    got += await r.content.readline()
        assert V3.encode() not in got and QINGXIU.encode() not in got and b'"4501"' not in got
        assert f'"village":"{V1}"'.encode() in got
    finally:
        await http.close()


# -- accounts, sessions, throttling, audit ------------------------------------------------------


async def test_no_users_yet_tells_the_admin_what_to_run(site: Site) -> None:
    async with site.client() as http:
        async with http.get("/api/v1/nodes") as r:
            assert r.status == 401
            err = (await r.json())["error"]
        assert err["code"] == "no_users" and "shilian central user add" in err["message"]
        async with http.post("/api/v1/login", json={"user": "x", "password": "y"}) as r:
            assert r.status == 401 and (await r.json())["error"]["code"] == "no_users"
        async with http.get("/healthz") as r:
            assert r.status == 200


async def test_passwords_and_tokens_are_stored_only_hashed(site: Site) -> None:
    site.user("ann", "viewer")
    async with site.client() as http:
        body = await login(http, "ann", site.passwords["ann"])
    token = body["token"]
    assert len(token) >= 43  # 256 bits, url-safe base64
    conn = sqlite3.connect(site.db)
    try:
        (pw_hash,) = conn.execute("SELECT password_hash FROM users WHERE name = 'ann'").fetchone()
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    assert pw_hash.startswith("$argon2id$")
    assert site.passwords["ann"] not in dump and token not in dump


async def test_bearer_token_and_cookie_both_work_and_the_cookie_is_strict(site: Site) -> None:
    site.user("ann", "viewer")
    async with site.client() as http:
        async with http.post(
            "/api/v1/login", json={"user": "ann", "password": site.passwords["ann"]}
        ) as r:
            assert r.status == 200
            body = await r.json()
            cookie = r.cookies[auth.COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
        assert body["role"] == "viewer" and body["scope"] == "" and body["user"] == "ann"
        async with http.get("/api/v1/me") as r:  # the cookie
            assert r.status == 200
    async with (
        aiohttp.ClientSession(site.base) as bare,
        bare.get("/api/v1/me", headers={"Authorization": f"Bearer {body['token']}"}) as r,
    ):
        assert r.status == 200 and (await r.json())["user"] == "ann"
    async with (
        aiohttp.ClientSession(site.base) as bare,
        bare.get("/api/v1/me", headers={"Authorization": "Bearer not-a-token"}) as r,
    ):
        assert r.status == 401 and (await r.json())["error"]["code"] == "unauthenticated"


async def test_a_page_request_without_login_goes_to_the_login_page(site: Site) -> None:
    site.user("ann", "viewer")
    async with site.client() as http:
        async with http.get(
            "/dashboard/?lang=en", headers={"Accept": "text/html"}, allow_redirects=False
        ) as r:
            assert r.status == 302
            location = urlsplit(r.headers["Location"])
            assert location.path == "/dashboard/login"
            assert parse_qs(location.query) == {"next": ["/dashboard/?lang=en"]}
        async with http.get("/dashboard/login?lang=en") as r:
            assert r.status == 200 and '<html lang="en">' in await r.text()
        async with http.get("/api/v1/nodes", headers={"Accept": "text/html"}) as r:
            assert r.status == 401  # API routes answer JSON, never a redirect


async def test_sessions_expire_when_idle_and_after_the_maximum(site: Site) -> None:
    site.user("ann", "viewer")
    async with site.client() as http:
        body = await login(http, "ann", site.passwords["ann"])
        assert body["expires_at"] == site.clock[0] + IDLE_MIN * 60
        site.clock[0] += IDLE_MIN * 60 - 1
        async with http.get("/api/v1/me") as r:
            assert r.status == 200  # used just in time: the idle period starts again
        site.clock[0] += IDLE_MIN * 60 - 1
        async with http.get("/api/v1/me") as r:
            assert r.status == 200
        site.clock[0] += IDLE_MIN * 60 + 1
        async with http.get("/api/v1/me") as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "session_expired"
        # Used often, a session still ends MAX_H after login.
        await login(http, "ann", site.passwords["ann"])
        start = site.clock[0]
        while site.clock[0] < start + MAX_H * 3600 - 1800:
            site.clock[0] += 1800
            async with http.get("/api/v1/me") as r:
                assert r.status == 200
        site.clock[0] = start + MAX_H * 3600
        async with http.get("/api/v1/me") as r:
            assert r.status == 401
    assert site.sample("shilian_central_auth_denied_total", reason="expired") == 2
    assert TOUCH_S < 1800


async def test_logout_ends_the_session(site: Site) -> None:
    site.user("ann", "viewer")
    async with site.client() as http:
        token = (await login(http, "ann", site.passwords["ann"]))["token"]
        async with http.post("/api/v1/logout") as r:
            assert r.status == 200 and (await r.json())["logged_out"] is True
        async with http.get(
            "/api/v1/me", headers={"Authorization": f"Bearer {token}"}
        ) as r:  # the token itself is dead, not just the cookie gone
            assert r.status == 401


async def test_failed_logins_are_generic_counted_and_throttled(site: Site) -> None:
    site.user("ann", "viewer")
    async with site.client() as http:

        async def attempt(user: str, password: str) -> tuple[int, dict[str, Any], Any]:
            async with http.post("/api/v1/login", json={"user": user, "password": password}) as r:
                return r.status, await r.json(), r.headers.get("Retry-After")

        wrong_user = await attempt("nobody", "whatever-123")
        wrong_pw = await attempt("ann", "whatever-123")
        assert wrong_user[0] == wrong_pw[0] == 401
        assert wrong_user[1] == wrong_pw[1]  # the same answer: no user enumeration
        assert wrong_pw[1]["error"]["code"] == "bad_credentials"
        # Ten failures from one address (whatever the names): the address waits, even with the
        # right password (the per-name count is the same mechanism: test_throttle_...).
        for _ in range(MAX_FAILURES - 2):
            assert (await attempt("ann", "still-wrong"))[0] == 401
        status, body, retry = await attempt("ann", site.passwords["ann"])
        assert status == 429 and body["error"]["code"] == "throttled"
        assert 0 < int(retry) <= 300
        site.clock[0] += 301
        assert (await attempt("ann", site.passwords["ann"]))[0] == 200
        assert (await attempt("bad", "json"))[0] == 401
        json_type = {"Content-Type": "application/json"}
        async with http.post("/api/v1/login", data=b"{oops", headers=json_type) as r:
            assert r.status == 400
    assert (
        site.sample("shilian_central_logins_total", outcome="bad_credentials") == MAX_FAILURES + 1
    )
    assert site.sample("shilian_central_logins_total", outcome="throttled") == 1
    assert site.sample("shilian_central_logins_total", outcome="ok") == 1


def test_throttle_is_per_key_and_bounded() -> None:
    t = Throttle(limit=3, window_s=10, max_keys=5)
    for i in range(3):
        assert t.retry_after("user:a", 100.0 + i) is None
        t.failed("user:a", 100.0 + i)
    assert t.retry_after("user:a", 103.0) == pytest.approx(7.0)  # the oldest of 3 (100) + 10
    assert t.retry_after("user:b", 103.0) is None
    assert t.retry_after("user:a", 111.0) is None  # the window moved on
    for i in range(50):
        t.failed(f"user:spray{i}", 200.0)
    assert len(t._fails) <= 5


async def test_a_disabled_user_is_logged_out_and_cannot_log_in(site: Site) -> None:
    site.user("ann", "operator")
    http = await site.session("ann")
    try:
        result = CliRunner().invoke(central_cli, ["user", "disable", "ann", "--db", str(site.db)])
        assert result.exit_code == 0, result.output
        async with http.get("/api/v1/me") as r:
            assert r.status == 401
        async with http.post(
            "/api/v1/login", json={"user": "ann", "password": site.passwords["ann"]}
        ) as r:
            assert r.status == 401 and (await r.json())["error"]["code"] == "bad_credentials"
        result = CliRunner().invoke(central_cli, ["user", "enable", "ann", "--db", str(site.db)])
        assert result.exit_code == 0, result.output
        await login(http, "ann", site.passwords["ann"])
    finally:
        await http.close()


def test_user_cli_add_list_passwd_and_errors(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite3"
    run = CliRunner().invoke
    ok = run(
        central_cli,
        ["user", "add", "张三", "--db", str(db), "--role", "operator", "--scope", XINGNING,
         "--password-stdin"],
        input="long-enough-pw\n",
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    listed = run(central_cli, ["user", "list", "--db", str(db)])
    assert "张三\toperator\t450102\t" in listed.output
    for args, stdin, msg in [
        (["user", "add", "张三", "--password-stdin"], "long-enough-pw\n", "already exists"),
        (["user", "add", "b", "--role", "boss", "--password-stdin"], "long-enough-pw\n", "role"),
        (["user", "add", "c", "--scope", "45x", "--password-stdin"], "long-enough-pw\n", "scope"),
        (["user", "add", "d", "--password-stdin"], "short\n", "8"),
        (["user", "passwd", "nobody", "--password-stdin"], "long-enough-pw\n", "no user"),
    ]:
        bad = run(central_cli, [*args, "--db", str(db)], input=stdin)
        assert bad.exit_code == 1 and msg in bad.output, (args, bad.output)
    changed = run(
        central_cli, ["user", "passwd", "张三", "--db", str(db), "--password-stdin"],
        input="another-long-pw\n",
    )  # fmt: skip
    assert changed.exit_code == 0, changed.output
    log = run(central_cli, ["audit", "--db", str(db)]).output.splitlines()
    assert [line.split("\t")[4] for line in log] == ["user_passwd", "user_add"]
    assert all(line.split("\t")[1].startswith("cli:") for line in log)


class Pong:
    """Answers a ping as a node's agent would (central.commands.CommandClient's shape)."""

    async def request(
        self, node_id: str, cmd: str, args: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        return {"pong": True}


async def test_actions_are_in_the_audit_log(site: Site) -> None:
    site.ctx.commands = Pong()
    site.user("op", "operator")
    site.user("boss", "admin")
    async with (
        site.client() as anon,
        anon.post("/api/v1/login", json={"user": "op", "password": "wrong-pw"}) as r,
    ):
        assert r.status == 401
    op = await site.session("op")
    boss = await site.session("boss")
    try:
        async with op.post(f"/api/v1/alarms/{site.alarms[V1]}/ack", json={"note": "到场"}) as r:
            assert r.status == 200
        async with boss.post(
            f"/api/v1/nodes/{V1}-a/commands", json={"cmd": "ping", "args": {"n": 1}}
        ) as r:
            assert r.status == 200
        async with op.post("/api/v1/logout") as r:
            assert r.status == 200
        async with op.get("/api/v1/audit") as r:
            assert r.status == 401  # logged out
        async with boss.get("/api/v1/audit?limit=50") as r:
            entries = (await r.json())["entries"]
        got = [(e["action"], e["user"], e["target"], e["outcome"]) for e in entries]
        assert ("login_failed", "op", "op", "bad_credentials") in got
        assert ("login", "op", "op", "ok") in got
        assert ("alarm_ack", "op", str(site.alarms[V1]), "ok") in got
        assert ("logout", "op", "op", "ok") in got
        assert ("command", "boss", f"{V1}-a", "ok") in got
        cmd = next(e for e in entries if e["action"] == "command")
        assert cmd["detail"] == {"cmd": "ping", "args": {"n": 1}} and cmd["role"] == "admin"
        ack = next(e for e in entries if e["action"] == "alarm_ack")
        assert ack["role"] == "operator" and ack["detail"]["note"] == "到场"
        assert ack["address"] == "127.0.0.1"
        async with boss.get("/api/v1/audit?action=login&user=op") as r:
            only = await r.json()
        assert only["total"] == 1 and only["entries"][0]["action"] == "login"
        async with boss.get("/api/v1/audit?since=x") as r:
            assert r.status == 400
    finally:
        await op.close()
        await boss.close()
