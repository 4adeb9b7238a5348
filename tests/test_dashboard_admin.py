"""The dashboard's admin pages in a real browser (headless Chromium, Playwright) against a real
``shilian central run`` and mosquitto: alert rules (create with its validation message in
Chinese and English, edit, disable, delete), the webhook receivers masked, users (create with a
role and a scope, reset a password, disable) and the audit log (filters, pages); a receiver
changed and sent a test (a real HTTP receiver started here) with the answer shown; an open admin
page following another admin's changes. Admins only: operators and viewers see no menu, the page
tells them so, and central refuses their calls.
Every page fails its test on a console error or a request off localhost.
"""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest

from central import audit
from central.accounts import AccountStore
from shilian.broker import Mosquitto
from tests.dashboard_client import Receiver
from tests.processes import ADMIN, ADMIN_PASSWORD, Central, add_user
from tests.test_dashboard import chromium, open_dashboard, screenshot, watched

pytestmark = pytest.mark.slow

COUNTY, OTHER = "450102", "450103"
#: A receiver whose URL carries secrets: the page must show it masked.
HOOK = "http://bot:hunter2@127.0.0.1:9/send?access_token=s3cr3t-value"
PASSWORDS = {"viewer": "pw-admin-viewer-1", "operator": "pw-admin-operator-1"}
#: A second admin, whose changes the first one's open page follows.
OTHER_ADMIN, OTHER_PASSWORD = "李管理", "pw-admin-other-1"
#: Audit rows seeded ten days back: more than a page of them (admin.js shows 50 a page).
OLD_ROWS = 60


def _seed_audit(db: Any, now: float) -> None:
    store = AccountStore(db)
    try:
        for i in range(OLD_ROWS):
            store.audit(
                audit.Entry(now - 10 * 86400 + i, "张三", "admin", "10.0.0.8", "command",
                            f"{COUNTY}001001-a", "ok", {"cmd": "ping"})
            )  # fmt: skip
    finally:
        store.close()


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Central]:
    work = tmp_path_factory.mktemp("dashboard-admin")
    (work / "mosquitto").mkdir()
    broker = Mosquitto(workdir=work / "mosquitto")
    broker.start()
    c = Central(work / "central", broker.port)
    conf = work / "central" / "central.toml"
    conf.write_text(
        conf.read_text(encoding="utf-8")
        + f'[alerts]\neval_interval_s = 1\n[[alerts.rules]]\nid = "county-cov"\n'
        f'kind = "coverage_below"\ncode = "{COUNTY}"\nthreshold_pct = 80\n'
        f'[[alerts.webhooks]]\nurl = "{HOOK}"\n',
        encoding="utf-8",
    )
    for role, pw in PASSWORDS.items():
        add_user(c.db, f"ad{role}", role, "", pw)
    add_user(c.db, OTHER_ADMIN, "admin", "", OTHER_PASSWORD)
    _seed_audit(c.db, time.time())
    try:
        c.start()
        yield c
    finally:
        c.close()
        broker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def _page(browser: Any, central: Central, user: str, password: str, lang: str = "zh-CN") -> Any:
    ctx = browser.new_context(viewport={"width": 1366, "height": 900}, locale=lang)
    token = central.login(user, password)["token"]
    ctx.add_cookies([{"name": "shilian_session", "value": token, "url": central.api}])
    return watched(ctx.new_page())


@pytest.fixture
def page(browser: Any, central: Central) -> Iterator[Any]:
    pg = _page(browser, central, ADMIN, ADMIN_PASSWORD)
    try:
        yield pg
    finally:
        pg.context.close()
    # The refusals these tests provoke on purpose are logged by Chromium as failed loads.
    pg.rec.errors[:] = [e for e in pg.rec.errors if "status of 4" not in e]
    pg.rec.check()


def _rule(central: Central, rule_id: str) -> dict[str, Any] | None:
    rules = central.get("/api/v1/alerts/rules")["rules"]
    return next((r for r in rules if r["id"] == rule_id), None)


def test_only_admins_see_the_admin_menu_and_others_are_refused(
    browser: Any, central: Central
) -> None:
    for role, pw in PASSWORDS.items():
        pg = _page(browser, central, f"ad{role}", pw)
        try:
            open_dashboard(pg, central)
            pg.wait_for_selector("[data-test=session-user]")
            assert not pg.is_visible("[data-test=admin-link]")
            open_dashboard(pg, central, "/dashboard/#/admin/users")
            pg.wait_for_selector("[data-test=admin-only]")
            assert "仅管理员" in pg.inner_text("[data-test=admin-only]")
            assert not pg.is_visible("[data-test=users-table]")
            pg.rec.check()
        finally:
            pg.context.close()
        token = central.login(f"ad{role}", pw)["token"]
        for method, path, body in (
            ("GET", "/api/v1/users", None),
            ("GET", "/api/v1/audit", None),
            ("POST", "/api/v1/alerts/rules", {"id": "x", "kind": "node_offline", "minutes": 1}),
            ("DELETE", "/api/v1/alerts/rules/county-cov", None),
        ):
            with pytest.raises(urllib.error.HTTPError) as refused:
                central.call(method, path, body, token=token)
            assert refused.value.code == 403, (role, method, path)


