"""Central's HTTP API (aiohttp): JSON under ``/api/v1``, Prometheus ``/metrics``, ``/healthz``.

Documented with an example of each response in docs/api.md. Coverage answers come from the
in-memory :class:`CoverageIndex` on the event loop (microseconds); everything else reads SQLite
through :class:`central.views.ReadViews` (read-only connections, off the loop). Every error,
including unknown routes and bugs, is a JSON body ``{"error": {"code", "message"}}`` whose
message is Chinese first, then English.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import prometheus_client
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from central import auth, views
from central.commands import CommandError
from central.config import AuthConfig
from central.coverage import CoverageIndex, UnitCoverage
from central.device_json import suppress, unit_json
from central.devices import DeviceIndex
from registry import Registry, Unit
from wire import MAX_PAYLOAD_BYTES, Priority, valid_node_id

log = logging.getLogger(__name__)

#: Largest request body: a command's args travel in one wire payload, which is capped anyway.
MAX_BODY_BYTES = MAX_PAYLOAD_BYTES
#: Page sizes of the lists: the default suits a screen; the cap keeps one call from reading the
#: whole table into memory (page with offset instead).
DEFAULT_PAGE = 100
MAX_PAGE = 1000
#: Command timeouts the caller may ask for: a node answers a ping in well under a second on a
#: good link; a minute covers a slow 4G uplink without holding HTTP connections for long.
DEFAULT_COMMAND_TIMEOUT_S = 5.0
MAX_COMMAND_TIMEOUT_S = 60.0
#: Extra time given to the command client beyond the caller's timeout before the API answers 504
#: itself (the client normally answers "timeout" on time; this bounds a client that does not).
COMMAND_GRACE_S = 5.0

LEVEL_NAMES = {0: "全国", 1: "省级", 2: "地级", 3: "县级", 4: "乡级", 5: "村级"}
_CODE_RE = re.compile(r"^\d{2}(\d{2}(\d{2}(\d{3}(\d{3})?)?)?)?$")
_JSON_DUMPS = functools.partial(json.dumps, ensure_ascii=False)


class CommandSender(Protocol):
    """What the API needs of central.commands.CommandClient."""

    async def request(
        self, node_id: str, cmd: str, args: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]: ...


@dataclass
class ApiContext:
    db_path: Path  # views open their own read-only connections (WAL readers)
    registry: Registry
    coverage: CoverageIndex
    metrics_registry: prometheus_client.CollectorRegistry
    commands: CommandSender | None
    clock: Callable[[], float]
    auth: AuthConfig = field(default_factory=AuthConfig)
    devices: DeviceIndex | None = None  # cameras, terminals: the stricter figure


class ApiError(Exception):
    """An error answer: HTTP status, a stable machine code, and a message in zh and en."""

    def __init__(
        self, status: int, code: str, zh: str, en: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{code}: {en}")
        self.status = status
        self.code = code
        self.message = f"{zh} / {en}"
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}},
        status=status,
        dumps=_JSON_DUMPS,
        headers=headers,
    )


_HTTP_ERRORS = {
    400: ("bad_request", "请求无效"),
    404: ("not_found", "没有这个地址"),
    405: ("method_not_allowed", "不支持该方法"),
    413: ("body_too_large", "请求体过大"),
}


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every failure into a JSON error; a bug is logged once with its traceback, and the
    client sees a 500 without internals."""
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e.status, e.code, e.message, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code, zh = _HTTP_ERRORS.get(e.status, ("http_error", "请求失败"))
        return error_response(e.status, code, f"{zh} / {e.reason}")
    except Exception:
        log.exception("api: unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "服务器内部错误 / internal server error")


CTX: web.AppKey[ApiContext] = web.AppKey("ctx", ApiContext)
READS: web.AppKey[views.ReadViews] = web.AppKey("reads", views.ReadViews)


def make_app(ctx: ApiContext) -> web.Application:
    """The API application; its read pool is closed on the app's cleanup. Every route needs a
    login unless central.auth lists it as public (routes added later included)."""
    app = web.Application(
        middlewares=[json_errors, auth.require_login], client_max_size=MAX_BODY_BYTES
    )
    app[CTX] = ctx
    auth.setup(app, ctx, ctx.clock)
    app[READS] = views.ReadViews(ctx.db_path)

    async def close_reads(app: web.Application) -> None:
        await asyncio.to_thread(app[READS].close)

    app.on_cleanup.append(close_reads)
    app.router.add_get("/api/v1/coverage", coverage)
    app.router.add_get("/api/v1/coverage/{code}", coverage)
    app.router.add_get("/api/v1/nodes", nodes)
    app.router.add_get("/api/v1/nodes/{node_id}", node)
    app.router.add_post("/api/v1/nodes/{node_id}/commands", command)
    app.router.add_get("/api/v1/events", events)
    # Imported here: central.alarms builds on this module's helpers (ApiError, parameters).
    from central import alarms

    alarms.add_routes(app)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


def _ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_JSON_DUMPS)


# -- parameters ---------------------------------------------------------------------------------


