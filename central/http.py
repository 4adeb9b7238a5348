"""What every route of central's HTTP API shares: the context, the JSON error answer and its
middleware, the application keys, and the checked query parameters.

Every error, including unknown routes and bugs, is a JSON body ``{"error": {"code", "message"}}``
whose message is Chinese first, then English (docs/api.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import prometheus_client
import psycopg
from aiohttp import web

from central import views
from central.config import AuthConfig
from central.coverage import CoverageIndex
from central.devices import DeviceIndex
from registry import Registry
from wire import MAX_PAYLOAD_BYTES, bounded_json, valid_node_id

if TYPE_CHECKING:
    from central.db import Target

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Largest request body: a command's args travel in one wire payload, which is capped anyway.
MAX_BODY_BYTES = MAX_PAYLOAD_BYTES
#: Page sizes of the lists: the default suits a screen; the cap keeps one call from reading the
#: whole table into memory (page with offset instead).
DEFAULT_PAGE = 100
MAX_PAGE = 1000

LEVEL_NAMES = {0: "全国", 1: "省级", 2: "地级", 3: "县级", 4: "乡级", 5: "村级"}
CODE_RE = re.compile(r"^\d{2}(\d{2}(\d{2}(\d{3}(\d{3})?)?)?)?$")
_JSON_DUMPS = functools.partial(json.dumps, ensure_ascii=False)
#: How often a long-waiting request checks that its client is still connected: aiohttp does not
#: cancel a handler whose client went away, so without a look the work would run to its end.
CLIENT_GONE_CHECK_S = 0.25


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
    body_timeout_s: float = 30.0  # [http] body_timeout_s: central.slow_clients
    #: node -> its clock's offset from central's, seconds, for nodes off by more than the bound
    clock_off: Mapping[str, float] = field(default_factory=dict)
    #: ``[store] url``: PostgreSQL instead of ``db_path`` for the modules on central.db
    db_url: str | None = None

    @property
    def db_target(self) -> Target:
        """The database of the modules on :mod:`central.db` (accounts, audit, ...)."""
        return self.db_url if self.db_url is not None else self.db_path


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


#: How long a client is told to wait before asking again while the database is unreachable.
DB_RETRY_AFTER_S = 5
#: Requests refused because central's database could not be reached (its PostgreSQL server
#: restarting, down or unreachable), registered by :func:`setup_db_errors`.
DB_UNAVAILABLE: web.AppKey[prometheus_client.Counter] = web.AppKey(
    "db_unavailable", prometheus_client.Counter
)


def setup_db_errors(app: web.Application, registry: prometheus_client.CollectorRegistry) -> None:
    app[DB_UNAVAILABLE] = prometheus_client.Counter(
        "shilian_http_database_unavailable",
        "数据库不可用而拒绝的请求 / API requests refused because the database was unreachable",
        registry=registry,
    )


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
    except psycopg.OperationalError as e:
        # The server is gone (restarting, down, unreachable), not a bug: the kept connection is
        # replaced at its next use, so the client asks again.
        log.warning("api: database unavailable on %s %s: %s", request.method, request.path, e)
        counter = request.app.get(DB_UNAVAILABLE)
        if counter is not None:
            counter.inc()
        return error_response(
            503,
            "database_unavailable",
            "数据库暂时不可用，请稍后重试 / the database is unavailable; try again shortly",
            {"Retry-After": str(DB_RETRY_AFTER_S)},
        )
    except Exception:
        log.exception("api: unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "服务器内部错误 / internal server error")


CTX: web.AppKey[ApiContext] = web.AppKey("ctx", ApiContext)
READS: web.AppKey[views.ReadViews] = web.AppKey("reads", views.ReadViews)


def json_body(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object, parsed with bounded depth
    (wire.bounded_json), or 400 ``bad_json``."""
    try:
        data = bounded_json.loads(raw)
    except bounded_json.JsonError as e:
        raise ApiError(
            400, "bad_json", f"请求体不是有效 JSON：{e.reason}", f"body is not JSON: {e.reason}"
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "请求体应为 JSON 对象", "body must be a JSON object")
    return data


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_JSON_DUMPS)


# -- parameters ---------------------------------------------------------------------------------


def params(request: web.Request, allowed: tuple[str, ...]) -> Mapping[str, str]:
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


def digits(q: Mapping[str, str], name: str, length: int) -> str | None:
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


def int_param(q: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
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


def unix_param(q: Mapping[str, str], name: str) -> float | None:
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


def choice(q: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
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


def node_id_param(value: str | None, status: int = 400) -> str | None:
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


def client_gone(request: web.Request) -> bool:
    """True once the client's connection is closed or closing."""
    return request.transport is None or request.transport.is_closing()


class ClientGone(Exception):
    """The client closed its connection while its request was being worked on."""


async def unless_client_gone(request: web.Request, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` for ``request``; if the client goes away first, cancel it (its own clean-up
    runs, as on any cancellation) and raise :class:`ClientGone`."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=CLIENT_GONE_CHECK_S)
            if done:
                return task.result()
            if client_gone(request):
                raise ClientGone
    finally:
        if not task.done():  # the client left, or the handler itself was cancelled
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