def test_admin_creates_edits_disables_and_deletes_a_rule(page: Any, central: Central) -> None:
    open_dashboard(page, central)
    page.wait_for_selector("[data-test=admin-link]:visible")
    assert page.inner_text("[data-test=admin-link]") == "系统管理"
    page.click("[data-test=admin-link]")
    page.wait_for_selector("[data-test=rules-table] tr[data-rule='county-cov']")
    # The receiver is listed masked; its secrets are nowhere on the page.
    hooks = page.inner_text("[data-test=webhooks]")
    assert "http://***@127.0.0.1:9/send?access_token=***" in hooks
    assert "hunter2" not in page.content() and "s3cr3t" not in page.content()
    page.fill("[data-test=rule-id]", "offline-10")
    page.select_option("[data-test=rule-kind]", "coverage_below")
    page.fill("[data-test=rule-code]", OTHER)
    page.fill("[data-test=rule-threshold]", "150")
    page.click("[data-test=rule-save]")
    page.wait_for_selector("[data-test=rule-error]:visible")
    error = page.inner_text("[data-test=rule-error]")
    assert error == "告警规则无效：threshold_pct：应不大于 100", error
    page.select_option("[data-test=rule-kind]", "node_offline")
    assert not page.is_visible("[data-test=rule-threshold]")
    page.click("[data-test=rule-save]")
    page.wait_for_selector("[data-test=rule-error]:has-text('持续时间应大于 0')")
    page.fill("[data-test=rule-minutes]", "10")
    page.select_option("[data-test=rule-severity]", "critical")
    page.click("[data-test=rule-save]")
    page.wait_for_selector("[data-test=rules-table] tr[data-rule='offline-10']")
    assert not page.is_visible("[data-test=rule-error]")
    assert _rule(central, "offline-10") == {
        "id": "offline-10", "kind": "node_offline", "code": OTHER, "threshold_pct": None,
        "minutes": 10.0, "backlog": None, "severity": "critical", "enabled": True,
    }  # fmt: skip
    row = "[data-test=rules-table] tr[data-rule='offline-10']"
    assert "节点离线" in page.inner_text(row) and "严重" in page.inner_text(row)
    assert f"青秀区 {OTHER}" in page.inner_text(row)  # the unit by its name, with its code
    page.click(f"{row} [data-act=edit]")
    assert page.input_value("[data-test=rule-minutes]") == "10"
    assert page.is_disabled("[data-test=rule-id]")
    page.fill("[data-test=rule-minutes]", "15")
    page.click("[data-test=rule-save]")
    page.wait_for_function("() => document.querySelector(\"[data-test=rule-id]\").value === ''")
    assert _rule(central, "offline-10")["minutes"] == 15  # type: ignore[index]
    page.click(f"{row} [data-act=toggle]")
    page.wait_for_selector(f"{row} [data-test=rule-state]:has-text('已停用')")
    assert _rule(central, "offline-10")["enabled"] is False  # type: ignore[index]
    screenshot(page, "admin-rules")
    page.click(f"{row} [data-act=delete]")
    assert page.inner_text(f"{row} [data-act=delete]") == "确认删除"
    assert _rule(central, "offline-10") is not None  # one click deletes nothing
    page.click(f"{row} [data-act=delete]")
    page.wait_for_selector(row, state="detached")
    assert _rule(central, "offline-10") is None
    assert _rule(central, "county-cov") is not None
    actions = [e["action"] for e in central.get("/api/v1/audit?user=admin&limit=10")["entries"]]
    assert actions[:4] == [
        "alert_rule_delete", "alert_rule_change", "alert_rule_change", "alert_rule_add",
    ]  # fmt: skip


def test_rule_errors_are_in_english_on_the_english_page(browser: Any, central: Central) -> None:
    pg = _page(browser, central, ADMIN, ADMIN_PASSWORD, lang="en")
    try:
        open_dashboard(pg, central, "/dashboard/?lang=en#/admin/rules")
        pg.wait_for_selector("[data-test=rule-form]")
        pg.fill("[data-test=rule-id]", "Bad Id")
        pg.fill("[data-test=rule-minutes]", "5")
        pg.click("[data-test=rule-save]")
        pg.wait_for_selector("[data-test=rule-error]:visible")
        assert pg.inner_text("[data-test=rule-error]") == "invalid rule: id: wrong format"
        pg.rec.errors[:] = [e for e in pg.rec.errors if "status of 400" not in e]
        pg.rec.check()
    finally:
        pg.context.close()


