"""The OpenAPI 3.1 document of central's HTTP API, served at ``/api/v1/openapi.json`` and
written to docs/openapi.json by ``python -m central.openapi``.

One entry of :data:`OPERATIONS` per (method, route pattern) that central mounts, including the
optional ones (firmware, enrolment) and the dashboard's pages. Request bodies reuse the routes'
pydantic models; responses name their status, media type and the keys clients rely on (objects
stay open: a key added later is not a break). Who may call what comes from central.auth's table,
so the document and the login middleware cannot disagree. tests/test_openapi.py fails when a
mounted route is missing here or an entry names a route that is not mounted.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from central import auth
from central.alarms import AckBody
from central.alert_routes import WebhookChange
from central.alerts import AlertRule
from central.api import MAX_COMMAND_TIMEOUT_S, CommandBody
from central.auth import LoginBody
from central.meeting_routes import CallBody, CameraBody, PrepareBody
from central.user_routes import Disabled, NewPassword, NewUser
from wire.topics import NODE_ID_RE
from wire.version import __version__

JSON = "application/json"
DOC_PATH = "/api/v1/openapi.json"
Schema = dict[str, Any]


def _obj(*required: str, **props: Schema) -> Schema:
    """An open object with the keys clients rely on."""
    s: Schema = {"type": "object", "required": list(required)}
    if props:
        s["properties"] = props
    return s


_STR: Schema = {"type": "string"}
_INT: Schema = {"type": "integer"}
_NUM: Schema = {"type": "number"}
_BOOL: Schema = {"type": "boolean"}
_OBJS: Schema = {"type": "array", "items": {"type": "object"}}
_PAGE = {"total": _INT, "limit": _INT, "offset": _INT}


@dataclass(frozen=True)
class Op:
    """One operation: what it does, its query parameters, its JSON body and its answer."""

    summary: str
    query: Mapping[str, Schema] = field(default_factory=dict)
    body: Schema | None = None
    body_media: str = JSON
    status: tuple[int, ...] = (200,)
    media: str = JSON
    response: Schema | None = None  # for JSON answers; None: any object


def _model(model: type[BaseModel] | TypeAdapter[Any]) -> Schema:
    if isinstance(model, TypeAdapter):
        return model.json_schema(ref_template="#/components/schemas/{model}")
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


_CODE: Schema = {"type": "string", "pattern": r"^\d{2}(\d{2}(\d{2}(\d{3}(\d{3})?)?)?)?$"}
_DAY: Schema = {"type": "string", "format": "date"}
_UNIX: Schema = {"type": "number", "minimum": 0}
_LIMIT: Schema = {"type": "integer", "minimum": 1, "maximum": 1000}
_OFFSET: Schema = {"type": "integer", "minimum": 0}
_LANG: Schema = {"type": "string", "enum": ["zh", "en"]}
_RULES = TypeAdapter(list[AlertRule])

#: Path parameters by name, as the routes check them.
PATH_PARAMS: Mapping[str, Schema] = {
    "code": _CODE,
    "node_id": {"type": "string", "pattern": NODE_ID_RE.pattern},
    "event_id": {"type": "integer", "minimum": 1},
    "camera": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,31}$"},
    "session": {"type": "string", "pattern": r"^[0-9a-f]{32}$"},
    "sha256": {"type": "string", "pattern": r"^[0-9a-f]{64}$"},
    "user": {"type": "string", "minLength": 1, "maxLength": 64},
    "rule_id": {"type": "string", "minLength": 1},
    "name": {"type": "string", "minLength": 1},
    "n": {"type": "integer", "minimum": 1},  # a webhook receiver, as listed (1-based)
}

_COVERAGE = _obj("scope", "unit", "ancestors", "children", unit=_obj("code", "name", "ratio"))
_NODE_FILTER = {"village": _CODE, "township": _CODE, "county": _CODE}

OPERATIONS: Mapping[tuple[str, str], Op] = {
    # -- session ---------------------------------------------------------------------------------
    ("POST", "/api/v1/login"): Op(
        "Log in: a session cookie and a bearer token / 登录",
        body=_model(LoginBody),
        response=_obj("token", "role", "scope", token=_STR, role=_STR, scope=_STR),
    ),
    ("POST", "/api/v1/logout"): Op("End this session / 退出", response=_obj("logged_out")),
    ("GET", "/api/v1/me"): Op("The logged-in user / 当前用户", response=_obj("user", "role")),
    ("GET", "/api/v1/audit"): Op(
        "The audit log / 审计日志",
        query={"user": _STR, "action": _STR, "since": _UNIX, "until": _UNIX}
        | {"limit": _LIMIT, "offset": _OFFSET},
        response=_obj("total", "limit", "offset", "entries", entries=_OBJS, **_PAGE),
    ),
    ("GET", DOC_PATH): Op("This document / 本接口说明", response=_obj("openapi", "paths")),
    # -- coverage, nodes, events, commands -------------------------------------------------------
    ("GET", "/api/v1/coverage"): Op("Coverage of the caller's scope / 覆盖率", response=_COVERAGE),
    ("GET", "/api/v1/coverage/{code}"): Op("Coverage of one unit / 单位覆盖率", response=_COVERAGE),
    ("GET", "/api/v1/nodes"): Op(
        "Nodes / 节点列表",
        query=_NODE_FILTER
        | {"state": {"type": "string", "enum": ["online", "offline"]}, "seen_before": _UNIX}
        | {"limit": _LIMIT, "offset": _OFFSET},
        response=_obj("total", "limit", "offset", "nodes", nodes=_OBJS, **_PAGE),
    ),
    ("GET", "/api/v1/nodes/{node_id}"): Op(
        "One node / 节点详情", response=_obj("node_id", "village")
    ),
    ("POST", "/api/v1/nodes/{node_id}/commands"): Op(
        f"Send a command and wait up to {MAX_COMMAND_TIMEOUT_S:g} s for its answer / 节点命令",
        body=_model(CommandBody),
        response=_obj("node", "cmd", "result"),
    ),
    ("GET", "/api/v1/events"): Op(
        "Events, newest first / 事件",
        query={"node": PATH_PARAMS["node_id"], "village": _CODE, "county": _CODE}
        | {"priority": {"type": "string", "enum": ["alarm", "info"]}, "since": _UNIX}
        | {"limit": _LIMIT},
        response=_obj("limit", "events", events=_OBJS),
    ),
    ("GET", "/metrics"): Op("Prometheus metrics / 指标", media="text/plain"),
    ("GET", "/healthz"): Op("Liveness / 存活检查", response=_obj("status", "scope")),
    # -- alarms ----------------------------------------------------------------------------------
    ("GET", "/api/v1/alarms"): Op(
        "Alarms / 报警",
        query={
            "state": {"type": "string", "enum": ["open", "acked", "closed", "handled", "all"]},
            "node": PATH_PARAMS["node_id"],
            "village": _CODE,
            "county": _CODE,
            "severity": _STR,
            "since": _UNIX,
            "until": _UNIX,
            "order": {"type": "string", "enum": ["open_first", "newest"]},
            "limit": _LIMIT,
            "offset": _OFFSET,
        },
        response=_obj("alarms", alarms=_OBJS),
    ),
    ("POST", "/api/v1/alarms/{event_id}/ack"): Op(
        "Acknowledge an alarm / 确认报警", body=_model(AckBody)
    ),
    ("POST", "/api/v1/alarms/{event_id}/close"): Op(
        "Close an alarm / 关闭报警", body=_model(AckBody)
    ),
    ("GET", "/api/v1/alarms/{event_id}/snapshots"): Op(
        "Snapshots taken for an alarm / 报警抓拍", response=_obj("alarm", "snapshots")
    ),
    ("GET", "/api/v1/alarms/{event_id}/snapshots/{camera}"): Op(
        "One snapshot / 抓拍图片", media="image/jpeg"
    ),
    # -- users -----------------------------------------------------------------------------------
    ("GET", "/api/v1/users"): Op("Accounts / 用户", response=_obj("users", users=_OBJS)),
    ("POST", "/api/v1/users"): Op("Add an account / 添加用户", body=_model(NewUser), status=(201,)),
    ("POST", "/api/v1/users/{user}/password"): Op(
        "Set a password / 设置密码", body=_model(NewPassword)
    ),
    ("POST", "/api/v1/users/{user}/disabled"): Op(
        "Disable or enable an account / 停用或启用", body=_model(Disabled)
    ),
    # -- alerts ----------------------------------------------------------------------------------
    ("GET", "/api/v1/alerts"): Op("Active alerts / 告警", query={"code": _CODE}),
    ("GET", "/api/v1/alerts/rules"): Op("Alert rules / 告警规则", response=_obj("source", "rules")),
    ("PUT", "/api/v1/alerts/rules"): Op(
        "Replace the alert rules (null: back to the config's) / 替换告警规则",
        body=_obj("rules", rules={"anyOf": [_model(_RULES), {"type": "null"}]}),
        response=_obj("source", "rules"),
    ),
    ("POST", "/api/v1/alerts/rules"): Op(
        "Add an alert rule / 添加告警规则", body=_model(TypeAdapter(AlertRule)), status=(201,)
    ),
    ("PUT", "/api/v1/alerts/rules/{rule_id}"): Op(
        "Change an alert rule / 修改告警规则", body=_model(TypeAdapter(AlertRule))
    ),
    ("DELETE", "/api/v1/alerts/rules/{rule_id}"): Op(
        "Delete an alert rule / 删除告警规则", response=_obj("deleted")
    ),
    ("PUT", "/api/v1/alerts/webhooks/{n}"): Op(
        "Change a webhook receiver (fields left out are kept) / 修改推送接收方",
        body=_model(WebhookChange),
        response=_obj("id", "url"),
    ),
    ("PATCH", "/api/v1/alerts/webhooks/{n}"): Op(
        "Change a webhook receiver (fields left out are kept) / 修改推送接收方",
        body=_model(WebhookChange),
        response=_obj("id", "url"),
    ),
    ("POST", "/api/v1/alerts/webhooks/{n}/test"): Op(
        "Send a test message to a webhook receiver now / 向推送接收方发送测试",
        response=_obj("id", "url", "ok", "status", "error"),
    ),
    # -- reports, devices ------------------------------------------------------------------------
    ("GET", "/api/v1/history/coverage"): Op(
        "Daily coverage trend / 覆盖率趋势",
        query={"code": _CODE, "days": {"type": "integer", "minimum": 1, "maximum": 366}}
        | {"since": _DAY, "until": _DAY},
    ),
    ("GET", "/api/v1/reports/coverage.xlsx"): Op(
        "Coverage report (XLSX) / 覆盖率报表",
        query={"code": _CODE, "since": _DAY, "until": _DAY},
        media="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    ("GET", "/api/v1/reports/coverage.csv"): Op(
        "Coverage report (CSV) / 覆盖率报表",
        query={"code": _CODE, "since": _DAY, "until": _DAY},
        media="text/csv",
    ),
    ("GET", "/api/v1/devices"): Op(
        "Cameras and terminals / 设备",
        query={"code": _CODE, "kind": _STR, "status": _STR, "sort": _STR}
        | {"limit": _LIMIT, "offset": _OFFSET},
    ),
    # -- dashboard -------------------------------------------------------------------------------
    ("GET", "/api/v1/live"): Op("Live updates / 实时推送", media="text/event-stream"),
    ("GET", "/api/v1/dashboard/overview"): Op("Dashboard overview / 总览", query={"code": _CODE}),
    ("GET", "/api/v1/dashboard/search"): Op("Search units and nodes / 搜索", query={"q": _STR}),
    ("GET", "/api/v1/dashboard/coverage.csv"): Op(
        "Coverage table (CSV) / 覆盖率表", query={"code": _CODE}, media="text/csv"
    ),
    ("GET", "/api/v1/dashboard/nodes/{node_id}/reports"): Op(
        "A node's commissioning summary / 调试摘要"
    ),
    ("GET", "/"): Op("To the dashboard / 跳转到大屏", status=(302,), media=""),
    ("GET", "/dashboard"): Op("To the dashboard / 跳转到大屏", status=(302,), media=""),
    ("GET", "/dashboard/"): Op(
        "The dashboard / 大屏", query={"lang": _LANG, "wall": _STR}, media="text/html"
    ),
    ("GET", "/dashboard/login"): Op(
        "Login page / 登录页", query={"lang": _LANG}, media="text/html"
    ),
    ("GET", "/dashboard/static/{name}"): Op("Dashboard assets / 页面资源", media="*/*"),
    ("GET", "/dashboard/report"): Op(
        "Report page / 报表页", query={"lang": _LANG}, media="text/html"
    ),
    ("GET", "/dashboard/broadcast"): Op(
        "Broadcast page / 广播页", query={"code": _CODE, "lang": _LANG}, media="text/html"
    ),
    ("GET", "/dashboard/meeting"): Op(
        "Meeting page / 会议页",
        query={"node": PATH_PARAMS["node_id"], "lang": _LANG},
        media="text/html",
    ),
    ("GET", "/dashboard/commissioning/{node_id}"): Op(
        "Commissioning report page / 调试报告页", query={"lang": _LANG}, media="text/html"
    ),
    # -- meetings --------------------------------------------------------------------------------
    ("POST", "/api/v1/meetings"): Op(
        "Call a village / 发起会议",
        body=_model(CallBody),
        response=_obj("session", "node", "sdp"),
    ),
    ("POST", "/api/v1/meetings/prepare"): Op(
        "Open a village's camera ahead of a call / 预备摄像机",
        body=_model(PrepareBody),
        status=(202,),
        response=_obj("node", "camera"),
    ),
    ("GET", "/api/v1/meetings"): Op(
        "Meeting history / 会议记录",
        query={"village": _CODE, "limit": _LIMIT, "offset": _OFFSET},
        response=_obj("total", "meetings", meetings=_OBJS),
    ),
    ("GET", "/api/v1/meetings/{session}"): Op("One meeting / 会议详情"),
    ("DELETE", "/api/v1/meetings/{session}"): Op("Hang up / 挂断"),
    ("POST", "/api/v1/meetings/{session}/camera"): Op(
        "Switch camera / 切换摄像机", body=_model(CameraBody), response=_obj("session", "camera")
    ),
    ("POST", "/api/v1/meetings/{session}/stats"): Op(
        "Media figures reported by the page / 会议质量", body={"type": "object"}
    ),
    # -- commissioning, firmware, enrolment (nodes' own credentials) ---------------------------
    ("POST", "/api/v1/nodes/{node_id}/commissioning"): Op(
        "Upload a commissioning report (enrolment token) / 上传调试报告",
        body={"type": "object"},
        status=(201,),
        response=_obj("id", "node_id", "uploaded_at"),
    ),
    ("GET", "/api/v1/nodes/{node_id}/commissioning"): Op("Commissioning reports / 调试报告"),
    ("GET", "/api/v1/nodes/{node_id}/commissioning/status"): Op(
        "What central has seen of the node (enrolment token) / 节点接入状态"
    ),
    ("POST", "/api/v1/firmware"): Op(
        "Upload a signed firmware image / 上传固件",
        body={"type": "string", "format": "binary"},
        body_media="application/octet-stream",
        status=(200, 201),
    ),
    ("GET", "/api/v1/firmware"): Op("Firmware images / 固件列表", response=_obj("images")),
    ("GET", "/api/v1/firmware/{sha256}"): Op(
        "Download an image / 下载固件", media="application/octet-stream"
    ),
    ("POST", "/api/v1/enrol"): Op(
        "Enrol a node: a certificate for its CSR (one-time token) / 节点注册",
        body=_obj("token", "csr_pem", token=_STR, csr_pem=_STR),
        response=_obj("node_id", "cert_pem", "ca_pem", "not_after", "broker"),
    ),
}

_ERROR: Schema = _obj(
    "error",
    error=_obj("code", "message", code=_STR, message={"type": "string", "pattern": " / "}),
)
_PATTERN_NAME = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def routes_of(app: web.Application) -> set[tuple[str, str]]:
    """(method, route pattern) of every route mounted on ``app``; HEAD, which aiohttp adds beside
    each GET, is left out."""
    out = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        canonical = route.resource.canonical if route.resource is not None else ""
        out.add((route.method, _PATTERN_NAME.sub(r"{\1}", canonical)))
    return out


def _security(method: str, path: str) -> tuple[list[dict[str, list[str]]], str]:
    role = auth.required_role(method, path, metrics_public=path == "/metrics")
    if role is None:
        return [], "Public: no login. / 无需登录。"
    return [
        {"bearer": []},
        {"session": []},
    ], f"Least role: {role.value}. / 最低角色：{role.value}。"


def _operation(method: str, path: str, op: Op) -> Schema:
    security, who = _security(method, path)
    params: list[Schema] = [
        {"name": name, "in": "path", "required": True, "schema": PATH_PARAMS[name]}
        for name in _PATTERN_NAME.findall(path)
    ]
    params += [{"name": n, "in": "query", "schema": s} for n, s in op.query.items()]
    responses: Schema = {}
    for status in op.status:
        answer: Schema = {"description": op.summary}
        if op.media:
            schema = op.response or {"type": "object"} if op.media == JSON else {}
            answer["content"] = {op.media: {"schema": schema}}
        responses[str(status)] = answer
    errors = {"content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}
    responses["4XX"] = {"description": "The request was refused / 请求被拒绝", **errors}
    responses["5XX"] = {
        "description": "Central cannot serve it now (node offline, busy) / 暂时无法处理",
        **errors,
    }
    out: Schema = {
        "summary": op.summary,
        "description": who,
        "operationId": f"{method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', path)}",
        "security": security,
        "responses": responses,
    }
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {op.body_media: {"schema": op.body}}}
    return out


def _hoist(doc: Schema) -> Schema:
    """Move pydantic's ``$defs`` into ``components/schemas`` (their refs already point there)."""
    defs: Schema = doc["components"]["schemas"]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, schema in node.pop("$defs", {}).items():
                defs[name] = schema
                walk(schema)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc["paths"])
    return doc


