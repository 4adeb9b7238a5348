"""Central's HTTP API (aiohttp): JSON under ``/api/v1``, Prometheus ``/metrics``, ``/healthz``.

Documented with an example of each response in docs/api.md. Coverage answers come from the
in-memory :class:`CoverageIndex` on the event loop (microseconds); everything else reads SQLite
through :class:`central.views.ReadViews` (readers off the loop). Every error,
including unknown routes and bugs, is a JSON body ``{"error": {"code", "message"}}`` whose
message is Chinese first, then English.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import prometheus_client
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from central import auth, body_errors, views
from central.commands import CommandError
from central.coverage import UnitCoverage
from central.device_json import suppress, unit_json
from central.http import (
    CODE_RE,
    CTX,
    DEFAULT_PAGE,
    LEVEL_NAMES,
    MAX_PAGE,
    READS,
    ApiError,
    choice,
    digits,
    error_response,
    int_param,
    json_body,
    node_id_param,
    ok,
    params,
    unix_param,
)
from registry import Registry, Unit
from wire import Priority

log = logging.getLogger(__name__)

#: Command timeouts the caller may ask for: a node answers a ping in well under a second on a
#: good link; a minute covers a slow 4G uplink without holding HTTP connections for long.
DEFAULT_COMMAND_TIMEOUT_S = 5.0
MAX_COMMAND_TIMEOUT_S = 60.0
#: Extra time given to the command client beyond the caller's timeout before the API answers 504
#: itself (the client normally answers "timeout" on time; this bounds a client that does not).
COMMAND_GRACE_S = 5.0


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/coverage", coverage)
    app.router.add_get("/api/v1/coverage/{code}", coverage)
    app.router.add_get("/api/v1/nodes", nodes)
    app.router.add_get("/api/v1/nodes/{node_id}", node)
    app.router.add_post("/api/v1/nodes/{node_id}/commands", command)
    app.router.add_get("/api/v1/events", events)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)


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
    params(request, ())
    code = request.match_info.get("code") or auth.root_of(request)
    scope = auth.scope_of(request)
    unit = ctx.registry.unit(code) if (code == ctx.registry.scope or CODE_RE.match(code)) else None
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
    return ok(body)


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
    q = params(
        request, ("village", "township", "county", "state", "seen_before", "limit", "offset")
    )
    f = views.NodeFilter(
        village=digits(q, "village", 12),
        township=digits(q, "township", 9),
        county=digits(q, "county", 6),
        state=choice(q, "state", ("online", "offline")),
        scope=auth.list_scope(request),
        seen_before=unix_param(q, "seen_before"),
    )
    limit = int_param(q, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    offset = int_param(q, "offset", 0, 0, 2**31)
    total, rows = await request.app[READS].run(lambda c: views.list_nodes(c, f, limit, offset))
    return ok(
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
    params(request, ())
    node_id = node_id_param(request.match_info["node_id"], status=404)
    assert node_id is not None
    detail = await request.app[READS].run(lambda c: views.node_detail(c, node_id))
    if detail is None:
        raise _unknown_node(node_id)
    suppress(detail["devices"], detail["state"] == "online")  # offline: devices unknown
    off = ctx.clock_off.get(node_id)
    detail["clock_off_s"] = None if off is None else round(off, 1)
    return ok(_with_names(ctx.registry, detail))


async def events(request: web.Request) -> web.Response:
    q = params(request, ("node", "village", "county", "priority", "since", "limit"))
    f = views.EventFilter(
        node=node_id_param(q.get("node")),
        village=digits(q, "village", 12),
        county=digits(q, "county", 6),
        priority=choice(q, "priority", tuple(p.value for p in Priority)),
        since=unix_param(q, "since"),
        scope=auth.list_scope(request),
    )
    limit = int_param(q, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    rows = await request.app[READS].run(lambda c: views.list_events(c, f, limit))
    return ok({"limit": limit, "events": rows})


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
    data = json_body(raw)
    try:
        return CommandBody.model_validate(data)
    except ValidationError as e:
        zh, en = body_errors.explain(e)
        raise ApiError(400, "bad_body", f"请求体有误：{zh}", f"invalid body: {en}") from None


async def command(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    params(request, ())
    node_id = node_id_param(request.match_info["node_id"], status=404)
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
    return ok({"node": node_id, "cmd": body.cmd, "result": result})


# -- metrics and health -------------------------------------------------------------------------


async def metrics(request: web.Request) -> web.Response:
    # On the loop on purpose: the coverage collector reads the CoverageIndex, which is only
    # consistent on the loop's thread; the output is a few dozen series (cities and counties).
    body = prometheus_client.generate_latest(request.app[CTX].metrics_registry)
    return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    return ok(
        {
            "status": "ok",
            "time": ctx.clock(),
            "scope": ctx.registry.scope,
            "nodes_known": ctx.coverage.known_nodes(),
            "nodes_online": ctx.coverage.online_nodes(),
        }
    )