def test_admin_creates_a_scoped_user_resets_the_password_and_disables_it(
    page: Any, central: Central
) -> None:
    open_dashboard(page, central, "/dashboard/#/admin/users")
    page.wait_for_selector(f"[data-test=users-table] tr[data-user='{ADMIN}']")
    # An admin cannot disable their own account: no button for it.
    assert page.query_selector(f"tr[data-user='{ADMIN}'] [data-act=toggle]") is None
    page.fill("[data-test=user-name]", "王五")
    page.select_option("[data-test=user-role]", "operator")
    page.fill("[data-test=user-scope]", COUNTY)
    page.fill("[data-test=user-password]", "short")
    page.click("[data-test=user-save]")
    page.wait_for_selector("[data-test=user-error]:visible")
    assert "密码长度应为 8 到 1024 个字符" in page.inner_text("[data-test=user-error]")
    page.fill("[data-test=user-password]", "wangwu-first-1")
    page.click("[data-test=user-save]")
    row = "[data-test=users-table] tr[data-user='王五']"
    page.wait_for_selector(row)
    assert "值班员" in page.inner_text(row) and "兴宁区" in page.inner_text(row)
    me = central.login("王五", "wangwu-first-1")
    assert (me["role"], me["scope"]) == ("operator", COUNTY)
    page.fill(f"{row} [data-test=user-new-password]", "wangwu-second-2")
    page.click(f"{row} [data-act=password]")
    page.wait_for_selector("[data-test=users-message]:has-text('已重置 王五 的密码')")
    with pytest.raises(urllib.error.HTTPError):
        central.login("王五", "wangwu-first-1")
    token = central.login("王五", "wangwu-second-2")["token"]
    page.click(f"{row} [data-act=toggle]")
    page.wait_for_selector(f"{row} [data-test=user-state]:has-text('已停用')")
    with pytest.raises(urllib.error.HTTPError) as gone:
        central.call("GET", "/api/v1/me", token=token)
    assert gone.value.code == 401  # disabling ended the session at once
    screenshot(page, "admin-users")
    page.click(f"{row} [data-act=toggle]")
    page.wait_for_selector(f"{row} [data-test=user-state]:has-text('正常')")


def test_audit_log_filters_by_user_action_and_time_and_pages(page: Any, central: Central) -> None:
    open_dashboard(page, central, "/dashboard/#/admin/audit")
    page.wait_for_selector("[data-test=audit-table] tr[data-audit]")
    page.fill("[data-test=audit-user]", "张三")
    page.select_option("[data-test=audit-action]", "command")
    page.click("[data-test=audit-apply]")
    page.wait_for_selector(f"[data-test=audit-total]:has-text('共 {OLD_ROWS} 条')")
    assert page.locator("[data-test=audit-table] tr[data-audit]").count() == 50
    assert page.inner_text("[data-test=audit-page]") == f"第 1–50 条，共 {OLD_ROWS} 条"
    assert "节点命令" in page.inner_text("[data-test=audit-table] tbody tr:first-child")
    # The outcome is a word in the page's language, not the stored code ("ok").
    outcome = "[data-test=audit-table] tbody tr:first-child [data-test=audit-outcome]"
    assert page.inner_text(outcome) == "成功"
    assert page.is_disabled("[data-test=audit-prev]")
    page.click("[data-test=audit-next]")
    page.wait_for_selector(f"[data-test=audit-page]:has-text('第 51–{OLD_ROWS} 条')")
    assert page.locator("[data-test=audit-table] tr[data-audit]").count() == OLD_ROWS - 50
    assert page.is_disabled("[data-test=audit-next]")
    # Ten days ago the rows were written; a window ending eleven days ago has none of them.
    eleven = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 8 * 3600 - 11 * 86400))
    page.fill("[data-test=audit-to]", eleven)
    page.click("[data-test=audit-apply]")
    page.wait_for_selector("[data-test=audit-total]:has-text('共 0 条')")
    page.fill("[data-test=audit-to]", "")
    page.fill("[data-test=audit-from]", eleven)
    page.click("[data-test=audit-apply]")
    page.wait_for_selector(f"[data-test=audit-total]:has-text('共 {OLD_ROWS} 条')")
    screenshot(page, "admin-audit")


