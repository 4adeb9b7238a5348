"""HTTP routes of the alerts (docs/dashboard.md "Routes"): ``GET /api/v1/alerts`` (firing and
recently resolved alerts, the rules, the webhook queues), ``GET /api/v1/alerts/rules`` and
``PUT /api/v1/alerts/rules`` (admin: central.auth's default rule for a non-GET route)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from central import body_errors, http
from central.access import caller, is_admin
from central.alerting import AlertTask, alert_json
from central.alerts import AlertRule, check_unique, masked_url, rule_in_scope

#: Largest rule set accepted through the API.
MAX_RULES = 200

_RULES = TypeAdapter(list[AlertRule])
# -- routes -------------------------------------------------------------------------------------


def _ok(data: Any) -> web.Response:
    return web.json_response(data, dumps=lambda o: json.dumps(o, ensure_ascii=False))


ALERTS: web.AppKey[AlertTask] = web.AppKey("alerts", AlertTask)


def add_routes(app: web.Application, task: AlertTask) -> None:
    app[ALERTS] = task
    app.router.add_get("/api/v1/alerts", list_alerts)
    app.router.add_get("/api/v1/alerts/rules", get_rules)
    app.router.add_put("/api/v1/alerts/rules", put_rules)


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
    return [
        {"url": masked_url(s.cfg.url), "queued": len(s.queue)} for s in request.app[ALERTS].senders
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
    return _ok({"source": request.app[ALERTS].rules_source, "rules": _rules(request)})


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
    await task.replace_rules(rules, by)
    return await get_rules(request)
