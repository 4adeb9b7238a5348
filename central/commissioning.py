"""Commissioning reports stored at central, per node, with their history.

Routes (docs/api.md):

- ``POST /api/v1/nodes/{node_id}/commissioning`` the JSON report of ``shilian provision check``,
  with ``Authorization: Bearer <enrolment token>``: the token that enrolled this node, accepted
  for :data:`UPLOAD_WINDOW_S` after the enrolment. The route is public to the login middleware:
  this handler checks the token itself. 201 ``{"id", "node_id", "uploaded_at"}``.
- ``GET /api/v1/nodes/{node_id}/commissioning`` ``{"node_id", "latest", "reports"}``: the
  node's record whole (the newest report that passed, else the newest; ``failed_since`` counts
  the failed uploads after it, ``last_attempt_at`` the newest one's time), then every upload
  newest first (id, time, ok, technician). 404 when none.
- ``GET /dashboard/commissioning/{node_id}`` the latest report as a printable A4 page
  (zh-CN; ``?lang=en``).
- ``GET /api/v1/nodes/{node_id}/commissioning/status`` what the commissioning check needs
  (``state``, ``birth_seq``, ``health``: the number of health reports stored; central's ``Date``
  header), with the same enrolment token: a technician has no operator login. Public to the
  login middleware, like the upload.

Storage: table ``commissioning_reports`` in central's database (SQLite or PostgreSQL,
:mod:`central.db`); an upload is committed before the 201, so a report acknowledged to the
technician survives a power cut.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from central import auth
from central.commissioning_page import place_from_registry, render
from central.db import Db, Target, open_db
from central.http import error_response
from central.tokens import token_hash
from registry import Registry
from wire import bounded_json, valid_node_id

#: How long after enrolment the enrolment token may upload reports: a visit, and the re-checks
#: of the following days, not a standing credential.
UPLOAD_WINDOW_S = 7 * 24 * 3600.0
#: Largest report accepted: four steps are ~1 KiB; details are capped by the checker.
MAX_REPORT_BYTES = 64 * 1024
#: Uploads listed by the GET (newest first); older ones stay in the table.
MAX_LISTED = 100

_DUMPS = functools.partial(json.dumps, ensure_ascii=False)


class UploadRefused(Exception):
    def __init__(self, status: int, code: str, zh: str, en: str) -> None:
        super().__init__(f"{code}: {en}")
        self.status, self.code, self.zh, self.en = status, code, zh, en


def _error(
    status: int, code: str, zh: str, en: str, headers: dict[str, str] | None = None
) -> web.Response:
    return error_response(status, code, f"{zh} / {en}", headers)


def check_token(db: Db, token: str, node_id: str, now: float) -> None:
    """The token enrolled ``node_id`` less than :data:`UPLOAD_WINDOW_S` ago, or
    :class:`UploadRefused` (401 unknown, 403 another node or never used, 410 too late)."""
    row = db.fetchone(
        "SELECT used_at, used_by FROM enrol_tokens WHERE token_sha256 = ?",
        (token_hash(token),),
    )
    if row is None:
        raise UploadRefused(
            401,
            "token_unknown",
            "令牌无效：上传调试报告需使用该节点的入网令牌",
            "unknown token: upload the report with the node's enrolment token",
        )
    used_at, used_by = row
    if used_at is None or used_by != node_id:
        raise UploadRefused(
            403,
            "token_other_node",
            f"此令牌未用于节点 {node_id} 入网，不能上传它的调试报告",
            f"this token did not enrol node {node_id}; it cannot upload its report",
        )
    if now > used_at + UPLOAD_WINDOW_S:
        raise UploadRefused(
            410,
            "token_expired",
            f"入网已超过 {UPLOAD_WINDOW_S / 86400:g} 天，令牌不能再上传报告；请联系管理员",
            f"enrolment was more than {UPLOAD_WINDOW_S / 86400:g} days ago: the token can no "
            "longer upload reports; contact the administrator",
        )


#: Devices a report may list (provisioning.check.MAX_REPORT_DEVICES) and the longest value.
MAX_DEVICES = 64
MAX_DEVICE_FIELD = 128


def _valid_devices(devices: Any) -> bool:
    return (
        isinstance(devices, list)
        and len(devices) <= MAX_DEVICES
        and all(
            isinstance(d, dict)
            and len(d) <= 8
            and all(
                isinstance(k, str) and isinstance(v, str) and len(v) <= MAX_DEVICE_FIELD
                for k, v in d.items()
            )
            for d in devices
        )
    )


def validate_report(body: Any, node_id: str) -> dict[str, Any]:
    """The report's shape (provisioning.check.Report.to_json) or :class:`UploadRefused` 400."""
    steps = body.get("steps") if isinstance(body, dict) else None
    good = (
        isinstance(body, dict)
        and body.get("node_id") == node_id
        and isinstance(body.get("ok"), bool)
        and isinstance(body.get("started_at"), int | float)
        and isinstance(body.get("technician", ""), str)
        and len(body.get("technician", "")) <= 64
        and isinstance(steps, list)
        and len(steps) <= 16
        and all(
            isinstance(s, dict)
            and isinstance(s.get("step"), str)
            and isinstance(s.get("ok"), bool)
            and isinstance(s.get("detail", ""), str)
            and isinstance(s.get("seconds", 0), int | float)
            for s in steps
        )
        and _valid_devices(body.get("devices", []))
    )
    if not good:
        raise UploadRefused(
            400,
            "bad_report",
            "报告格式错误：应为 shilian provision check 生成的 report.json，且节点编号与地址一致",
            "malformed report: expected the report.json of shilian provision check, for the "
            "node named in the URL",
        )
    return dict(body)


