"""Login, roles and county scope on central's HTTP server, in one middleware.

Who may do what is declared in one table (:data:`RULES` over aiohttp's route patterns), not in
the handlers: any route without an entry needs ``viewer`` for GET/HEAD and ``admin`` for every
other method, so a route added later is closed by default. :data:`PUBLIC` lists what needs no
login. Scope is enforced here too, from the request alone: a route's ``{code}`` or
``{node_id}`` (its first 12 digits are the village) and the query parameters ``code``,
``county``, ``township``, ``village`` and ``node`` must lie under the user's scope, else 403
``out_of_scope``. Lists without a filter are narrowed by the handlers with :func:`list_scope`.

Helpers for handlers (also other modules'): :func:`principal`, :func:`scope_of`,
:func:`check_scope`, :func:`root_of`, :func:`list_scope` and ``await audit(request, action,
target, outcome, **detail)``.

Authentication: ``Authorization: Bearer <token>`` or the ``shilian_session`` cookie (HttpOnly,
SameSite=Strict) set by ``POST /api/v1/login``. Accounts and sessions: central.accounts; the
audit log: central.audit. Unauthenticated API calls get 401 JSON; a page request (``Accept:
text/html``) is redirected to ``/dashboard/login?next=…``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from central import audit as audit_log
from central import http
from central.accounts import (
    MAX_PASSWORD_CHARS,
    AccountStore,
    Lookup,
    Role,
    Session,
    Throttle,
    verify_password,
)
from central.config import AuthConfig
from central.db import Target

log = logging.getLogger("shilian.central.auth")

T = TypeVar("T")

COOKIE = "shilian_session"
#: Password hashes computed at once: each argon2id verification takes ~64 MiB and ~0.1 s of a
#: core; a flood of logins queues here instead of exhausting memory on a 2-core box.
MAX_CONCURRENT_HASHES = 2

#: Wait added to each login for a name that failed :data:`central.accounts.MAX_FAILURES` times
#: within the window, from any addresses. Guessing one name from many addresses then costs a
#: second per try, while the real user, whose address is not throttled, still gets in (a
#: lockout by name would let anyone lock an operator out).
NAME_DELAY_S = 1.0

#: (method, route pattern) answered without login. ``/metrics`` is added when
#: ``[auth] metrics_public`` (the default: Prometheus scrapes it).
PUBLIC: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/healthz"),
        ("POST", "/api/v1/login"),
        ("POST", "/api/v1/logout"),  # ends the session it is given, if any
        ("POST", "/api/v1/enrol"),  # the one-time enrolment token is the credential
        ("POST", "/api/v1/nodes/{node_id}/commissioning"),  # the node's enrolment token
        ("GET", "/api/v1/nodes/{node_id}/commissioning/status"),  # the same token
        ("GET", "/api/v1/firmware/{sha256}"),  # signed images fetched by nodes
        ("GET", "/dashboard/login"),
        ("GET", "/dashboard/static/{name}"),
        ("GET", "/"),
        ("GET", "/dashboard"),  # a redirect to /dashboard/
    }
)
#: Routes whose minimum role is not the default (GET/HEAD: viewer; anything else: admin).
RULES: Mapping[tuple[str, str], Role] = {
    ("POST", "/api/v1/alarms/{event_id}/ack"): Role.operator,
    ("POST", "/api/v1/alarms/{event_id}/close"): Role.operator,
    ("GET", "/api/v1/audit"): Role.admin,
    ("GET", "/api/v1/users"): Role.admin,  # central.user_routes; its POSTs: admin by default
    # meetings: operators call the villages of their scope (central.meeting_routes)
    ("POST", "/api/v1/meetings"): Role.operator,
    ("POST", "/api/v1/meetings/prepare"): Role.operator,
    ("DELETE", "/api/v1/meetings/{session}"): Role.operator,
    ("POST", "/api/v1/meetings/{session}/camera"): Role.operator,
    ("POST", "/api/v1/meetings/{session}/stats"): Role.operator,
}
#: Query parameters that name a unit (or a node: its village) and so must be in scope.
SCOPE_PARAMS = ("code", "county", "township", "village", "node")


def required_role(method: str, route: str, metrics_public: bool) -> Role | None:
    """The least role for ``method`` on the route pattern ``route``; None: public."""
    m = "GET" if method == "HEAD" else method
    key = (m, route)
    if key in PUBLIC or (metrics_public and key == ("GET", "/metrics")):
        return None
    if key in RULES:
        return RULES[key]
    return Role.viewer if m == "GET" else Role.admin


def in_scope(scope: str, code: str) -> bool:
    """``code`` (a unit, or a village) lies at or under ``scope`` ("" is everything)."""
    return code.startswith(scope)


def request_codes(match_info: Mapping[str, str], query: Any) -> list[str]:
    """Every unit code a request names: its route's ``code``, the village of its ``node_id``,
    and the scope query parameters (empty values mean "not given")."""
    codes = []
    if match_info.get("code"):
        codes.append(match_info["code"])
    if match_info.get("node_id"):
        codes.append(match_info["node_id"][:12])
    for name in SCOPE_PARAMS:
        for value in query.getall(name, []):
            if value:
                codes.append(value[:12] if name == "node" else value)
    return codes


class Auth:
    """Per-application state: the account store (on its own thread), throttle and metrics."""

    def __init__(
        self,
        cfg: AuthConfig,
        db: Target,
        clock: Callable[[], float],
        throttle: Throttle | None = None,
    ) -> None:
        self.cfg = cfg
        self.db_target = db
        self.clock = clock
        self.throttle = throttle or Throttle()
        self.idle_s = cfg.session_idle_minutes * 60.0
        self.max_s = cfg.session_max_hours * 3600.0
        self.logins = Counter(
            "shilian_central_logins",
            "登录尝试 / login attempts by outcome (ok, bad_credentials, throttled, no_users)",
            ["outcome"],
            registry=None,
        )
        self.denied = Counter(
            "shilian_central_auth_denied",
            "被拒绝的请求 / requests refused (unauthenticated, expired, forbidden, out_of_scope, "
            "csrf, content_type)",
            ["reason"],
            registry=None,
        )
        self.throttled = Counter(
            "shilian_auth_throttled",
            "被限速的尝试 / attempts throttled (login: 429 for a name and address or an address; "
            "login_delay: a name under attack, delayed; enrol, commissioning: token guessing)",
            ["kind"],
            registry=None,
        )
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="auth")
        self._hashing = asyncio.Semaphore(MAX_CONCURRENT_HASHES)
        self._store: AccountStore | None = None

    @property
    def store(self) -> AccountStore:
        assert self._store is not None, "auth store used before the app started"
        return self._store

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the account store's thread (one connection, one thread)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self) -> None:
        self._store = await self.run(AccountStore, self.db_target)
        if await self.run(self.store.user_count) == 0:
            log.warning(
                "尚无登录用户，接口将拒绝所有请求：请运行 shilian central user add NAME "
                "--role admin / no users yet, the API refuses every request: run "
                "`shilian central user add NAME --role admin --config central.toml`",
            )

    async def close(self) -> None:
        if self._store is not None:
            await self.run(self._store.close)
        self._pool.shutdown(wait=True)

    async def lookup(self, token: str) -> Lookup:
        return await self.run(self.store.lookup, token, self.clock(), self.idle_s)


AUTH: web.AppKey[Auth] = web.AppKey("auth", Auth)
_PRINCIPAL: web.RequestKey[Session] = web.RequestKey("principal", Session)


def setup(app: web.Application, ctx: http.ApiContext, clock: Callable[[], float]) -> Auth:
    """Mount login/logout/me/audit and the login page on ``app``; the middleware is
    :func:`require_login` (central.app.make_app puts it after the JSON error handler)."""
    auth = Auth(ctx.auth, ctx.db_target, clock)
    app[AUTH] = auth
    app.router.add_post("/api/v1/login", login)
    app.router.add_post("/api/v1/logout", logout)
    app.router.add_get("/api/v1/me", me)
    app.router.add_get("/api/v1/audit", audit_list)
    app.router.add_get("/dashboard/login", login_page)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await auth.open()
        ctx.metrics_registry.register(auth.logins)
        ctx.metrics_registry.register(auth.denied)
        ctx.metrics_registry.register(auth.throttled)
        try:
            yield
        finally:
            ctx.metrics_registry.unregister(auth.logins)
            ctx.metrics_registry.unregister(auth.denied)
            ctx.metrics_registry.unregister(auth.throttled)
            await auth.close()

    app.cleanup_ctx.append(lifecycle)
    return auth


# -- the middleware -----------------------------------------------------------------------------


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else ""


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.cookies.get(COOKIE) or None


def _address(request: web.Request) -> str:
    return request.remote or ""


def _wants_page(request: web.Request) -> bool:
    return (
        request.method in ("GET", "HEAD")
        and not request.path.startswith("/api/")
        and "text/html" in request.headers.get("Accept", "")
    )


@web.middleware
async def require_login(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.match_info.http_exception is not None:
        return await handler(request)  # unknown route or method: the JSON 404/405
    auth = request.app[AUTH]
    need = required_role(request.method, _route(request), auth.cfg.metrics_public)
    if need is None:
        return await handler(request)
    token = _token(request)
    found = await auth.lookup(token) if token else Lookup(None, "none")
    session = found.session
    if session is None:
        auth.denied.labels("expired" if found.reason == "expired" else "unauthenticated").inc()
        if _wants_page(request):
            raise web.HTTPFound("/dashboard/login?next=" + quote(request.path_qs, safe=""))
        raise await _unauthenticated(auth, found.reason)
    if session.role < need:
        auth.denied.labels("forbidden").inc()
        raise http.ApiError(
            403,
            "forbidden",
            f"角色 {session.role.name} 无权执行此操作（需要 {need.name}）",
            f"role {session.role.name} may not do this (needs {need.name})",
        )
    for code in request_codes(request.match_info, request.query):
        if not in_scope(session.scope, code):
            auth.denied.labels("out_of_scope").inc()
            raise _out_of_scope(session.scope, code)
    request[_PRINCIPAL] = session
    return await handler(request)


async def _unauthenticated(auth: Auth, reason: str) -> http.ApiError:
    headers = {"WWW-Authenticate": 'Bearer realm="shilian"'}
    if reason == "expired":
        return http.ApiError(
            401,
            "session_expired",
            "会话已过期，请重新登录",
            "session expired, log in again",
            headers,
        )
    if await auth.run(auth.store.user_count) == 0:
        return http.ApiError(
            401,
            "no_users",
            "中心尚无登录用户：请管理员在中心运行 shilian central user add NAME --role admin",
            "central has no users yet: the administrator runs "
            "`shilian central user add NAME --role admin` on central",
            headers,
        )
    return http.ApiError(401, "unauthenticated", "请先登录", "log in first", headers)


def _out_of_scope(scope: str, code: str) -> http.ApiError:
    return http.ApiError(
        403,
        "out_of_scope",
        f"{code[:40]} 不在您的管辖范围（{scope}）内",
        f"{code[:40]} is outside your scope ({scope})",
    )


# -- helpers for handlers -----------------------------------------------------------------------


def principal(request: web.Request) -> Session:
    """The logged-in user of this request (every non-public route has one)."""
    session = request.get(_PRINCIPAL)
    if not isinstance(session, Session):
        raise http.ApiError(401, "unauthenticated", "请先登录", "log in first")
    return session


def scope_of(request: web.Request) -> str:
    """The user's scope: a division-code prefix, "" for the whole registry scope."""
    return principal(request).scope


