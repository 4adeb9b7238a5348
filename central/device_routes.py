"""HTTP routes of cameras, conference terminals and the information-system link (docs/api.md):

- ``GET /api/v1/devices?code=&kind=&status=&sort=&limit=&offset=`` the devices under a unit
  (township or village for the device list, any unit for the "cameras not ok" table), with
  their effective state and health (``unknown`` / ``node_offline`` while their node is offline)
  and what the node last reported.

Answered from the in-memory :class:`~central.devices.DeviceIndex` on the event loop (the same
numbers as the figures beside them). The user's scope is enforced by central.auth on ``code``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from central import auth, http
from central.device_json import device_json
from central.devices import KINDS, DeviceIndex, DeviceView

#: Page sizes: a township's devices fit in the default; the cap keeps one answer bounded (a
#: county has a few thousand cameras: page with offset).
DEFAULT_PAGE = 200
MAX_PAGE = 2000
#: ``status`` filter: every device, those not ok (suppressed ones included: their last report
#: is shown), or those not ok whose node is online (the "cameras not ok" table: a node offline
#: is one fault shown elsewhere, not one per camera).
STATUSES = ("all", "not_ok", "failing")
SORTS = ("device", "since")

DEVICES: web.AppKey[DeviceIndex] = web.AppKey("devices", DeviceIndex)


def add_routes(app: web.Application, index: DeviceIndex) -> None:
    app[DEVICES] = index
    app.router.add_get("/api/v1/devices", devices)


def _keep(v: DeviceView, kind: str | None, status: str) -> bool:
    if kind is not None and v.device.kind != kind:
        return False
    if status == "not_ok":
        return v.device.health != "ok"
    if status == "failing":
        return not v.suppressed and not v.ok
    return True


def _since(v: DeviceView) -> float:
    d = v.device
    return d.since if d.since is not None else d.ts


async def devices(request: web.Request) -> web.Response:
    ctx = request.app[http.CTX]
    allowed = ("code", "kind", "status", "sort", "limit", "offset")
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise http.ApiError(
            400,
            "bad_param",
            f"未知参数 {', '.join(unknown)}（可用：{', '.join(allowed)}）",
            f"unknown parameter {', '.join(unknown)} (allowed: {', '.join(allowed)})",
        )
    q = request.query
    code = http.known_unit(ctx.registry, q.get("code") or auth.root_of(request))
    kind = _pick(q.get("kind"), "kind", KINDS, None)
    status = _pick(q.get("status"), "status", STATUSES, "all") or "all"
    sort = _pick(q.get("sort"), "sort", SORTS, "device") or "device"
    limit = _int(q.get("limit"), "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    offset = _int(q.get("offset"), "offset", 0, 0, 2**31)
    rows = [v for v in request.app[DEVICES].devices(code) if _keep(v, kind, status)]
    if sort == "since":
        rows.sort(key=_since)  # longest first
    page = []
    for v in rows[offset : offset + limit]:
        d = device_json(v)
        village = ctx.registry.unit(v.device.village)
        d["village_name"] = village.name if village else None
        page.append(d)
    body: dict[str, Any] = {
        "code": code,
        "total": len(rows),
        "limit": limit,
        "offset": offset,
        "time": ctx.clock(),
        "devices": page,
    }
    return web.json_response(body, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def _pick(
    value: str | None, name: str, choices: tuple[str, ...], default: str | None
) -> str | None:
    if not value:
        return default
    if value not in choices:
        raise http.ApiError(
            400,
            "bad_param",
            f"参数 {name} 应为 {' / '.join(choices)} 之一：{value[:40]!r}",
            f"{name} must be one of {', '.join(choices)}: {value[:40]!r}",
        )
    return value


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if not value:
        return default
    try:
        n = int(value)
    except ValueError:
        n = low - 1
    if not low <= n <= high:
        raise http.ApiError(
            400,
            "bad_param",
            f"参数 {name} 应为 {low} 到 {high} 之间的整数：{value[:40]!r}",
            f"{name} must be an integer from {low} to {high}: {value[:40]!r}",
        )
    return n
