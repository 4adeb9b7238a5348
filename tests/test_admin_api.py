"""The admin routes behind the dashboard's admin pages, over central's whole HTTP app
(tests/central_site.py): alert rules one at a time, users, and the audit log's time filter.

What admins rely on: each change is refused to operators and viewers, kept within the admin's
scope (a county admin cannot touch the city's rules or users, nor give out a wider scope), says
what is wrong in Chinese and English, and is in the audit log with who did it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.central_site import QINGXIU, XINGNING, CentralSite, admin_site
from tests.processes import login


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[CentralSite]:
    async with admin_site(tmp_path) as s:
        yield s


async def _call(http: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> Any:
    async with http.request(method, path, json=body) as r:
        return r.status, await r.json()


async def _audit(http: aiohttp.ClientSession, action: str) -> list[dict[str, Any]]:
    status, body = await _call(http, "GET", f"/api/v1/audit?action={action}")
    assert status == 200
    entries: list[dict[str, Any]] = body["entries"]
    return entries


# -- alert rules ----------------------------------------------------------------------------------


async def test_an_admin_adds_edits_disables_and_deletes_one_rule(site: CentralSite) -> None:
    boss = await site.session("boss")
    try:
        rule = {"id": "xn-off", "kind": "node_offline", "code": XINGNING, "minutes": 10}
        status, body = await _call(boss, "POST", "/api/v1/alerts/rules", rule)
        assert status == 201 and body["enabled"] is True and body["severity"] == "warning"
        status, body = await _call(boss, "POST", "/api/v1/alerts/rules", rule)
        assert status == 409 and body["error"]["code"] == "rule_exists"
        ids = [r["id"] for r in (await _call(boss, "GET", "/api/v1/alerts/rules"))[1]["rules"]]
        assert ids == ["xingning-off", "qingxiu-off", "city-cov", "xn-off"]  # the others kept
        changed = {**rule, "minutes": 20, "enabled": False, "severity": "critical"}
        status, body = await _call(boss, "PUT", "/api/v1/alerts/rules/xn-off", changed)
        assert status == 200 and body["enabled"] is False and body["minutes"] == 20
        rules = (await _call(boss, "GET", "/api/v1/alerts/rules"))[1]
        assert rules["source"] == "api"
        assert next(r for r in rules["rules"] if r["id"] == "xn-off")["enabled"] is False
        status, body = await _call(boss, "PUT", "/api/v1/alerts/rules/xn-off", {**rule, "id": "z"})
        assert status == 400 and body["error"]["code"] == "bad_rules"
        status, body = await _call(boss, "DELETE", "/api/v1/alerts/rules/xn-off")
        assert status == 200 and body == {"deleted": "xn-off"}
        status, body = await _call(boss, "DELETE", "/api/v1/alerts/rules/xn-off")
        assert status == 404 and body["error"]["code"] == "unknown_rule"
        for action in ("alert_rule_add", "alert_rule_change", "alert_rule_delete"):
            (entry,) = await _audit(boss, action)
            assert entry["user"] == "boss" and entry["target"] == "xn-off"
        (change,) = await _audit(boss, "alert_rule_change")
        assert change["detail"]["before"]["minutes"] == 10
        assert change["detail"]["rule"]["minutes"] == 20
    finally:
        await boss.close()


async def test_rules_added_at_the_same_time_are_all_kept(site: CentralSite) -> None:
    boss = await site.session("boss")
    try:
        rules = [{"id": f"r{i}", "kind": "node_offline", "minutes": 1 + i} for i in range(6)]
        answers = await asyncio.gather(
            *(_call(boss, "POST", "/api/v1/alerts/rules", r) for r in rules)
        )
        assert [status for status, _ in answers] == [201] * 6
        ids = {r["id"] for r in (await _call(boss, "GET", "/api/v1/alerts/rules"))[1]["rules"]}
        assert ids >= {r["id"] for r in rules}
    finally:
        await boss.close()


async def test_a_bad_rule_is_explained_in_chinese_and_english(site: CentralSite) -> None:
    boss = await site.session("boss")
    try:
        bad = {"id": "cov", "kind": "coverage_below", "threshold_pct": 150}
        status, body = await _call(boss, "POST", "/api/v1/alerts/rules", bad)
        zh, en = body["error"]["message"].split(" / ")
        assert status == 400 and body["error"]["code"] == "bad_rules"
        assert zh == "告警规则无效：threshold_pct：应不大于 100"
        assert en == "invalid rule: threshold_pct: must be at most 100"
        missing = {"id": "cov", "kind": "coverage_below"}
        zh = (await _call(boss, "POST", "/api/v1/alerts/rules", missing))[1]["error"]["message"]
        assert zh.startswith("告警规则无效：threshold_pct：coverage_below 规则必须填写此项 / ")
        assert "Value error" not in zh and "pydantic" not in zh
    finally:
        await boss.close()


async def test_rule_changes_are_refused_to_others_and_kept_in_scope(site: CentralSite) -> None:
    rule = {"id": "qx", "kind": "node_offline", "code": QINGXIU, "minutes": 5}
    for name in ("op", "viewer"):
        http = await site.session(name)
        try:
            assert (await _call(http, "POST", "/api/v1/alerts/rules", rule))[0] == 403
            assert (await _call(http, "DELETE", "/api/v1/alerts/rules/city-cov"))[0] == 403
        finally:
            await http.close()
    county = await site.session("xadmin")
    try:
        status, body = await _call(county, "POST", "/api/v1/alerts/rules", rule)
        assert status == 403 and body["error"]["code"] == "out_of_scope"
        assert (await _call(county, "DELETE", "/api/v1/alerts/rules/qingxiu-off"))[0] == 403
        assert (await _call(county, "PUT", "/api/v1/alerts/rules", {"rules": []}))[0] == 403
        own = {**rule, "id": "xn", "code": XINGNING}
        assert (await _call(county, "POST", "/api/v1/alerts/rules", own))[0] == 201
    finally:
        await county.close()
    boss = await site.session("boss")
    try:
        ids = [r["id"] for r in (await _call(boss, "GET", "/api/v1/alerts/rules"))[1]["rules"]]
        assert ids == ["xingning-off", "qingxiu-off", "city-cov", "xn"]
    finally:
        await boss.close()


# -- users ----------------------------------------------------------------------------------------


async def test_an_admin_creates_resets_and_disables_a_user(site: CentralSite) -> None:
    boss = await site.session("boss")
    try:
        new = {"name": "李四", "role": "operator", "scope": XINGNING, "password": "first-pass-1"}
        status, body = await _call(boss, "POST", "/api/v1/users", new)
        assert status == 201 and body["role"] == "operator" and body["scope_name"] == "兴宁区"
        assert (await _call(boss, "POST", "/api/v1/users", new))[0] == 409
        li = site.client()
        me = await login(li, "李四", "first-pass-1")
        assert me["role"] == "operator" and me["scope"] == XINGNING
        path = "/api/v1/users/李四/password"
        status, body = await _call(boss, "POST", path, {"password": "short"})
        assert status == 400 and body["error"]["code"] == "bad_password"
        assert (await _call(boss, "POST", path, {"password": "second-pass-2"}))[0] == 200
        assert (await _call(li, "GET", "/api/v1/me"))[0] == 401  # the reset ended its session
        await login(li, "李四", "second-pass-2")
        status, body = await _call(boss, "POST", "/api/v1/users/李四/disabled", {"disabled": True})
        assert status == 200 and body["disabled"] is True
        assert (await _call(li, "GET", "/api/v1/me"))[0] == 401
        await li.close()
        status, body = await _call(boss, "POST", "/api/v1/users/boss/disabled", {"disabled": True})
        assert status == 409 and body["error"]["code"] == "own_account"
        users = {u["name"]: u for u in (await _call(boss, "GET", "/api/v1/users"))[1]["users"]}
        assert users["李四"]["disabled"] is True and users["boss"]["disabled"] is False
        for action in ("user_add", "user_passwd", "user_disable"):
            (entry,) = await _audit(boss, action)
            assert entry["user"] == "boss" and entry["target"] == "李四", entry
        bad = {"name": "x", "role": "chief", "scope": "", "password": "long-enough-1"}
        status, body = await _call(boss, "POST", "/api/v1/users", bad)
        assert status == 400 and body["error"]["code"] == "bad_role"
    finally:
        await boss.close()


async def test_users_are_admin_only_and_a_county_admin_stays_in_the_county(
    site: CentralSite,
) -> None:
    for name in ("op", "viewer"):
        http = await site.session(name)
        try:
            assert (await _call(http, "GET", "/api/v1/users"))[0] == 403
            body = {"name": "x1", "role": "viewer", "scope": "", "password": "long-enough-1"}
            assert (await _call(http, "POST", "/api/v1/users", body))[0] == 403
            assert (await _call(http, "POST", "/api/v1/users/op/password", {"password": "p" * 9}))[
                0
            ] == 403
        finally:
            await http.close()
    county = await site.session("xadmin")
    try:
        names = [u["name"] for u in (await _call(county, "GET", "/api/v1/users"))[1]["users"]]
        assert names == ["xadmin"]  # the city-wide users are not theirs
        wide = {"name": "wide", "role": "viewer", "scope": "", "password": "long-enough-1"}
        status, body = await _call(county, "POST", "/api/v1/users", wide)
        assert status == 403 and body["error"]["code"] == "out_of_scope"
        other = {**wide, "scope": QINGXIU}
        assert (await _call(county, "POST", "/api/v1/users", other))[0] == 403
        assert (await _call(county, "POST", "/api/v1/users", {**wide, "scope": XINGNING}))[0] == 201
        reset = {"password": "p" * 9}
        assert (await _call(county, "POST", "/api/v1/users/boss/password", reset))[0] == 403
    finally:
        await county.close()


# -- audit ----------------------------------------------------------------------------------------


async def test_the_audit_log_filters_by_time_window(site: CentralSite) -> None:
    site.clock[0] = 2_000_000.0
    boss = await site.session("boss")  # a login at 2,000,000
    site.clock[0] = 2_000_100.0
    try:
        await _call(boss, "POST", "/api/v1/users/op/disabled", {"disabled": False})
        status, body = await _call(boss, "GET", "/api/v1/audit?since=2000000&until=2000050")
        assert status == 200 and [e["action"] for e in body["entries"]] == ["login"]
        body = (await _call(boss, "GET", "/api/v1/audit?since=2000050"))[1]
        assert [e["action"] for e in body["entries"]] == ["user_enable"]
        status, body = await _call(boss, "GET", "/api/v1/audit?until=soon")
        assert status == 400 and body["error"]["code"] == "bad_param"
    finally:
        await boss.close()