def test_a_receiver_is_changed_and_tested_and_an_open_page_follows_another_admin(
    browser: Any, central: Central
) -> None:
    rx = Receiver()
    mine = _page(browser, central, ADMIN, ADMIN_PASSWORD)
    theirs = _page(browser, central, OTHER_ADMIN, OTHER_PASSWORD)
    their_token = central.login(OTHER_ADMIN, OTHER_PASSWORD)["token"]
    try:
        for pg in (mine, theirs):
            open_dashboard(pg, central, "/dashboard/#/admin/rules")
            pg.wait_for_selector("[data-test=webhook][data-webhook='1']")
        # The other admin points receiver 1 at the new address; only the URL is typed.
        theirs.click("[data-webhook='1'] [data-act=edit]")
        assert theirs.input_value("[data-test=webhook-url]") == ""
        assert theirs.input_value("[data-test=webhook-attempts]") == "8"
        screenshot(theirs, "admin-webhook-edit")
        theirs.fill("[data-test=webhook-url]", f"{rx.url}?access_token=new-secret-42")
        theirs.click("[data-test=webhook-save]")
        theirs.wait_for_selector("[data-test=rules-message]:has-text('推送地址 1 已保存')")
        # My page, open all along, shows it without a reload, says who changed it, and never
        # holds the secret.
        shown = f"{rx.url}?access_token=***"
        mine.wait_for_selector(f"[data-webhook='1'] code:has-text('{shown}')")
        mine.wait_for_selector(f"[data-test=admin-changed]:has-text('{OTHER_ADMIN} 刚刚修改')")
        assert "new-secret-42" not in mine.content() and "new-secret-42" not in theirs.content()
        assert "已在页面修改" in mine.inner_text("[data-webhook='1']")
        # A test from my page reaches the receiver, and the page says what it answered.
        mine.click("[data-webhook='1'] [data-act=test]")
        mine.wait_for_selector(
            "[data-webhook='1'] [data-test=webhook-result]:has-text('测试已送达（HTTP 200）')"
        )
        tests = [b for b in rx.bodies if b["status"] == "test"]
        assert len(tests) == 1 and tests[0]["text"].startswith("【测试】视联告警推送测试（admin，")
        rx.statuses = [503] * 100  # alerts queued for the receiver may ask too
        mine.click("[data-webhook='1'] [data-act=test]")
        mine.wait_for_selector(
            "[data-webhook='1'] [data-test=webhook-result]:has-text('测试未送达：HTTP 503')"
        )
        screenshot(mine, "admin-webhooks")
        # While I type a new rule, the other admin adds one: the table gains it, my form keeps
        # what I typed.
        mine.fill("[data-test=rule-id]", "typed-not-saved")
        rule = {"id": "their-rule", "kind": "node_offline", "code": OTHER, "minutes": 30}
        central.call("POST", "/api/v1/alerts/rules", rule, token=their_token)
        mine.wait_for_selector("[data-test=rules-table] tr[data-rule='their-rule']")
        assert mine.input_value("[data-test=rule-id]") == "typed-not-saved"
        central.call("DELETE", "/api/v1/alerts/rules/their-rule", token=their_token)
        mine.wait_for_selector(
            "[data-test=rules-table] tr[data-rule='their-rule']", state="detached"
        )
        # Users: the other admin disables an operator; my users page shows it at once.
        open_dashboard(mine, central, "/dashboard/#/admin/users")
        row = "[data-test=users-table] tr[data-user='adoperator']"
        mine.wait_for_selector(f"{row} [data-test=user-state]:has-text('正常')")
        mine.fill(f"{row} [data-test=user-new-password]", "being-typed-1")
        central.call(
            "POST", "/api/v1/users/adoperator/disabled", {"disabled": True}, token=their_token
        )
        mine.wait_for_selector(f"{row} [data-test=user-state]:has-text('已停用')")
        assert mine.input_value(f"{row} [data-test=user-new-password]") == "being-typed-1"
        screenshot(mine, "admin-live")
        entries = central.get("/api/v1/audit?limit=20")["entries"]
        done = [(e["user"], e["action"], e["outcome"]) for e in entries if "webhook" in e["action"]]
        assert done[:3] == [
            (ADMIN, "webhook_test", "failed"), (ADMIN, "webhook_test", "ok"),
            (OTHER_ADMIN, "webhook_change", "ok"),
        ]  # fmt: skip
        for pg in (mine, theirs):
            pg.rec.check()
    finally:
        central.call("POST", "/api/v1/users/adoperator/disabled", {"disabled": False})
        central.call("PATCH", "/api/v1/alerts/webhooks/1", {"url": HOOK})
        mine.context.close()
        theirs.context.close()
        rx.close()
