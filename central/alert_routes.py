"""HTTP routes of the alerts (docs/dashboard.md "Routes"): ``GET /api/v1/alerts`` (firing and
recently resolved alerts, the rules, the webhook queues), ``GET /api/v1/alerts/rules``,
``PUT /api/v1/alerts/rules`` (the whole set) and one rule at a time: ``POST
/api/v1/alerts/rules``, ``PUT`` and ``DELETE /api/v1/alerts/rules/{rule_id}`` (admin:
central.auth's default rule for a non-GET route). A scoped admin changes only rules over units
in their scope, and the rules outside it are kept as they are. The webhook receivers (admins of
the whole registry: they get every alert): ``PUT``/``PATCH /api/v1/alerts/webhooks/{n}`` changes
receiver ``n`` (its URL is a secret, shown masked: one not given is kept) and ``POST
/api/v1/alerts/webhooks/{n}/test`` delivers a test message now and answers what the receiver
said. Every change is audited and announced to the open admin pages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from central import body_errors, http
from central.access import announce, audit, caller, check_scope, is_admin
from central.alerting import AlertTask, alert_json
from central.alerts import AlertRule, WebhookConfig, check_unique, masked_url, rule_in_scope

#: Largest rule set accepted through the API.
MAX_RULES = 200

_RULES = TypeAdapter(list[AlertRule])
_RULE = TypeAdapter(AlertRule)


class WebhookChange(BaseModel):
    """An admin's change to a receiver; a field left out keeps its value (the URL above all:
    the page only ever sees it masked)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str | None = Field(default=None, description="new receiver URL / 新的接收地址")
    timeout_s: float | None = Field(default=None, description="per attempt / 单次超时（秒）")
    max_attempts: int | None = Field(default=None, description="attempts / 最多尝试次数")


# -- routes -------------------------------------------------------------------------------------


def _ok(data: Any) -> web.Response:
    return web.json_response(data, dumps=lambda o: json.dumps(o, ensure_ascii=False))


ALERTS: web.AppKey[AlertTask] = web.AppKey("alerts", AlertTask)
#: One rule change at a time: each reads the set, changes one rule and stores the set, so two
#: admins saving at once must not lose one of the changes.
_CHANGING: web.AppKey[asyncio.Lock] = web.AppKey("alert_rules_changing", asyncio.Lock)


def add_routes(app: web.Application, task: AlertTask) -> None:
    app[ALERTS] = task
    app[_CHANGING] = asyncio.Lock()
    app.router.add_get("/api/v1/alerts", list_alerts)
    app.router.add_get("/api/v1/alerts/rules", get_rules)
    app.router.add_put("/api/v1/alerts/rules", _one_at_a_time(put_rules))
    app.router.add_post("/api/v1/alerts/rules", _one_at_a_time(_add_rule))
    app.router.add_put("/api/v1/alerts/rules/{rule_id}", _one_at_a_time(_change_rule))
    app.router.add_delete("/api/v1/alerts/rules/{rule_id}", _one_at_a_time(_delete_rule))
    app.router.add_put("/api/v1/alerts/webhooks/{n}", _one_at_a_time(_change_webhook))
    app.router.add_patch("/api/v1/alerts/webhooks/{n}", _one_at_a_time(_change_webhook))
    app.router.add_post("/api/v1/alerts/webhooks/{n}/test", _test_webhook)


def _code_param(request: web.Request) -> str | None:
    code = request.query.get("code") or None
    return None if code is None else http.known_unit(request.app[http.CTX].registry, code)


def _rules(request: web.Request) -> list[dict[str, Any]]:
    """The rules the caller may see: those over units in their scope."""
    _, scope = caller(request)
    rules = request.app[ALERTS].evaluator.rules.values()
    return [r.model_dump() for r in rules if rule_in_scope(r, scope)]


def _webhooks(request: web.Request) -> list[dict[str, Any]]:
    """Webhook targets are write-only secrets (a token in the query or path, a password in the
    userinfo): admins see them masked, nobody else sees them at all."""
    if not is_admin(request):
        return []
    task = request.app[ALERTS]
    return [
        {
            "id": n,
            "url": masked_url(s.cfg.url),
            "timeout_s": s.cfg.timeout_s,
            "max_attempts": s.cfg.max_attempts,
            "queued": len(s.queue),
            "source": "config" if s.cfg == configured else "api",
        }
        for n, (s, configured) in enumerate(zip(task.senders, task.cfg.webhooks, strict=True), 1)
    ]