def check_scope(request: web.Request, code: str) -> None:
    """403 ``out_of_scope`` unless ``code`` (a unit or a village) is in the user's scope."""
    scope = scope_of(request)
    if not in_scope(scope, code):
        request.app[AUTH].denied.labels("out_of_scope").inc()
        raise _out_of_scope(scope, code)


def list_scope(request: web.Request) -> str | None:
    """The prefix a list must be narrowed to, or None for no narrowing."""
    return scope_of(request) or None


def root_of(request: web.Request) -> str:
    """The unit a user's views start at: their scope when it lies inside the registry's,
    else the registry's root."""
    registry = request.app[http.CTX].registry
    scope = scope_of(request)
    if len(scope) > len(registry.scope) and scope.startswith(registry.scope):
        return scope
    return registry.scope


async def audit(
    request: web.Request, action: str, target: str, outcome: str, **detail: Any
) -> None:
    """Write an audit row (who: the request's user, else ``detail["user"]``); on disk before
    this returns."""
    auth = request.app[AUTH]
    session = request.get(_PRINCIPAL)
    user = session.user if isinstance(session, Session) else detail.pop("user", None)
    role = session.role.name if isinstance(session, Session) else None
    entry = audit_log.Entry(
        auth.clock(), user, role, _address(request), action, target, outcome, detail
    )
    await auth.run(auth.store.audit, entry)


