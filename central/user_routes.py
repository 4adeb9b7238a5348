"""Account administration over HTTP, for the dashboard's admin pages: list users, create one
with a role and a scope, reset a password, disable or enable (docs/api.md "Users").

Admin only (``GET /api/v1/users`` is listed in central.auth's table; the POSTs are admin by its
default rule). A scoped admin sees and changes only the users whose scope lies within their own,
and gives out only scopes within it: an admin of one county cannot create a city-wide user, nor
reset the password of the city's admin. Nobody disables their own account (the last admin
would lock everyone out). Every change is audited (``user_add``, ``user_passwd``,
``user_disable``, ``user_enable``, as the command-line tools on central's box write them) and is
on disk before it is answered (central.accounts), and announced to the open admin pages.
"""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from central import auth, body_errors, http
from central.access import announce
from central.accounts import (
    MAX_PASSWORD_CHARS,
    AccountError,
    User,
    check_scope_code,
    parse_role,
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NewUser(_Body):
    name: str = Field(min_length=1, max_length=64, description="login name / 用户名")
    role: str = Field(max_length=16, description="viewer, operator or admin / 角色")
    scope: str = Field(default="", max_length=12, description="division code prefix / 范围")
    password: str = Field(max_length=MAX_PASSWORD_CHARS, description="initial password / 密码")


class NewPassword(_Body):
    password: str = Field(max_length=MAX_PASSWORD_CHARS, description="new password / 新密码")


class Disabled(_Body):
    disabled: bool = Field(description="true: disable; false: enable / 停用或启用")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/users", list_users)
    app.router.add_post("/api/v1/users", add_user)
    app.router.add_post("/api/v1/users/{user}/password", set_password)
    app.router.add_post("/api/v1/users/{user}/disabled", set_disabled)


M = TypeVar("M", bound=_Body)


def _body(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate(http.json_body(raw))
    except ValidationError as e:
        zh, en = body_errors.explain(e)
        raise http.ApiError(400, "bad_body", f"请求体有误：{zh}", f"invalid body: {en}") from None


def _refused(e: AccountError) -> http.ApiError:
    status = {"unknown_user": 404, "user_exists": 409}.get(e.code, 400)
    return http.ApiError(status, e.code, e.zh, e.en)


def _json(request: web.Request, u: User) -> dict[str, Any]:
    registry = request.app[http.CTX].registry
    unit = registry.unit(u.scope) if u.scope else registry.root()
    return {**u.json(), "scope_name": unit.name if unit is not None else None}


async def _target(request: web.Request) -> User:
    """The user the route names, if it exists and lies in the caller's scope."""
    a = request.app[auth.AUTH]
    name = request.match_info["user"]
    user = await a.run(a.store.get, name)
    if user is None:
        raise http.ApiError(404, "unknown_user", f"没有用户 {name[:64]}", f"no user {name[:64]}")
    auth.check_scope(request, user.scope)
    return user


async def list_users(request: web.Request) -> web.Response:
    http.params(request, ())
    a = request.app[auth.AUTH]
    scope = auth.scope_of(request)
    users = await a.run(a.store.users)
    return http.ok({"users": [_json(request, u) for u in users if auth.in_scope(scope, u.scope)]})


async def add_user(request: web.Request) -> web.Response:
    body = _body(NewUser, await request.read())
    a = request.app[auth.AUTH]
    try:
        role = parse_role(body.role)
        check_scope_code(body.scope)
    except AccountError as e:
        raise _refused(e) from None
    if body.scope and request.app[http.CTX].registry.unit(body.scope) is None:
        raise http.ApiError(
            400,
            "bad_scope",
            f"范围 {body.scope} 不是登记范围内的区划",
            f"scope {body.scope} is not a unit of the registry",
        )
    auth.check_scope(request, body.scope)
    try:
        user = await a.run(a.store.add, body.name, role, body.scope, body.password, a.clock())
    except AccountError as e:
        raise _refused(e) from None
    await auth.audit(request, "user_add", user.name, "ok", role=role.name, scope=user.scope)
    announce(request, "users")
    return http.ok(_json(request, user), status=201)


async def set_password(request: web.Request) -> web.Response:
    """A new password; the user's sessions end (central.accounts)."""
    body = _body(NewPassword, await request.read())
    user = await _target(request)
    a = request.app[auth.AUTH]
    try:
        await a.run(a.store.set_password, user.name, body.password, a.clock())
    except AccountError as e:
        raise _refused(e) from None
    await auth.audit(request, "user_passwd", user.name, "ok")
    announce(request, "users")
    changed = await a.run(a.store.get, user.name)
    assert changed is not None
    return http.ok(_json(request, changed))


async def set_disabled(request: web.Request) -> web.Response:
    """Disable (ending the user's sessions at once) or enable a user."""
    body = _body(Disabled, await request.read())
    user = await _target(request)
    if body.disabled and user.name == auth.principal(request).user:
        raise http.ApiError(
            409,
            "own_account",
            "不能停用自己的账号",
            "you cannot disable your own account",
        )
    a = request.app[auth.AUTH]
    await a.run(a.store.set_disabled, user.name, body.disabled, a.clock())
    action = "user_disable" if body.disabled else "user_enable"
    await auth.audit(request, action, user.name, "ok")
    announce(request, "users")
    changed = await a.run(a.store.get, user.name)
    assert changed is not None
    return http.ok(_json(request, changed))