async def list_alerts(request: web.Request) -> web.Response:
    task = request.app[ALERTS]
    _, scope = caller(request)
    code = _code_param(request) or scope
    recent = [a for a in task.recent if not code or a.labels.get("code", "").startswith(code)]
    return _ok(
        {
            "time": task.clock(),
            "firing": [alert_json(a) for a in task.firing(code)],
            "resolved": [alert_json(a) for a in recent],
            "rules": _rules(request),
            "webhooks": _webhooks(request),
        }
    )


async def get_rules(request: web.Request) -> web.Response:
    """The rules, and ``names``: the name of each unit they watch (the page shows names)."""
    rules = _rules(request)
    registry = request.app[http.CTX].registry
    units = {r["code"] for r in rules if r["code"]}
    names = {code: u.name for code in units if (u := registry.unit(code)) is not None}
    return _ok({"source": request.app[ALERTS].rules_source, "rules": rules, "names": names})


async def put_rules(request: web.Request) -> web.Response:
    """Body ``{"rules": [...]}`` replaces the rules; ``{"rules": null}`` returns to the config's."""
    task = request.app[ALERTS]
    by, _ = caller(request)
    body = http.json_body(await request.read())
    if set(body) != {"rules"}:
        raise http.ApiError(
            400, "bad_body", '请求体应为 {"rules": [...]}', 'body must be {"rules": [...]}'
        )
    rules: list[AlertRule] | None = None
    if body["rules"] is not None:
        try:
            rules = _RULES.validate_python(body["rules"])
            check_unique(rules)
        except ValidationError as e:
            zh, en = body_errors.explain(e)
            raise http.ApiError(
                400, "bad_rules", f"告警规则无效：{zh}", f"invalid rules: {en}"
            ) from None
        except ValueError as e:
            detail = str(e).replace("\n", " ")[:500]
            raise http.ApiError(
                400, "bad_rules", f"告警规则无效：{detail}", f"invalid rules: {detail}"
            ) from None
        if len(rules) > MAX_RULES:
            raise http.ApiError(
                400, "bad_rules", f"规则过多（最多 {MAX_RULES} 条）", f"at most {MAX_RULES} rules"
            )
    _, scope = caller(request)
    if scope:
        # The whole set: only an admin of the whole registry may replace (or reset) it.
        check_scope(request, "")
    await task.replace_rules(rules, by)
    count = None if rules is None else len(rules)
    await audit(request, "alert_rules_replace", "rules", "ok", count=count)
    announce(request, "rules")
    return await get_rules(request)