class ReportStore:
    """The reports table (blocking: used from worker threads, one connection per call)."""

    def __init__(self, db: Target) -> None:
        self.db_target = db
        open_db(db).close()  # the schema brought up to date once

    def _connect(self) -> Db:
        return open_db(self.db_target, upgrade=False)

    def upload(self, token: str, node_id: str, body: Any, now: float) -> int:
        report = validate_report(body, node_id)
        conn = self._connect()
        try:
            check_token(conn, token, node_id, now)
            return _insert(conn, node_id, report, now)
        finally:
            conn.close()

    def record(self, reports: Iterable[tuple[str, Any, float]]) -> None:
        """Store reports (node id, report, uploaded at) already vouched for on central's box,
        without an enrolment token (e.g. the demo's month of history), in one transaction;
        each validated as an upload is."""
        checked = [(n, validate_report(body, n), at) for n, body, at in reports]
        conn = self._connect()
        try:
            with conn.transaction(write=True):
                for node_id, report, at in checked:
                    _insert(conn, node_id, report, at)
        finally:
            conn.close()

    def status(self, token: str, node_id: str, now: float) -> dict[str, Any] | None:
        conn = self._connect()
        try:
            check_token(conn, token, node_id, now)
            row = conn.fetchone(
                "SELECT state, birth_seq, "
                "(SELECT count(*) FROM health WHERE node_id = ?) FROM nodes WHERE node_id = ?",
                (node_id, node_id),
            )
        finally:
            conn.close()
        if row is None:
            return None
        return {"node_id": node_id, "state": row[0], "birth_seq": row[1], "health": row[2]}

    def reports(self, node_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """(latest report with its upload metadata, the list newest first)."""
        conn = self._connect()
        try:
            rows = conn.fetchall(
                "SELECT id, uploaded_at, ok, technician, report FROM commissioning_reports "
                "WHERE node_id = ? ORDER BY id DESC LIMIT ?",
                (node_id, MAX_LISTED),
            )
        finally:
            conn.close()
        listed = [
            {"id": i, "uploaded_at": at, "ok": bool(ok), "technician": tech}
            for i, at, ok, tech, _ in rows
        ]
        if not rows:
            return None, []
        # The record is the newest report that passed: a later failed re-check (a technician
        # trying from a laptop without the agent, a broker down for an hour) does not replace
        # the node's commissioning; it is noted beside it. Without a pass, the newest report.
        chosen = next((r for r in rows if r[2]), rows[0])
        latest = json.loads(chosen[4])
        latest["id"], latest["uploaded_at"] = chosen[0], chosen[1]
        later = [r for r in rows if r[0] > chosen[0]]
        latest["failed_since"] = len(later)
        latest["last_attempt_at"] = rows[0][1] if later else None
        return latest, listed


def _insert(db: Db, node_id: str, report: dict[str, Any], at: float) -> int:
    row = db.fetchone(
        "INSERT INTO commissioning_reports(node_id, uploaded_at, ok, technician, report) "
        "VALUES (?, ?, ?, ?, ?) RETURNING id",
        (node_id, at, int(report["ok"]), report.get("technician", ""), _DUMPS(report)),
    )
    assert row is not None  # RETURNING gives the new row
    return int(row[0])


def _node_id(request: web.Request) -> str:
    node_id = request.match_info["node_id"]
    if not valid_node_id(node_id):
        raise UploadRefused(
            400,
            "bad_node_id",
            "节点编号格式错误（应为 12 位村代码-名称）",
            "not a node id (12-digit village code, dash, name)",
        )
    return node_id


def _bearer(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        raise UploadRefused(
            401,
            "token_missing",
            "缺少令牌：请求头应为 Authorization: Bearer <入网令牌>",
            "missing token: send Authorization: Bearer <enrolment token>",
        )
    return auth[7:].strip()


def add_commissioning_routes(
    app: web.Application,
    db: Target,
    registry: Registry,
    clock: Callable[[], float] = time.time,
) -> None:
    """``db``: central's database (a SQLite path or a PostgreSQL URL)."""
    store = ReportStore(db)

    async def upload(request: web.Request) -> web.Response:
        if (retry := auth.guess_wait(request, "commissioning")) is not None:
            status, code, zh, en, headers = auth.throttled_answer(retry)
            return _error(status, code, zh, en, headers)
        try:
            node_id = _node_id(request)
            token = _bearer(request)
            raw = await request.content.read(MAX_REPORT_BYTES + 1)
            if len(raw) > MAX_REPORT_BYTES:
                raise UploadRefused(413, "body_too_large", "报告过大", "report too large")
            try:
                body = bounded_json.loads(raw)
            except bounded_json.JsonError as e:
                raise UploadRefused(
                    400, "bad_json", f"报告不是有效 JSON：{e.reason}", f"not JSON: {e.reason}"
                ) from None
            rid = await asyncio.to_thread(store.upload, token, node_id, body, clock())
        except UploadRefused as e:
            if e.status in (401, 403, 410):  # a wrong token: count the guess
                auth.guess_failed(request, "commissioning")
            return _error(e.status, e.code, e.zh, e.en)
        return web.json_response(
            {"id": rid, "node_id": node_id, "uploaded_at": clock()}, status=201, dumps=_DUMPS
        )

    async def status(request: web.Request) -> web.Response:
        if (retry := auth.guess_wait(request, "commissioning")) is not None:
            status, code, zh, en, headers = auth.throttled_answer(retry)
            return _error(status, code, zh, en, headers)
        try:
            node_id = _node_id(request)
            token = _bearer(request)
            st = await asyncio.to_thread(store.status, token, node_id, clock())
        except UploadRefused as e:
            if e.status in (401, 403, 410):  # a wrong token: count the guess
                auth.guess_failed(request, "commissioning")
            return _error(e.status, e.code, e.zh, e.en)
        if st is None:
            return _error(
                404, "unknown_node", "中心尚未见过本节点", "central has not seen this node yet"
            )
        return web.json_response(st, dumps=_DUMPS)

    async def get_reports(request: web.Request) -> web.Response:
        try:
            node_id = _node_id(request)
        except UploadRefused as e:
            return _error(e.status, e.code, e.zh, e.en)
        latest, listed = await asyncio.to_thread(store.reports, node_id)
        if latest is None:
            return _error(
                404,
                "no_report",
                f"节点 {node_id} 还没有调试报告",
                f"no commissioning report for node {node_id} yet",
            )
        return web.json_response(
            {"node_id": node_id, "latest": latest, "reports": listed}, dumps=_DUMPS
        )

    async def page(request: web.Request) -> web.Response:
        lang = "en" if request.query.get("lang") == "en" else "zh"
        try:
            node_id = _node_id(request)
        except UploadRefused as e:
            return _error(e.status, e.code, e.zh, e.en)
        latest, _ = await asyncio.to_thread(store.reports, node_id)
        if latest is None:  # the same JSON error as every other answer (docs/api.md)
            return _error(
                404,
                "no_report",
                f"节点 {node_id} 还没有调试报告",
                f"no commissioning report for node {node_id} yet",
            )
        body = render(latest, place_from_registry(registry, node_id), lang, request.path)
        return web.Response(text=body, content_type="text/html", charset="utf-8")

    app.router.add_post("/api/v1/nodes/{node_id}/commissioning", upload)
    app.router.add_get("/api/v1/nodes/{node_id}/commissioning", get_reports)
    app.router.add_get("/api/v1/nodes/{node_id}/commissioning/status", status)
    app.router.add_get("/dashboard/commissioning/{node_id}", page)
