"""Operator accounts, sessions and the audit log in central's database, on both backends
(central.accounts, central.audit), and the user commands reaching the configured database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from central import audit
from central.accounts import TOUCH_S, AccountError, AccountStore, Role, record_local, token_hash
from central.cli import app as central_app
from central.db import Target

PW = "a long enough password"


@pytest.fixture
def store(db_target: Target) -> Iterator[AccountStore]:
    s = AccountStore(db_target)
    try:
        yield s
    finally:
        s.close()


def test_users_add_list_and_duplicates(store: AccountStore) -> None:
    assert store.user_count() == 0
    u = store.add("ann", Role.operator, "450102", PW, 100.0)
    assert (u.name, u.role, u.scope, u.disabled, u.created) == ("ann", Role.operator, "450102",
                                                                 False, 100.0)  # fmt: skip
    store.add("bob", Role.viewer, "", PW, 101.0)
    with pytest.raises(AccountError) as e:
        store.add("ann", Role.admin, "", PW, 102.0)
    assert e.value.code == "user_exists"
    assert [x.name for x in store.users()] == ["ann", "bob"]
    assert store.user_count() == 2
    assert store.get("nobody") is None


def test_sessions_touch_expire_and_end_with_a_new_password(store: AccountStore) -> None:
    store.add("ann", Role.admin, "", PW, 0.0)
    token, session = store.create_session("ann", "10.0.0.1", 1000.0, max_s=3600.0, idle_s=600.0)
    assert session.user == "ann" and session.role is Role.admin
    assert store.lookup(token, 1001.0, 600.0).session is not None
    assert store.session_alive(token_hash(token), 1001.0)
    # used after TOUCH_S: its idle expiry moves on
    assert store.lookup(token, 1000.0 + TOUCH_S + 1, 600.0).session is not None
    assert store.lookup(token, 1000.0 + 600.0 + 30, 600.0).session is not None
    assert store.lookup("not-a-token", 1002.0, 600.0).reason == "unknown"
    store.set_password("ann", PW + "2", 1100.0)
    assert store.lookup(token, 1101.0, 600.0).reason == "unknown"
    assert not store.session_alive(token_hash(token), 1101.0)


def test_idle_and_disabled_sessions(store: AccountStore) -> None:
    store.add("ann", Role.viewer, "", PW, 0.0)
    t1, _ = store.create_session("ann", "a", 1000.0, 3600.0, 600.0)
    assert store.lookup(t1, 1700.0, 600.0).reason == "expired"  # idle: deleted
    assert store.lookup(t1, 1701.0, 600.0).reason == "unknown"
    t2, _ = store.create_session("ann", "a", 2000.0, 3600.0, 600.0)
    t3, _ = store.create_session("ann", "a", 2000.0, 3600.0, 600.0)
    store.set_disabled("ann", True, 2001.0)
    assert store.lookup(t2, 2002.0, 600.0).reason == "unknown"  # its sessions ended
    assert store.password_hash("ann") is None
    store.set_disabled("ann", False, 2003.0)
    assert store.password_hash("ann") is not None
    t4, _ = store.create_session("ann", "a", 2004.0, 3600.0, 600.0)
    assert store.purge_sessions(2004.0 + 700.0, 600.0) == 1
    assert store.lookup(t3, 2005.0, 600.0).reason == "unknown"
    assert store.lookup(t4, 2704.0, 600.0).reason == "unknown"
    with pytest.raises(AccountError):
        store.set_disabled("nobody", True, 1.0)


def test_audit_log_records_and_filters(store: AccountStore, db_target: Target) -> None:
    for i, (user, action) in enumerate(
        [("ann", "login"), ("bob", "login"), ("ann", "alarm_ack"), (None, "login_failed")]
    ):
        store.audit(audit.Entry(100.0 + i, user, "admin", "10.0.0.1", action, "t%", "ok",
                                {"n": i, "note": "50% ?"}))  # fmt: skip
    record_local(db_target, "user_add", "carl", "ok", role="viewer")
    total, rows = audit.list_audit(store.db, audit.AuditFilter(), 3, 0)
    assert total == 5 and len(rows) == 3
    assert rows[0]["action"] == "user_add" and rows[0]["user"].startswith("cli:")
    assert rows[1]["user"] is None and rows[1]["detail"] == {"n": 3, "note": "50% ?"}
    total, rows = audit.list_audit(store.db, audit.AuditFilter(user="ann"), 10, 0)
    assert total == 2 and [r["action"] for r in rows] == ["alarm_ack", "login"]
    total, rows = audit.list_audit(
        store.db, audit.AuditFilter(action="login", since=100.5, until=200.0), 10, 0
    )
    assert total == 1 and rows[0]["user"] == "bob"
    total, rows = audit.list_audit(store.db, audit.AuditFilter(), 10, 4)
    assert total == 5 and [r["ts"] for r in rows] == [100.0]


def test_user_commands_reach_the_configured_database(tmp_path: Path, db_target: Target) -> None:
    store = f'path = "{db_target}"' if isinstance(db_target, Path) else f'url = "{db_target}"'
    cfg = tmp_path / "central.toml"
    cfg.write_text(f"[store]\n{store}\n", encoding="utf-8")
    runner = CliRunner()

    def run(*args: str, stdin: str | None = None) -> str:
        r = runner.invoke(central_app, list(args), input=stdin)
        assert r.exit_code == 0, r.output
        return r.stdout

    run("user", "add", "ann", "--config", str(cfg), "--role", "admin", "--password-stdin",
        stdin=PW + "\n")  # fmt: skip
    run("user", "disable", "ann", "--config", str(cfg))
    assert "ann\tadmin\t*\t停用 disabled" in run("user", "list", "--config", str(cfg))
    run("user", "enable", "ann", "--config", str(cfg))
    run("user", "passwd", "ann", "--config", str(cfg), "--password-stdin", stdin=PW + "3\n")
    log = run("audit", "--config", str(cfg))
    assert [line.split("\t")[4] for line in log.splitlines()] == [
        "user_passwd", "user_enable", "user_disable", "user_add"
    ]  # fmt: skip
    s = AccountStore(db_target)
    try:
        assert store and s.password_hash("ann") is not None
    finally:
        s.close()