def _params(request: web.Request, allowed: tuple[str, ...]) -> Mapping[str, str]:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise ApiError(
            400,
            "bad_param",
            f"未知参数 {', '.join(unknown)}（可用：{', '.join(allowed)}）",
            f"unknown parameter {', '.join(unknown)} (allowed: {', '.join(allowed)})",
        )
    for name in request.query:
        if len(request.query.getall(name)) > 1:
            raise ApiError(400, "bad_param", f"参数 {name} 重复", f"parameter {name} repeated")
    return request.query


def _digits(q: Mapping[str, str], name: str, length: int) -> str | None:
    value = q.get(name)
    if value is None or value == "":
        return None
    if len(value) != length or not value.isdigit():
        raise ApiError(
            400,
            "bad_param",
            f"参数 {name} 应为 {length} 位区划代码：{value[:40]!r}",
            f"{name} must be a {length}-digit division code: {value[:40]!r}",
        )
    return value


def _int(q: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = q.get(name)
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        n = low - 1
    if not low <= n <= high:
        raise ApiError(
            400,
            "bad_param",
            f"参数 {name} 应为 {low} 到 {high} 之间的整数：{value[:40]!r}",
            f"{name} must be an integer from {low} to {high}: {value[:40]!r}",
        )
    return n


def _unix(q: Mapping[str, str], name: str) -> float | None:
    value = q.get(name)
    if not value:
        return None
    try:
        ts = float(value)
    except ValueError:
        ts = -1.0
    if not 0 <= ts < float("inf"):
        raise ApiError(
            400,
            "bad_param",
            f"参数 {name} 应为 Unix 秒：{value[:40]!r}",
            f"{name} must be Unix seconds: {value[:40]!r}",
        )
    return ts


def _choice(q: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    value = q.get(name)
    if value is None or value == "":
        return None
    if value not in choices:
        raise ApiError(
            400,
            "bad_param",
            f"参数 {name} 应为 {' / '.join(choices)} 之一：{value[:40]!r}",
            f"{name} must be one of {', '.join(choices)}: {value[:40]!r}",
        )
    return value


def _node_id(value: str | None, status: int = 400) -> str | None:
    if value is None or value == "":
        return None
    if not valid_node_id(value):
        raise ApiError(
            status,
            "bad_param" if status == 400 else "unknown_node",
            f"节点编号无效：{value[:60]!r}（应为 12 位村代码-名称，如 450102001001-a）",
            f"not a node id: {value[:60]!r} (12-digit village code, dash, name)",
        )
    return value


def known_unit(registry: Registry, code: str) -> str:
    """``code`` if it is a unit of ``registry``, else a 404 ``unknown_unit``."""
    if registry.unit(code) is None:
        raise ApiError(
            404,
            "unknown_unit",
            f"区划代码 {code[:40]!r} 不在登记范围内",
            f"no unit {code[:40]!r} in the registry scope",
        )
    return code


# -- coverage -----------------------------------------------------------------------------------


def _unit_json(c: UnitCoverage) -> dict[str, Any]:
    return {
        "code": c.code,
        "name": c.name,
        "level": c.level,
        "level_name": LEVEL_NAMES[c.level],
        "villages": c.villages,
        "provisioned": c.provisioned,
        "covered": c.covered,
        "ratio": c.ratio,
    }


def _crumb(u: Unit) -> dict[str, Any]:
    return {"code": u.code, "name": u.name, "level": u.level}


async def coverage(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    _params(request, ())
    code = request.match_info.get("code") or auth.root_of(request)
    scope = auth.scope_of(request)
    unit = ctx.registry.unit(code) if (code == ctx.registry.scope or _CODE_RE.match(code)) else None
    if unit is None:
        root = ctx.registry.root()
        raise ApiError(
            404,
            "unknown_unit",
            f"区划代码 {code[:40]!r} 不在登记范围（{root.name} {root.code}）内",
            f"no unit {code[:40]!r} in the registry scope ({root.code or 'whole country'})",
        )
    body: dict[str, Any] = {
        "scope": ctx.registry.scope,
        "unit": _unit_json(ctx.coverage.summary(code)),
        "ancestors": [_crumb(u) for u in ctx.registry.ancestors(code) if u.code.startswith(scope)],
        "children": [_unit_json(c) for c in ctx.coverage.children(code)],
    }
    if ctx.devices is not None:
        for u in (body["unit"], *body["children"]):
            u["video"] = unit_json(ctx.devices, u["code"])
    if ctx.registry.has_village(code):
        body["nodes"] = await request.app[READS].run(lambda c: views.village_nodes(c, code))
    return _ok(body)


# -- nodes and events ---------------------------------------------------------------------------


def _with_names(registry: Registry, node: dict[str, Any]) -> dict[str, Any]:
    village = registry.unit(node["village"])
    county = registry.unit(node["county"])
    retired = registry.retired_village(node["village"])
    node["village_name"] = village.name if village else retired
    node["county_name"] = county.name if county else None
    # The village code is gone from the imported registry edition: the node is kept, flagged.
    node["village_retired"] = retired is not None
    return node


async def nodes(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    q = _params(
        request, ("village", "township", "county", "state", "seen_before", "limit", "offset")
    )
    f = views.NodeFilter(
        village=_digits(q, "village", 12),
        township=_digits(q, "township", 9),
        county=_digits(q, "county", 6),
        state=_choice(q, "state", ("online", "offline")),
        scope=auth.list_scope(request),
        seen_before=_unix(q, "seen_before"),
    )
    limit = _int(q, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    offset = _int(q, "offset", 0, 0, 2**31)
    total, rows = await request.app[READS].run(lambda c: views.list_nodes(c, f, limit, offset))
    return _ok(
        {
            "total": total,
            "limit": limit,
            "offset": offset,
            "nodes": [_with_names(ctx.registry, r) for r in rows],
        }
    )


def _unknown_node(node_id: str) -> ApiError:
    return ApiError(
        404, "unknown_node", f"中心未见过节点 {node_id}", f"central has never seen node {node_id}"
    )


async def node(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    _params(request, ())
    node_id = _node_id(request.match_info["node_id"], status=404)
    assert node_id is not None
    detail = await request.app[READS].run(lambda c: views.node_detail(c, node_id))
    if detail is None:
        raise _unknown_node(node_id)
    suppress(detail["devices"], detail["state"] == "online")  # offline: devices unknown
    return _ok(_with_names(ctx.registry, detail))


async def events(request: web.Request) -> web.Response:
    q = _params(request, ("node", "village", "county", "priority", "since", "limit"))
    f = views.EventFilter(
        node=_node_id(q.get("node")),
        village=_digits(q, "village", 12),
        county=_digits(q, "county", 6),
        priority=_choice(q, "priority", tuple(p.value for p in Priority)),
        since=_unix(q, "since"),
        scope=auth.list_scope(request),
    )
    limit = _int(q, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    rows = await request.app[READS].run(lambda c: views.list_events(c, f, limit))
    return _ok({"limit": limit, "events": rows})


# -- commands -----------------------------------------------------------------------------------


#: CommandError codes raised by central itself (not the node) -> (HTTP status, error code).
_CLIENT_ERRORS = {
    "offline": (409, "node_offline"),
    "unavailable": (503, "broker_unavailable"),
    "busy": (503, "busy"),
    "bad_request": (400, "bad_request"),
}


class CommandBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cmd: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$", description="e.g. ping, get-config")
    args: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(default=DEFAULT_COMMAND_TIMEOUT_S, gt=0, le=MAX_COMMAND_TIMEOUT_S)


def _command_body(raw: bytes) -> CommandBody:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(
            400, "bad_json", f"请求体不是有效 JSON：{e}", f"body is not JSON: {e}"
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "请求体应为 JSON 对象", "body must be a JSON object")
    try:
        return CommandBody.model_validate(data)
    except ValidationError as e:
        where = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()
        )
        raise ApiError(
            400, "bad_body", f"请求体字段无效：{where}", f"invalid body: {where}"
        ) from None


async def command(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    _params(request, ())
    node_id = _node_id(request.match_info["node_id"], status=404)
    assert node_id is not None
    body = _command_body(await request.read())
    if not await request.app[READS].run(lambda c: views.node_exists(c, node_id)):
        raise _unknown_node(node_id)
    if ctx.commands is None:
        raise ApiError(
            503,
            "commands_unavailable",
            "本中心未启用节点命令",
            "commands to nodes are not enabled on this central",
        )
    outcome = "ok"
    try:
        async with asyncio.timeout(body.timeout_s + COMMAND_GRACE_S):
            result = await ctx.commands.request(node_id, body.cmd, body.args, body.timeout_s)
    except TimeoutError:
        outcome = "timeout"
        raise ApiError(
            504, "timeout", f"节点 {node_id} 未在规定时间内应答", f"no reply from {node_id} in time"
        ) from None
    except CommandError as e:
        outcome = e.code
        if e.code == "timeout":
            raise ApiError(
                504,
                "timeout",
                f"节点 {node_id} 未在 {body.timeout_s:g} 秒内应答",
                f"no reply from {node_id} within {body.timeout_s:g} s",
            ) from None
        if e.code in _CLIENT_ERRORS:
            status, code = _CLIENT_ERRORS[e.code]
            return error_response(status, code, e.message)
        return error_response(502, e.code, e.message)  # the node's own error code
    finally:
        await auth.audit(request, "command", node_id, outcome, cmd=body.cmd, args=body.args)
    return _ok({"node": node_id, "cmd": body.cmd, "result": result})


# -- metrics and health -------------------------------------------------------------------------


async def metrics(request: web.Request) -> web.Response:
    # On the loop on purpose: the coverage collector reads the CoverageIndex, which is only
    # consistent on the loop's thread; the output is a few dozen series (cities and counties).
    body = prometheus_client.generate_latest(request.app[CTX].metrics_registry)
    return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    return _ok(
        {
            "status": "ok",
            "time": ctx.clock(),
            "scope": ctx.registry.scope,
            "nodes_known": ctx.coverage.known_nodes(),
            "nodes_online": ctx.coverage.online_nodes(),
        }
    )
