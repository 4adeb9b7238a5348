"""Commissioning reports stored at central: upload authenticated by the node's enrolment token,
history per node, the printable page, and the technician CLI resuming an upload that failed.

Real peers: mosquitto with the generated TLS config, central as a subprocess holding the CA, the
technician CLI (tests/test_prov_flow.py's site)."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from provisioning.cli import app
from shilian.broker import free_port
from tests.processes import Proc
from tests.test_prov_flow import Site, cli, make_site

A, B, C = "450102101201-a", "450102101201-b", "450102101201-c"
runner = CliRunner()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from make_site(tmp_path_factory.mktemp("commissioning"))


def enrol(site: Site, node_id: str) -> tuple[str, Path]:
    token = cli("token", "create", "--node", node_id, "--db", str(site.central.db)).strip()
    work = site.root / node_id
    cli("keygen", "--node", node_id, "--dir", str(work))
    cli("enrol", "--central", site.central.api, "--token", token, "--dir", str(work))
    return token, work


def report(node_id: str, ok: bool = True, technician: str = "李工") -> dict[str, Any]:
    steps = [
        {"step": s, "ok": ok or s == "tls", "detail": f"{s} detail", "seconds": 0.5}
        for s in ("tls", "birth", "health", "clock")
    ]
    return {
        "node_id": node_id,
        "central": "http://central",
        "started_at": time.time(),
        "ok": ok,
        "technician": technician,
        "steps": steps,
    }


def post(site: Site, node_id: str, body: Any, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        f"{site.central.api}/api/v1/nodes/{node_id}/commissioning",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


_VIEWER: dict[Path, str] = {}


def viewer_token(site: Site) -> str:
    """A viewer session made in central's database (the GET routes need a login)."""
    if site.central.db not in _VIEWER:
        from central.accounts import AccountStore, Role

        store = AccountStore(site.central.db)
        try:
            store.add("viewer1", Role.viewer, "", "a long enough password 1", time.time())
            token, _ = store.create_session("viewer1", "test", time.time(), 3600.0, 3600.0)
        finally:
            store.close()
        _VIEWER[site.central.db] = token
    return _VIEWER[site.central.db]


def get_json(site: Site, path: str) -> Any:
    status, text = fetch(site, path)
    assert status == 200, text
    return json.loads(text)


