"""Commissioning reports in central's database, on both backends (central.commissioning's
ReportStore, central.commissioning_summary); the routes end to end: test_central_commissioning."""

from __future__ import annotations

import pytest

from central.commissioning import UPLOAD_WINDOW_S, ReportStore, UploadRefused
from central.commissioning_summary import commissioning_summary
from central.db import Target, open_db
from central.tokens import TokenStore
from tests.test_central_commissioning import report

NODE = "450102001003-a"
OTHER = "450102001003-b"
NOW = 1_700_000_000.0


def _enrolled_token(t: Target) -> str:
    db = open_db(t)
    try:
        store = TokenStore(db, lambda: NOW)
        token = store.create(NODE, 3600)
        store.redeem(token, NODE)
        return token
    finally:
        db.close()


def test_upload_list_and_summary(db_target: Target) -> None:
    token = _enrolled_token(db_target)
    store = ReportStore(db_target)
    first = store.upload(token, NODE, report(NODE, ok=True), NOW + 10)
    second = store.upload(token, NODE, report(NODE, ok=False, technician="王工"), NOW + 20)
    assert second > first
    latest, listed = store.reports(NODE)
    assert latest is not None
    assert latest["id"] == first and latest["failed_since"] == 1  # the pass stays the record
    assert latest["last_attempt_at"] == NOW + 20
    assert [(r["id"], r["ok"], r["technician"]) for r in listed] == [
        (second, False, "王工"),
        (first, True, "李工"),
    ]
    assert store.reports(OTHER) == (None, [])
    db = open_db(db_target)
    try:
        assert commissioning_summary(db, NODE) == {
            "id": second, "uploaded_at": NOW + 20, "ok": False, "technician": "王工"
        }  # fmt: skip
        assert commissioning_summary(db, OTHER) is None
    finally:
        db.close()


def test_tokens_are_checked(db_target: Target) -> None:
    token = _enrolled_token(db_target)
    store = ReportStore(db_target)
    with pytest.raises(UploadRefused) as e:
        store.upload("x" * 43, NODE, report(NODE), NOW)
    assert e.value.status == 401
    with pytest.raises(UploadRefused) as e:
        store.upload(token, OTHER, report(OTHER), NOW)
    assert e.value.status == 403
    with pytest.raises(UploadRefused) as e:
        store.upload(token, NODE, report(NODE), NOW + UPLOAD_WINDOW_S + 1)
    assert e.value.status == 410
    assert store.reports(NODE) == (None, [])


def test_status_and_recorded_history(db_target: Target) -> None:
    token = _enrolled_token(db_target)
    store = ReportStore(db_target)
    assert store.status(token, NODE, NOW) is None  # central has not seen the node
    db = open_db(db_target)
    try:
        db.execute(
            "INSERT INTO nodes(node_id, village, county, state, state_since, state_reason, "
            "birth_seq, health_interval_s, sw_version, first_seen, last_seen) "
            "VALUES (?, '450102001003', '450102', 'online', 1, '', 2, 30, '1', 1, 1)",
            (NODE,),
        )
        db.executemany(
            "INSERT INTO health(node_id, ts, recv_ts, body) VALUES (?, ?, ?, '{}')",
            [(NODE, float(i), float(i)) for i in range(3)],
        )
    finally:
        db.close()
    assert store.status(token, NODE, NOW) == {
        "node_id": NODE, "state": "online", "birth_seq": 2, "health": 3
    }  # fmt: skip
    store.record([(NODE, report(NODE), NOW - 100), (NODE, report(NODE, ok=False), NOW - 50)])
    latest, listed = store.reports(NODE)
    assert latest is not None and latest["uploaded_at"] == NOW - 100 and len(listed) == 2
