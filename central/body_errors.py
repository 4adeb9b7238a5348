"""What is wrong with a request body, for the people who sent it: one ``field: reason`` per
problem, in Chinese and in English, with the limits filled in (at most 1000 characters, one of
ping / get-config...) and none of pydantic's English sentences or documentation links in the
Chinese half. The API's 400 ``bad_body`` answers use this (central.alarms, central.api,
central.alert_routes)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

#: Errors shown per answer: the first few tell the sender what to fix; a hostile body with
#: thousands of bad fields must not make a megabyte answer.
MAX_SHOWN = 5

#: pydantic error type → (zh, en) with ``{...}`` from the error's context.
_TEXTS: dict[str, tuple[str, str]] = {
    "missing": ("缺少此项", "required"),
    "extra_forbidden": ("不认识此项", "unknown field"),
    "string_type": ("应为文字", "must be text"),
    "string_too_long": ("最多 {max_length} 个字", "at most {max_length} characters"),
    "string_too_short": ("至少 {min_length} 个字", "at least {min_length} characters"),
    "string_pattern_mismatch": ("格式不对", "wrong format"),
    "int_type": ("应为整数", "must be an integer"),
    "int_parsing": ("应为整数", "must be an integer"),
    "float_type": ("应为数字", "must be a number"),
    "float_parsing": ("应为数字", "must be a number"),
    "bool_type": ("应为 true 或 false", "must be true or false"),
    "bool_parsing": ("应为 true 或 false", "must be true or false"),
    "greater_than": ("应大于 {gt}", "must be greater than {gt}"),
    "greater_than_equal": ("应不小于 {ge}", "must be at least {ge}"),
    "less_than": ("应小于 {lt}", "must be less than {lt}"),
    "less_than_equal": ("应不大于 {le}", "must be at most {le}"),
    "literal_error": ("应为 {expected} 之一", "must be one of {expected}"),
    "enum": ("应为 {expected} 之一", "must be one of {expected}"),
    "dict_type": ("应为 JSON 对象", "must be a JSON object"),
    "list_type": ("应为列表", "must be a list"),
    "too_long": ("最多 {max_length} 项", "at most {max_length} items"),
    "value_error": ("取值无效", "invalid value"),
    "rule_needs": ("{kind} 规则必须填写此项", "required for a {kind} rule"),
    "rule_needs_minutes": ("{kind} 规则的持续时间应大于 0", "must be over 0 for a {kind} rule"),
}


def _text(v: Any) -> str:
    """A limit as people write it: 100, not 100.0."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)[:80]


def _fill(template: str, ctx: dict[str, Any]) -> str:
    try:
        return template.format(**{k: _text(v) for k, v in ctx.items()})
    except (KeyError, IndexError, ValueError):
        return template.split("{")[0].strip() or template


def explain(error: ValidationError) -> tuple[str, str]:
    """(Chinese, English): ``"field：reason；field：reason"``, at most :data:`MAX_SHOWN`."""
    zh: list[str] = []
    en: list[str] = []
    errors = error.errors(include_url=False, include_input=False)
    for e in errors[:MAX_SHOWN]:
        ctx = dict(e.get("ctx") or {})
        # A check across fields (a model validator) names the field it is about in its context.
        loc = [*e["loc"], *([ctx["field"]] if "field" in ctx else [])]
        path = ".".join(str(p) for p in loc) or "body"
        pair = _TEXTS.get(e["type"])
        if pair is None:  # a check this table does not name: no English in the Chinese half
            zh.append(f"{path}：取值无效")
            en.append(f"{path}: invalid value")
        else:
            zh.append(f"{path}：{_fill(pair[0], ctx)}")
            en.append(f"{path}: {_fill(pair[1], ctx)}")
    if len(errors) > MAX_SHOWN:
        zh.append(f"另有 {len(errors) - MAX_SHOWN} 处")
        en.append(f"{len(errors) - MAX_SHOWN} more")
    return "；".join(zh), "; ".join(en)
