"""Coverage reports and the trend (issue 6 §1, §6), read from the daily history (central.history).

Routes (docs/dashboard.md):
- ``GET /api/v1/history/coverage?code=&days=30`` the unit's daily figures, oldest first; the last
  day is today's current figure;
- ``GET /api/v1/reports/coverage.xlsx?code=&from=&to=`` and ``.csv``: the unit and its children
  per day over the range (zh-CN headers), a summary on the last day with a 合计 (totals) row;
- ``GET /dashboard/report?code=&from=&to=`` the same as a printable page (A4).

Dates are local (Asia/Shanghai) ISO days; ``to`` defaults to today, ``from`` to 29 days before.
A day without history is left empty (``—``), never guessed.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import html
import io
import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from central import api, dashboard, i18n
from central.access import caller
from central.history import (
    MAX_RANGE_DAYS,
    TREND_DAYS,
    DayRow,
    HistoryTask,
    local_day,
    parse_day,
    read_days,
    row_json,
)
from registry import Registry

REPORT_HTML = dashboard.ASSETS / "report.html"
HISTORY: web.AppKey[HistoryTask] = web.AppKey("history", HistoryTask)

SUMMARY_HEADER = ("区划代码", "名称", "层级", "村（社区）数", "已部署", "已覆盖", "覆盖率")
DAILY_HEADER = ("日期", *SUMMARY_HEADER, "数据来源")
SOURCE_NAMES = {"snapshot": "每日快照", "derived": "由节点状态推算", "live": "实时"}
TOTAL_NAME = "合计"


@dataclass(frozen=True, slots=True)
class Report:
    code: str
    name: str
    first: dt.date
    last: dt.date
    units: list[tuple[str, str, int]]  # (code, name, level): the unit first, then its children
    days: list[dt.date]
    rows: dict[str, dict[str, DayRow]]  # code -> iso day -> row (today's is live)

    def at(self, code: str, day: dt.date) -> DayRow | None:
        return self.rows[code].get(day.isoformat())

    def summary_day(self) -> dt.date | None:
        """The last day of the range with figures for the unit."""
        for day in reversed(self.days):
            if self.at(self.code, day) is not None:
                return day
        return None

    def totals(self, day: dt.date) -> tuple[int, int, int] | None:
        """(villages, provisioned, covered) summed over the children on ``day``."""
        kids = [self.at(c, day) for c, _, _ in self.units[1:]]
        if not kids or any(k is None for k in kids):
            return None
        return (
            sum(k.villages for k in kids if k),
            sum(k.provisioned for k in kids if k),
            sum(k.covered for k in kids if k),
        )


def zh_date(day: dt.date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def _pct(covered: int, villages: int) -> str:
    return f"{covered / villages * 100:.2f}%" if villages else "0.00%"


def build_report(
    conn: sqlite3.Connection,
    registry: Registry,
    today_rows: dict[str, DayRow],
    code: str,
    first: dt.date,
    last: dt.date,
) -> Report:
    """The unit and its children over ``first``..``last``; today's figures are live (for
    villages, which have no daily history, they are the only ones)."""
    unit = registry.unit(code)
    assert unit is not None
    units = [(unit.code, unit.name, unit.level)] + [
        (u.code, u.name, u.level) for u in registry.children(code)
    ]
    codes = [c for c, _, _ in units]
    rows = read_days(conn, codes, first, last)
    for c in codes:
        live = today_rows.get(c)
        if live is not None and first.isoformat() <= live.day <= last.isoformat():
            rows[c][live.day] = DayRow(
                live.day, c, live.villages, live.provisioned, live.covered, live.taken, "live"
            )
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    return Report(code, unit.name, first, last, units, days, rows)


# -- formats ------------------------------------------------------------------------------------


def _level(level: int) -> str:
    return api.LEVEL_NAMES[level]


def summary_rows(r: Report) -> list[tuple[Any, ...]]:
    day = r.summary_day()
    out: list[tuple[Any, ...]] = []
    if day is None:
        return out
    for c, name, level in r.units:
        row = r.at(c, day)
        if row is None:
            out.append((c, name, _level(level), None, None, None, None))
        else:
            out.append(
                (c, name, _level(level), row.villages, row.provisioned, row.covered, row.ratio)
            )
    totals = r.totals(day)
    if totals is not None:
        v, p, cov = totals
        out.append(("", TOTAL_NAME, "", v, p, cov, cov / v if v else 0.0))
    return out


def daily_rows(r: Report, date: Callable[[dt.date], str]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for day in r.days:
        for c, name, level in r.units:
            row = r.at(c, day)
            if row is None:
                continue
            out.append(
                (
                    date(day), c, name, _level(level), row.villages, row.provisioned,
                    row.covered, row.ratio, SOURCE_NAMES[row.source],
                )
            )  # fmt: skip
    return out


def to_xlsx(r: Report) -> bytes:
    """Two sheets: 汇总 (the last day, with the totals row) and 逐日明细 (every day); ratios
    are numbers formatted as percentages so that Excel can chart and sum them."""
    from openpyxl import Workbook  # lazy: only report downloads pay for it
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "汇总"
    day = r.summary_day()
    ws.append([f"综治视联网覆盖率报表：{r.name}（{r.code or '全国'}）"])
    as_of = zh_date(day) if day else "无数据"
    ws.append([f"统计日期：{as_of}；范围 {zh_date(r.first)} 至 {zh_date(r.last)}"])
    ws.append(list(SUMMARY_HEADER))
    for row in summary_rows(r):
        ws.append(list(row))
        ws.cell(ws.max_row, 7).number_format = "0.00%"
    ws["A1"].font = Font(bold=True, size=14)
    for cell in ws[3]:
        cell.font = Font(bold=True)
    if ws.max_row > 3 and ws.cell(ws.max_row, 2).value == TOTAL_NAME:
        for cell in ws[ws.max_row]:
            cell.font = Font(bold=True)
    daily = wb.create_sheet("逐日明细")
    daily.append(list(DAILY_HEADER))
    for cell in daily[1]:
        cell.font = Font(bold=True)
    for row in daily_rows(r, zh_date):
        daily.append(list(row))
        daily.cell(daily.max_row, 8).number_format = "0.00%"
    for sheet, widths in (
        (ws, (14, 24, 8, 12, 10, 10, 10)),
        (daily, (16, 14, 24, 8, 12, 10, 10, 10, 16)),
    ):
        for i, w in enumerate(widths):
            sheet.column_dimensions[chr(ord("A") + i)].width = w
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def to_csv(r: Report) -> bytes:
    """Every day's rows (ISO dates), then a blank line and the summary with its totals row."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(DAILY_HEADER)
    for row in daily_rows(r, dt.date.isoformat):
        w.writerow([*row[:7], f"{row[7] * 100:.2f}%", row[8]])
    w.writerow([])
    w.writerow(SUMMARY_HEADER)
    for row in summary_rows(r):
        w.writerow([*row[:6], "" if row[6] is None else f"{row[6] * 100:.2f}%"])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