def document(operations: Mapping[tuple[str, str], Op] = OPERATIONS) -> Schema:
    """The OpenAPI 3.1 document of ``operations``."""
    paths: Schema = {}
    for (method, path), op in sorted(operations.items()):
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, op)
    doc: Schema = {
        "openapi": "3.1.0",
        "info": {
            "title": "视联 shilian central API",
            "version": __version__,
            "description": "Central's HTTP API (docs/api.md). Errors are JSON "
            '{"error": {"code", "message"}}, the message Chinese first, then English.',
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": auth.COOKIE},
            },
        },
    }
    return _hoist(copy.deepcopy(doc))  # the shared schemas of OPERATIONS stay as they are


def undocumented(routes: Iterable[tuple[str, str]]) -> tuple[set[tuple[str, str]], set[Any]]:
    """(mounted routes the document lacks, documented routes that are not mounted)."""
    mounted = set(routes)
    return mounted - set(OPERATIONS), set(OPERATIONS) - mounted


def dumps(doc: Schema) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=True) + "\n"


_DOC_BYTES: bytes | None = None


async def serve(request: web.Request) -> web.Response:
    global _DOC_BYTES
    if _DOC_BYTES is None:  # built once: the document is fixed for the life of the process
        _DOC_BYTES = dumps(document()).encode()
    return web.Response(body=_DOC_BYTES, content_type=JSON, charset="utf-8")


def add_routes(app: web.Application) -> None:
    app.router.add_get(DOC_PATH, serve)


def main(argv: list[str]) -> int:
    """``python -m central.openapi [PATH]``: write the document (default docs/openapi.json)."""
    out = Path(argv[0] if argv else "docs/openapi.json")
    out.write_text(dumps(document()), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