def guess_wait(request: web.Request, kind: str) -> int | None:
    """Seconds (rounded up) the request's address must wait before trying another ``kind``
    token (``enrol``, ``commissioning``) after :data:`central.accounts.MAX_FAILURES` refused
    within the window, counted in ``shilian_auth_throttled_total{kind}``; None: it may try now
    (or the app has no auth set up)."""
    auth = request.app.get(AUTH)
    if auth is None:
        return None
    wait = auth.throttle.retry_after(f"{kind}:{_address(request)}", auth.clock())
    if wait is None:
        return None
    auth.throttled.labels(kind).inc()
    return max(1, int(wait + 0.999))


def guess_failed(request: web.Request, kind: str) -> None:
    """Count a refused ``kind`` token from the request's address (see :func:`guess_wait`)."""
    auth = request.app.get(AUTH)
    if auth is not None:
        auth.throttle.failed(f"{kind}:{_address(request)}", auth.clock())


def throttled_answer(retry: int) -> tuple[int, str, str, str, dict[str, str]]:
    """The 429 of a throttled token guesser: (status, code, zh, en, headers)."""
    return (
        429,
        "throttled",
        f"令牌错误次数过多，请 {retry} 秒后再试",
        f"too many wrong tokens, retry in {retry} s",
        {"Retry-After": str(retry)},
    )