def fetch(site: Site, path: str) -> tuple[int, str]:
    req = urllib.request.Request(
        site.central.api + path, headers={"Authorization": f"Bearer {viewer_token(site)}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_upload_needs_the_token_that_enrolled_the_node(site: Site) -> None:
    token_a, _ = enrol(site, A)
    token_b, _ = enrol(site, B)
    unused = cli("token", "create", "--node", A, "--db", str(site.central.db)).strip()

    status, body = post(site, A, report(A), token_a)
    assert status == 201 and body["node_id"] == A
    status, body = post(site, A, report(A, ok=False, technician="王工"), token_a)
    assert status == 201
    got = get_json(site, f"/api/v1/nodes/{A}/commissioning")
    # the passed report stays the record; the later failure is counted beside it
    assert got["latest"]["ok"] is True and got["latest"]["failed_since"] == 1
    assert [r["technician"] for r in got["reports"]] == ["王工", "李工"]  # history, newest first

    refusals = {
        "no token": post(site, A, report(A), None),
        "unknown": post(site, A, report(A), "x" * 43),
        "another node's": post(site, A, report(A), token_b),
        "never used": post(site, A, report(A), unused),
        "report of another node": post(site, A, report(B), token_a),
    }
    assert {k: (s, b["error"]["code"]) for k, (s, b) in refusals.items()} == {
        "no token": (401, "token_missing"),
        "unknown": (401, "token_unknown"),
        "another node's": (403, "token_other_node"),
        "never used": (403, "token_other_node"),
        "report of another node": (400, "bad_report"),
    }
    assert "入网令牌" in refusals["unknown"][1]["error"]["message"]

    # a week after the enrolment the token no longer uploads
    conn = sqlite3.connect(site.central.db)
    with conn:
        conn.execute(
            "UPDATE enrol_tokens SET used_at = ? WHERE used_by = ?", (time.time() - 8 * 86400, A)
        )
    conn.close()
    status, body = post(site, A, report(A), token_a)
    assert (status, body["error"]["code"]) == (410, "token_expired")
    assert len(get_json(site, f"/api/v1/nodes/{A}/commissioning")["reports"]) == 2

    status, _ = fetch(site, f"/api/v1/nodes/{C}/commissioning")
    assert status == 404


def test_printable_page(site: Site) -> None:
    token, _ = enrol(site, C)
    assert post(site, C, report(C, technician="<b>张工</b>"), token)[0] == 201
    status, page = fetch(site, f"/dashboard/commissioning/{C}")
    assert status == 200
    for text in ("视联网节点调试报告", C, "三塘镇", "兴宁区", "通过", "张工", "size: A4"):
        assert text in page, text
    assert "<b>张工</b>" not in page  # a value from the box is escaped
    year = time.localtime().tm_year
    assert f"{year}年" in page and "月" in page and "日" in page
    status, en = fetch(site, f"/dashboard/commissioning/{C}?lang=en")
    assert status == 200 and "commissioning report" in en and "Township" in en
    assert fetch(site, "/dashboard/commissioning/450102101201-zz")[0] == 404


def test_cli_saves_html_and_resumes_the_upload(site: Site) -> None:
    node = "450102101201-d"
    _, work = enrol(site, node)
    cli(
        "write-config",
        *("--dir", str(work), "--outbox", str(work / "o.sqlite3"), "--socket", str(work / "s")),
        *("--metrics-port", str(free_port())),
    )
    agent = Proc(
        [sys.executable, "-m", "shilian", "edge", "run", "--config", str(work / "edge.toml")],
        work / "edge.log",
    )
    agent.start()
    try:
        # central unreachable: the report is saved (JSON + HTML), the upload is left pending
        dead = f"http://127.0.0.1:{free_port()}"
        r = runner.invoke(app, ["check", "--dir", str(work), "--central", dead, "--timeout", "0"])
    finally:
        agent.close()
    assert r.exit_code == 1
    assert (work / "report.json").exists() and (work / "report.html").exists()
    assert "三塘镇" in (work / "report.html").read_text("utf-8")
    assert "provision node" in "".join(r.output.split()).replace("provisionnode", "provision node")
    status, _ = fetch(site, f"/api/v1/nodes/{node}/commissioning")
    assert status == 404
    # provision node resumes the upload
    cli("node", "--node", node, "--central", site.central.api, "--dir", str(work), "--skip-check")
    got = get_json(site, f"/api/v1/nodes/{node}/commissioning")
    saved = json.loads((work / "report.json").read_text("utf-8"))
    assert got["latest"]["started_at"] == saved["started_at"] and got["latest"]["ok"] is False


def test_a_check_central_refuses_says_why(site: Site) -> None:
    """A technician back at a node a week later: central refuses the old enrolment token, and
    the check says what central said (and what to do), not just a status code."""
    node = "450102101201-w"
    _, work = enrol(site, node)
    cli(
        "write-config",
        *("--dir", str(work), "--outbox", str(work / "o.sqlite3"), "--socket", str(work / "s")),
        *("--metrics-port", str(free_port())),
    )
    with sqlite3.connect(site.central.db) as db:
        db.execute(
            "UPDATE enrol_tokens SET used_at = used_at - 8 * 86400 WHERE used_by = ?", (node,)
        )
    agent = Proc(
        [sys.executable, "-m", "shilian", "edge", "run", "--config", str(work / "edge.toml")],
        work / "edge.log",
    )
    agent.start()
    try:
        r = runner.invoke(app, ["check", "--dir", str(work), "--timeout", "0"])
    finally:
        agent.close()
    assert r.exit_code == 1
    said = "".join(r.output.split())
    # The failed step itself, not only the upload after it, carries central's reason.
    step = said[said.index("birthseenbycentral") : said.index("可打印报告")]
    assert "HTTP410" in step and "入网已超过7天" in step and "请联系管理员" in step, r.output
    assert "contacttheadministrator" in step


def test_page_reads_top_down_in_one_language_with_devices() -> None:
    from central.commissioning_page import Place, render

    r = report(C)
    r["steps"] = [
        {"step": "tls", "ok": True, "detail": "127.0.0.1:8883 TLSv1.2", "seconds": 0.1},
        {"step": "birth", "ok": True, "detail": "online", "seconds": 1.0},
        {"step": "health", "ok": True, "detail": "3 report(s)", "seconds": 2.0},
        {"step": "clock", "ok": True, "detail": "skew +0.4 s", "seconds": 0.1},
    ]
    r["devices"] = [
        {"kind": "camera", "name": "村委会大门", "address": "192.168.1.64", "detail": "DS-2CD"},
        {"kind": "alarm_board", "name": "b1", "address": "/dev/ttyS1", "detail": "fw 1.0, 8 in"},
    ]
    page = render(r, Place(village="三塘村委会", county="兴宁区", township="三塘镇"))
    body = page[page.index("<body>") :]
    # county › township › village › node, top-down; the county label is the official one
    assert body.index("兴宁区") < body.index("三塘镇") < body.index("三塘村委会") < body.index(C)
    assert "县（市、区）" in page
    assert "结论：" in page and "结论:" not in page  # full-width colon in Chinese
    for english in ("report(s)", "online", "skew", "TLSv1.2)"):  # 说明 column in Chinese
        assert english not in body.split('<table class="steps">')[1].split("</table>")[0]
    assert "已收到 3 份健康报告" in page and "与中心相差 +0.4 秒" in page
    assert "摄像机" in page and "村委会大门" in page and "报警板" in page and "/dev/ttyS1" in page
    en = render(r, Place(village="三塘村委会", county="兴宁区", township="三塘镇"), "en")
    assert "Result: " in en and "3 report(s)" in en and "Camera" in en


def test_a_failed_recheck_does_not_replace_the_passed_report(site: Site) -> None:
    node = "450102101201-r"
    token, _ = enrol(site, node)
    assert post(site, node, report(node, ok=True, technician="张工"), token)[0] == 201
    assert post(site, node, report(node, ok=False, technician="李工"), token)[0] == 201
    got = get_json(site, f"/api/v1/nodes/{node}/commissioning")
    assert got["latest"]["ok"] is True and got["latest"]["technician"] == "张工"
    assert got["latest"]["failed_since"] == 1 and got["latest"]["last_attempt_at"] is not None
    assert [r["ok"] for r in got["reports"]] == [False, True]  # the history keeps both
    status, page = fetch(site, f"/dashboard/commissioning/{node}")
    assert status == 200 and "通过" in page and "此后有 1 次复检未通过" in page