# -- routes -------------------------------------------------------------------------------------


def add_routes(app: web.Application, history: HistoryTask) -> None:
    app[HISTORY] = history
    app.router.add_get("/api/v1/history/coverage", trend)
    app.router.add_get("/api/v1/reports/coverage.xlsx", report_xlsx)
    app.router.add_get("/api/v1/reports/coverage.csv", report_csv)
    app.router.add_get("/dashboard/report", report_page)
    app.router.add_get("/api/v1/dashboard/nodes/{node_id}/reports", node_reports)


def _bad(name: str, value: str, zh: str, en: str) -> api.ApiError:
    return api.ApiError(
        400, "bad_param", f"参数 {name} {zh}：{value[:40]!r}", f"{name} {en}: {value[:40]!r}"
    )


def _code(request: web.Request) -> str:
    ctx = request.app[api.CTX]
    _, scope = caller(request)
    default = scope if scope and ctx.registry.unit(scope) is not None else ctx.registry.scope
    return api.known_unit(ctx.registry, request.query.get("code", default))


def _range(request: web.Request, today: dt.date) -> tuple[dt.date, dt.date]:
    dates: dict[str, dt.date] = {}
    for name in ("from", "to"):
        value = request.query.get(name, "")
        if value:
            try:
                dates[name] = parse_day(value)
            except ValueError:
                raise _bad(
                    name, value, "应为日期 YYYY-MM-DD", "must be a date YYYY-MM-DD"
                ) from None
    last = dates.get("to", today)
    first = dates.get("from", last - dt.timedelta(days=TREND_DAYS - 1))
    if first > last:
        raise _bad("from", first.isoformat(), "晚于 to", "is after to")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise _bad(
            "from",
            first.isoformat(),
            f"范围超过 {MAX_RANGE_DAYS} 天",
            f"range over {MAX_RANGE_DAYS} days",
        )
    return first, last


async def _report(request: web.Request) -> Report:
    ctx = request.app[api.CTX]
    history = request.app[HISTORY]
    code = _code(request)
    first, last = _range(request, local_day(ctx.clock(), history.tz))
    units = [code, *ctx.registry.child_codes(code)]
    today = {r.code: r for r in history.today_rows(units)}  # on the loop (the coverage index)
    return await request.app[api.READS].run(
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
    ctx = request.app[api.CTX]
    history = request.app[HISTORY]
    code = _code(request)
    raw = request.query.get("days", str(TREND_DAYS))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_RANGE_DAYS:
        raise _bad(
            "days", raw, f"应为 1 到 {MAX_RANGE_DAYS} 的整数", f"must be 1 to {MAX_RANGE_DAYS}"
        )
    last = local_day(ctx.clock(), history.tz)
    first = last - dt.timedelta(days=int(raw) - 1)
    today = {r.code: r for r in history.today_rows([code])}
    r = await request.app[api.READS].run(
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


def _svg_trend(points: list[tuple[str, float]]) -> str:
    """A small line chart of the unit's daily ratio: inline SVG, prints sharply, no script."""
    if len(points) < 2:
        return ""
    w, h, pad = 640, 160, 24
    step = (w - 2 * pad) / (len(points) - 1)
    xy = [(pad + i * step, h - pad - p * (h - 2 * pad)) for i, (_, p) in enumerate(points)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    return (
        f'<svg viewBox="0 0 {w} {h}" class="trend" data-test="report-trend" role="img">'
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" class="axis"/>'
        f'<text x="{pad}" y="{h - 6}">{html.escape(points[0][0])}</text>'
        f'<text x="{w - pad}" y="{h - 6}" text-anchor="end">{html.escape(points[-1][0])}</text>'
        f'<text x="2" y="{pad}">100%</text><text x="2" y="{h - pad}">0%</text>'
        f'<polyline points="{line}"/></svg>'
    )


def render_report(r: Report, s: dict[str, str], lang: str) -> str:
    """The printable page: ``dashboard/report.html`` filled in (server-side, no script)."""
    e = html.escape
    date = zh_date if lang != "en" else dt.date.isoformat
    day = r.summary_day()
    summary = []
    for code, name, level, v, p, c, ratio in summary_rows(r):
        nums = "".join(f'<td class="num">{"—" if x is None else f"{x:,}"}</td>' for x in (v, p, c))
        pct = "—" if ratio is None else f"{ratio * 100:.2f}%"
        total = ' class="total"' if name == TOTAL_NAME else ""
        summary.append(
            f'<tr{total} data-code="{e(code)}"><td>{e(code)}</td><td>{e(name)}</td>'
            f'<td>{e(level)}</td>{nums}<td class="num">{pct}</td></tr>'
        )
    unit_days = [(d, row) for d in r.days if (row := r.at(r.code, d)) is not None]
    daily = "".join(
        f'<tr><td>{e(date(d))}</td><td class="num">{row.villages:,}</td>'
        f'<td class="num">{row.provisioned:,}</td><td class="num">{row.covered:,}</td>'
        f'<td class="num">{row.ratio * 100:.2f}%</td><td>{e(s["source_" + row.source])}</td></tr>'
        for d, row in unit_days
    )
    fill = {
        "lang": lang,
        "title": e(f"{s['report_title']}：{r.name}"),
        "query": e(f"code={r.code}&from={r.first.isoformat()}&to={r.last.isoformat()}"),
        "range": e(f"{s['report_range']} {date(r.first)} – {date(r.last)}"),
        "as_of": e(f"{s['report_as_of']} {date(day) if day else '—'}"),
        "summary": "".join(summary),
        "trend": _svg_trend([(date(d), row.ratio) for d, row in unit_days]),
        "daily": daily,
    }
    page = REPORT_HTML.read_text(encoding="utf-8")
    page = re.sub(r"\{\{s:(\w+)\}\}", lambda m: e(s[m.group(1)]), page)
    return re.sub(r"\{\{(\w+)\}\}", lambda m: fill[m.group(1)], page)


def commissioning_summary(conn: sqlite3.Connection, node_id: str) -> dict[str, Any] | None:
    """The node's latest commissioning report in brief (central.commissioning stores
    them), or None: none uploaded, or no provisioning on this central (no table)."""
    try:
        row = conn.execute(
            "SELECT id, uploaded_at, ok, technician FROM commissioning_reports WHERE node_id = ?"
            " ORDER BY id DESC LIMIT 1",
            (node_id,),
        ).fetchone()
    except sqlite3.OperationalError:
        return None
    if row is None:
        return None
    return {"id": row[0], "uploaded_at": row[1], "ok": bool(row[2]), "technician": row[3]}


async def node_reports(request: web.Request) -> web.Response:
    """``{"commissioning": {...} | null}`` for the node page: a 200 either way, so the page can
    ask without a failed request (a 404 shows as an error in the browser's console)."""
    node_id = request.match_info["node_id"][:80]
    summary = await request.app[api.READS].run(lambda c: commissioning_summary(c, node_id))
    return web.json_response(
        {"node_id": node_id, "commissioning": summary},
        dumps=lambda o: json.dumps(o, ensure_ascii=False),
    )