# -- routes -------------------------------------------------------------------------------------


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


def _login_body(raw: bytes) -> LoginBody:
    data = http.json_body(raw)
    try:
        return LoginBody.model_validate(data)
    except ValidationError:
        raise http.ApiError(
            400,
            "bad_body",
            '请求体应为 {"user": "...", "password": "..."}',
            'the body is {"user": "...", "password": "..."}',
        ) from None


def _session_json(request: web.Request, s: Session) -> dict[str, Any]:
    registry = request.app[http.CTX].registry
    unit = registry.unit(s.scope) if s.scope else registry.root()
    return {
        "user": s.user,
        "role": s.role.name,
        "scope": s.scope,
        "scope_name": unit.name if unit is not None else None,
        "expires_at": s.expires_at,
    }


async def login(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    http.params(request, ())
    body = _login_body(await request.read())
    now = auth.clock()
    address = _address(request)
    # Throttled: this name from this address, or this address whatever the names. The name
    # alone only slows down (NAME_DELAY_S), so that guessing cannot lock its owner out.
    name_key = f"user:{body.user}"
    keys = (f"pair:{address}\x00{body.user}", f"addr:{address}")
    wait = max((auth.throttle.retry_after(k, now) or 0.0) for k in keys)
    if wait > 0:
        auth.throttled.labels("login").inc()
        auth.logins.labels("throttled").inc()
        await audit(request, "login_failed", body.user, "throttled", user=body.user)
        retry = max(1, int(wait + 0.999))
        raise http.ApiError(
            429,
            "throttled",
            f"登录失败次数过多，请 {retry} 秒后再试",
            f"too many failed logins, retry in {retry} s",
            {"Retry-After": str(retry)},
        )
    if auth.throttle.retry_after(name_key, now) is not None:
        auth.throttled.labels("login_delay").inc()
        await asyncio.sleep(NAME_DELAY_S)
    stored = await auth.run(auth.store.password_hash, body.user)
    async with auth._hashing:
        ok = await asyncio.to_thread(verify_password, stored, body.password)
    if not ok:
        if await auth.run(auth.store.user_count) == 0:
            auth.logins.labels("no_users").inc()
            raise await _unauthenticated(auth, "none")
        for k in (*keys, name_key):
            auth.throttle.failed(k, now)
        auth.logins.labels("bad_credentials").inc()
        await audit(request, "login_failed", body.user, "bad_credentials", user=body.user)
        raise http.ApiError(
            401, "bad_credentials", "用户名或密码错误", "wrong user name or password"
        )
    auth.throttle.succeeded(keys[0])
    auth.throttle.succeeded(name_key)
    now = auth.clock()

    def start() -> tuple[str, Session]:
        auth.store.purge_sessions(now, auth.idle_s)
        auth.store.rehash(body.user, body.password)
        return auth.store.create_session(body.user, _address(request), now, auth.max_s, auth.idle_s)

    token, session = await auth.run(start)
    request[_PRINCIPAL] = session
    auth.logins.labels("ok").inc()
    await audit(request, "login", session.user, "ok")
    resp = http.ok({"token": token, **_session_json(request, session)})
    resp.set_cookie(
        COOKIE,
        token,
        max_age=int(auth.max_s),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return resp


async def logout(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    token = _token(request)
    ended = False
    if token:
        found = await auth.lookup(token)
        if found.session is not None:
            await auth.run(auth.store.end_session, found.session.token_sha256)
            request[_PRINCIPAL] = found.session
            await audit(request, "logout", found.session.user, "ok")
            ended = True
    resp = http.ok({"logged_out": ended})
    resp.del_cookie(COOKIE, path="/")
    return resp


async def me(request: web.Request) -> web.Response:
    http.params(request, ())
    return http.ok(_session_json(request, principal(request)))


async def audit_list(request: web.Request) -> web.Response:
    q = http.params(request, ("user", "action", "since", "until", "limit", "offset"))
    bounds: dict[str, float | None] = {}
    for name in ("since", "until"):
        bounds[name] = None
        if q.get(name):
            try:
                bounds[name] = float(q[name])
            except ValueError:
                raise http.ApiError(
                    400,
                    "bad_param",
                    f"参数 {name} 应为 Unix 秒：{q[name][:40]!r}",
                    f"{name} must be Unix seconds: {q[name][:40]!r}",
                ) from None
    f = audit_log.AuditFilter(
        user=q.get("user") or None,
        action=q.get("action") or None,
        since=bounds["since"],
        until=bounds["until"],
    )
    limit = http.int_param(q, "limit", http.DEFAULT_PAGE, 1, http.MAX_PAGE)
    offset = http.int_param(q, "offset", 0, 0, 2**31)
    auth = request.app[AUTH]  # the account store's connection: the log is in its database
    total, rows = await auth.run(lambda: audit_log.list_audit(auth.store.db, f, limit, offset))
    return http.ok({"total": total, "limit": limit, "offset": offset, "entries": rows})


async def login_page(request: web.Request) -> web.Response:
    from central import assets, i18n

    lang = i18n.language(request.query.get("lang"))
    html = (assets.ASSETS / "login.html").read_text(encoding="utf-8")
    return web.Response(
        text=html.replace("{{lang}}", lang),
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )
