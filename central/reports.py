"""Coverage reports and the trend, read from the daily history (central.history).

Routes (docs/dashboard.md):
- ``GET /api/v1/history/coverage?code=&since=&until=`` (or ``&days=30``) the unit's daily
  figures, oldest first; today, when in the range, is its current figure;
- ``GET /api/v1/reports/coverage.xlsx?code=&since=&until=`` and ``.csv``: the unit and its
  children per day over the range (zh-CN headers), a summary on the last day with a 合计
  (totals) row;
- ``GET /dashboard/report?code=&since=&until=`` the same as a printable page (A4).

Dates are local (Asia/Shanghai) ISO days, both ends included (``from``/``to`` are older names of
``since``/``until``); ``until`` defaults to today, ``since`` to 29 days before it (``days - 1``
for the trend).
A day without history is left empty (``—``), never guessed. The report and its formats are
:mod:`central.coverage_report`; these are its HTTP routes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from aiohttp import web

from central import http, i18n
from central.access import caller
from central.coverage_report import Report, build_report, render_report, to_csv, to_xlsx
from central.history import (
    MAX_RANGE_DAYS,
    TREND_DAYS,
    HistoryTask,
    local_day,
    parse_day,
    row_json,
)

HISTORY: web.AppKey[HistoryTask] = web.AppKey("history", HistoryTask)

# -- routes -------------------------------------------------------------------------------------


def add_routes(app: web.Application, history: HistoryTask) -> None:
    app[HISTORY] = history
    app.router.add_get("/api/v1/history/coverage", trend)
    app.router.add_get("/api/v1/reports/coverage.xlsx", report_xlsx)
    app.router.add_get("/api/v1/reports/coverage.csv", report_csv)
    app.router.add_get("/dashboard/report", report_page)


def _bad(name: str, value: str, zh: str, en: str) -> http.ApiError:
    return http.ApiError(
        400, "bad_param", f"参数 {name} {zh}：{value[:40]!r}", f"{name} {en}: {value[:40]!r}"
    )


def _code(request: web.Request) -> str:
    ctx = request.app[http.CTX]
    _, scope = caller(request)
    default = scope if scope and ctx.registry.unit(scope) is not None else ctx.registry.scope
    return http.known_unit(ctx.registry, request.query.get("code", default))


#: The names of a range's ends: ``since``/``until`` (as the dashboard's date-range picker sends
#: them, and as the alarms API names its range) or the reports' older ``from``/``to``.
RANGE_NAMES = (("since", "from"), ("until", "to"))


def _day(request: web.Request, names: tuple[str, str]) -> dt.date | None:
    given = [n for n in names if request.query.get(n, "")]
    if len(given) > 1:
        raise _bad(names[1], request.query[names[1]], f"与 {names[0]} 重复", f"repeats {names[0]}")
    if not given:
        return None
    value = request.query[given[0]]
    try:
        return parse_day(value)
    except ValueError:
        raise _bad(given[0], value, "应为日期 YYYY-MM-DD", "must be a date YYYY-MM-DD") from None


def _range(request: web.Request, today: dt.date, days: int = TREND_DAYS) -> tuple[dt.date, dt.date]:
    """The inclusive local days asked for: ``until`` defaults to today, ``since`` to ``days``
    days up to ``until``."""
    since, until = (_day(request, names) for names in RANGE_NAMES)
    last = until or today
    first = since or last - dt.timedelta(days=days - 1)
    if first > last:
        raise _bad("since", first.isoformat(), f"晚于 until {last}", f"is after until {last}")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise _bad(
            "since",
            first.isoformat(),
            f"范围超过 {MAX_RANGE_DAYS} 天",
            f"range over {MAX_RANGE_DAYS} days",
        )
    return first, last


async def _report(request: web.Request) -> Report:
    ctx = request.app[http.CTX]
    history = request.app[HISTORY]
    code = _code(request)
    first, last = _range(request, local_day(ctx.clock(), history.tz))
    units = [code, *ctx.registry.child_codes(code)]
    today = {r.code: r for r in history.today_rows(units)}  # on the loop (the coverage index)
    return await request.app[http.READS].run(
        lambda conn: build_report(conn, ctx.registry, today, code, first, last)
    )


def _filename(r: Report, ext: str) -> str:
    return f"coverage-{r.code or 'cn'}-{r.first.isoformat()}-{r.last.isoformat()}.{ext}"


async def report_xlsx(request: web.Request) -> web.Response:
    r = await _report(request)
    body = await asyncio.to_thread(to_xlsx, r)
    return web.Response(
        body=body,
        headers={
            "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "Content-Disposition": f'attachment; filename="{_filename(r, "xlsx")}"',
        },
    )


async def report_csv(request: web.Request) -> web.Response:
    r = await _report(request)
    return web.Response(
        body=to_csv(r),
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{_filename(r, "csv")}"',
        },
    )


async def trend(request: web.Request) -> web.Response:
    ctx = request.app[http.CTX]
    history = request.app[HISTORY]
    code = _code(request)
    raw = request.query.get("days", str(TREND_DAYS))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_RANGE_DAYS:
        raise _bad(
            "days", raw, f"应为 1 到 {MAX_RANGE_DAYS} 的整数", f"must be 1 to {MAX_RANGE_DAYS}"
        )
    first, last = _range(request, local_day(ctx.clock(), history.tz), int(raw))
    today = {r.code: r for r in history.today_rows([code])}
    r = await request.app[http.READS].run(
        lambda conn: build_report(conn, ctx.registry, today, code, first, last)
    )
    days = [row_json(row) for d in r.days if (row := r.at(code, d)) is not None]
    return web.json_response(
        {"code": code, "from": first.isoformat(), "to": last.isoformat(), "days": days},
        dumps=lambda o: json.dumps(o, ensure_ascii=False),
    )


async def report_page(request: web.Request) -> web.Response:
    lang = i18n.language(request.query.get("lang"))
    r = await _report(request)
    body = render_report(r, i18n.strings(lang), lang)
    return web.Response(text=body, content_type="text/html", charset="utf-8")
