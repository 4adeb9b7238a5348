"""The coverage report: the unit and its children per day from the daily history
(central.history), and its formats: XLSX, CSV and the printable page (``dashboard/report.html``).

Pure of HTTP: :func:`build_report` reads the database (central.db) given by the caller, the formats
turn a :class:`Report` into bytes or text. A day without history is left empty (``—``), never
guessed; today's figures are live.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from central import assets, http
from central.db import Db
from central.history import DayRow, read_days
from registry import Registry

REPORT_HTML = assets.ASSETS / "report.html"

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
    db: Db,
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
    rows = read_days(db, codes, first, last)
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
    return http.LEVEL_NAMES[level]


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
        "query": e(f"code={r.code}&since={r.first.isoformat()}&until={r.last.isoformat()}"),
        "range": e(f"{s['report_range']} {date(r.first)} – {date(r.last)}"),
        "as_of": e(f"{s['report_as_of']} {date(day) if day else '—'}"),
        "summary": "".join(summary),
        "trend": _svg_trend([(date(d), row.ratio) for d, row in unit_days]),
        "daily": daily,
    }
    page = REPORT_HTML.read_text(encoding="utf-8")
    page = re.sub(r"\{\{s:(\w+)\}\}", lambda m: e(s[m.group(1)]), page)
    return re.sub(r"\{\{(\w+)\}\}", lambda m: fill[m.group(1)], page)