def _one_at_a_time(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def locked(request: web.Request) -> web.Response:
        async with request.app[_CHANGING]:
            return await handler(request)

    return locked


def _bad_rule(e: ValidationError) -> http.ApiError:
    zh, en = body_errors.explain(e)
    return http.ApiError(400, "bad_rules", f"告警规则无效：{zh}", f"invalid rule: {en}")


def _one_rule(raw: bytes) -> AlertRule:
    try:
        return _RULE.validate_python(http.json_body(raw))
    except ValidationError as e:
        raise _bad_rule(e) from None


def _unknown_rule(rule_id: str) -> http.ApiError:
    return http.ApiError(
        404, "unknown_rule", f"没有告警规则 {rule_id[:64]}", f"no alert rule {rule_id[:64]!r}"
    )


def _current(request: web.Request) -> list[AlertRule]:
    return list(request.app[ALERTS].evaluator.rules.values())


async def _save(request: web.Request, rules: list[AlertRule]) -> None:
    if len(rules) > MAX_RULES:
        raise http.ApiError(
            400, "bad_rules", f"规则过多（最多 {MAX_RULES} 条）", f"at most {MAX_RULES} rules"
        )
    by, _ = caller(request)
    await request.app[ALERTS].replace_rules(rules, by)


async def _add_rule(request: web.Request) -> web.Response:
    """One new rule (201); 409 ``rule_exists`` when its id is taken."""
    rule = _one_rule(await request.read())
    check_scope(request, rule.code)
    rules = _current(request)
    if any(r.id == rule.id for r in rules):
        raise http.ApiError(
            409, "rule_exists", f"告警规则编号 {rule.id} 已存在", f"alert rule {rule.id} exists"
        )
    await _save(request, [*rules, rule])
    await audit(request, "alert_rule_add", rule.id, "ok", rule=rule.model_dump())
    announce(request, "rules")
    return web.json_response(
        rule.model_dump(), status=201, dumps=lambda o: json.dumps(o, ensure_ascii=False)
    )


async def _change_rule(request: web.Request) -> web.Response:
    """Replace the rule ``rule_id`` (its id stays: a body naming another id is refused)."""
    rule_id = request.match_info["rule_id"]
    rules = _current(request)
    old = next((r for r in rules if r.id == rule_id), None)
    if old is None:
        raise _unknown_rule(rule_id)
    check_scope(request, old.code)
    rule = _one_rule(await request.read())
    if rule.id != rule_id:
        raise http.ApiError(
            400, "bad_rules", "告警规则无效：id：不能修改编号", "invalid rule: id: cannot change"
        )
    check_scope(request, rule.code)
    await _save(request, [rule if r.id == rule_id else r for r in rules])
    await audit(
        request, "alert_rule_change", rule_id, "ok", before=old.model_dump(), rule=rule.model_dump()
    )
    announce(request, "rules")
    return _ok(rule.model_dump())


async def _delete_rule(request: web.Request) -> web.Response:
    rule_id = request.match_info["rule_id"]
    rules = _current(request)
    old = next((r for r in rules if r.id == rule_id), None)
    if old is None:
        raise _unknown_rule(rule_id)
    check_scope(request, old.code)
    await _save(request, [r for r in rules if r.id != rule_id])
    await audit(request, "alert_rule_delete", rule_id, "ok", rule=old.model_dump())
    announce(request, "rules")
    return _ok({"deleted": rule_id})


# -- webhook receivers --------------------------------------------------------------------------


def _receiver(request: web.Request) -> int:
    """The index of receiver ``{n}`` (1-based, as listed); 404 ``unknown_webhook`` else. Only an
    admin of the whole registry: every receiver gets every unit's alerts."""
    check_scope(request, "")
    raw = request.match_info["n"]
    count = len(request.app[ALERTS].senders)
    if not raw.isdigit() or not 1 <= int(raw) <= count:
        raise http.ApiError(
            404,
            "unknown_webhook",
            f"没有告警推送地址 {raw[:16]}（共 {count} 个）",
            f"no webhook receiver {raw[:16]!r} ({count} configured)",
        )
    return int(raw) - 1


async def _change_webhook(request: web.Request) -> web.Response:
    index = _receiver(request)
    task = request.app[ALERTS]
    try:
        change = WebhookChange.model_validate(http.json_body(await request.read()))
        old = task.senders[index].cfg
        hook = WebhookConfig.model_validate(
            {**old.model_dump(), **change.model_dump(exclude_none=True)}
        )
    except ValidationError as e:
        zh, en = body_errors.explain(e)
        raise http.ApiError(
            400, "bad_webhook", f"推送地址设置无效：{zh}", f"invalid webhook: {en}"
        ) from None
    by, _ = caller(request)
    await task.change_webhook(index, hook, by)
    fields = sorted(change.model_dump(exclude_none=True))
    await audit(
        request,
        "webhook_change",
        str(index + 1),
        "ok",
        fields=fields,
        before=masked_url(old.url),
        url=masked_url(hook.url),
    )
    announce(request, "webhooks")
    return _ok(next(w for w in _webhooks(request) if w["id"] == index + 1))


async def _test_webhook(request: web.Request) -> web.Response:
    """One test message now; 200 whatever the receiver answered: ``{"ok", "status", "error"}``
    (``status`` the receiver's HTTP status or null when it could not be reached)."""
    index = _receiver(request)
    task = request.app[ALERTS]
    http.json_body(await request.read() or b"{}")
    by, _ = caller(request)
    status, problem = await task.test_webhook(index, by)
    shown = masked_url(task.senders[index].cfg.url)
    await audit(
        request,
        "webhook_test",
        str(index + 1),
        "ok" if problem is None else "failed",
        url=shown,
        status=status,
        error=problem,
    )
    return _ok(
        {"id": index + 1, "url": shown, "ok": problem is None, "status": status, "error": problem}
    )
