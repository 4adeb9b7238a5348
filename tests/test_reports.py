"""Coverage reports and the trend: XLSX/CSV/printable page from the daily history,
checked against a real central (mosquitto, nodes published by the test) and opened with
openpyxl; the totals match the API."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import openpyxl
import pytest

from central import coverage_report
from central.history import DayRow, HistoryStore
from registry import Registry
from shilian.broker import Mosquitto
from tests.dashboard_client import Client, Fleet, add_user
from tests.processes import Central, wait_for

NANNING = Registry.from_package("4501")
COUNTY = "450102"
TOWNSHIPS = [u.code for u in NANNING.children(COUNTY)]
DAY = dt.date(2026, 11, 20)


def _history(tmp_path: Path) -> HistoryStore:
    from central.store import SqliteStore

    SqliteStore(tmp_path / "c.sqlite3").close()
    hs = HistoryStore(tmp_path / "c.sqlite3")
    rows = []
    for i in range(3):
        day = (DAY + dt.timedelta(days=i)).isoformat()
        kids = [(t, 10, 4 + i, 2 + i) for t in TOWNSHIPS]
        rows += [DayRow(day, t, v, p, c, 0.0, "snapshot") for t, v, p, c in kids]
        total = (sum(k[1] for k in kids), sum(k[2] for k in kids), sum(k[3] for k in kids))
        rows.append(DayRow(day, COUNTY, *total, 0.0, "snapshot"))
    hs.write(rows)
    return hs


def _report(hs: HistoryStore, last: dt.date) -> coverage_report.Report:
    return coverage_report.build_report(hs.db, NANNING, {}, COUNTY, DAY, last)


def test_xlsx_has_a_summary_with_totals_and_every_day(tmp_path: Path) -> None:
    hs = _history(tmp_path)
    try:
        r = _report(hs, DAY + dt.timedelta(days=3))  # the 4th day has no history
    finally:
        hs.close()
    wb = openpyxl.load_workbook(io.BytesIO(coverage_report.to_xlsx(r)))
    assert wb.sheetnames == ["汇总", "逐日明细"]
    summary = list(wb["汇总"].iter_rows(values_only=True))
    assert summary[1][0] == "统计日期：2026年11月22日；范围 2026年11月20日 至 2026年11月23日"
    assert summary[2] == coverage_report.SUMMARY_HEADER
    unit, *kids, total = cast(list[tuple[Any, ...]], summary[3:])
    assert unit[:2] == (COUNTY, "兴宁区") and len(kids) == len(TOWNSHIPS)
    assert total[1] == "合计" and total[3:6] == unit[3:6]
    assert total[5] == sum(k[5] for k in kids) == 4 * len(TOWNSHIPS)
    assert abs(total[6] - 0.4) < 1e-9
    daily = list(wb["逐日明细"].iter_rows(values_only=True))
    assert daily[0] == coverage_report.DAILY_HEADER
    assert len(daily) - 1 == 3 * (1 + len(TOWNSHIPS))
    assert daily[1][0] == "2026年11月20日" and daily[1][-1] == "每日快照"


def test_csv_has_iso_days_and_the_summary(tmp_path: Path) -> None:
    hs = _history(tmp_path)
    try:
        body = coverage_report.to_csv(_report(hs, DAY + dt.timedelta(days=2)))
    finally:
        hs.close()
    assert body.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0] == list(coverage_report.DAILY_HEADER)
    assert rows[1][0] == "2026-11-20"
    blank = rows.index([])
    assert rows[blank + 1] == list(coverage_report.SUMMARY_HEADER)
    assert rows[-1][1] == "合计" and rows[-1][5] == str(4 * len(TOWNSHIPS))


# -- against a real central -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Central, Client]]:
    work = tmp_path_factory.mktemp("reports")
    (work / "mosquitto").mkdir()
    broker = Mosquitto(workdir=work / "mosquitto")
    broker.start()
    central = Central(work / "central", broker.port)
    add_user(work / "central" / "central.sqlite3", "h5viewer", "viewer")
    add_user(work / "central" / "central.sqlite3", "h5county", "viewer", "450103")
    fleet: Fleet | None = None
    try:
        central.start()
        client = Client(central.api, "h5viewer")
        fleet = Fleet(broker.port)
        villages = [v.code for v in NANNING.villages() if v.code.startswith(COUNTY)]
        online = [f"{v}-a" for v in villages[::2]]
        offline = [f"{v}-a" for i, v in enumerate(villages) if i % 2 and i % 5 == 1]
        fleet.state(online + offline, True)
        fleet.state(offline, False)
        n = len(online)
        wait_for(lambda: client.get("/healthz")["nodes_online"] == n, what="fleet known")
        yield central, client
    finally:
        if fleet is not None:
            fleet.close()
        central.close()
        broker.stop()


@pytest.mark.slow
def test_xlsx_download_totals_match_the_api(site: tuple[Central, Client]) -> None:
    _, client = site
    status, body = client.raw("GET", f"/api/v1/reports/coverage.xlsx?code={COUNTY}")
    assert status == 200
    api = client.get(f"/api/v1/coverage/{COUNTY}")
    wb = openpyxl.load_workbook(io.BytesIO(body))
    rows = list(wb["汇总"].iter_rows(values_only=True))
    unit = rows[3]
    total = rows[-1]
    want = (api["unit"]["villages"], api["unit"]["provisioned"], api["unit"]["covered"])
    assert unit[3:6] == want and total[1] == "合计" and total[3:6] == want
    kids = {r[0]: r for r in rows[4:-1]}
    for c in api["children"]:
        assert kids[c["code"]][3:6] == (c["villages"], c["provisioned"], c["covered"])
    trend = client.get(f"/api/v1/history/coverage?code={COUNTY}")
    assert trend["days"][-1]["covered"] == api["unit"]["covered"]
    assert trend["days"][-1]["source"] == "live"


@pytest.mark.slow
def test_printable_page_and_csv_and_bad_ranges(site: tuple[Central, Client]) -> None:
    _, client = site
    api = client.get(f"/api/v1/coverage/{COUNTY}")
    status, page = client.raw("GET", f"/dashboard/report?code={COUNTY}")
    text = page.decode()
    assert status == 200 and "综治视联网覆盖率报表" in text and "@page" not in text
    assert '<tr class="total" data-code=""><td></td><td>合计</td>' in text
    assert f'<td class="num">{api["unit"]["covered"]:,}</td>' in text
    status, body = client.raw("GET", f"/api/v1/reports/coverage.csv?code={COUNTY}")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[-1][1] == "合计" and int(rows[-1][5]) == api["unit"]["covered"]
    for query, needle in (
        ("from=2026-13-01", "YYYY-MM-DD"),
        ("from=2026-11-20&to=2026-11-01", "after until"),
        ("from=2020-01-01&to=2026-01-01", "range over"),
    ):
        status, body = client.raw("GET", f"/api/v1/reports/coverage.xlsx?{query}")
        assert status == 400 and needle in body.decode(), body
    status, body = client.raw("GET", "/api/v1/reports/coverage.xlsx?code=999999")
    assert status == 404
    status, body = client.raw("GET", "/api/v1/nodes?seen_before=yesterday")
    assert status == 400 and "seen_before" in body.decode()
    assert client.get(f"/api/v1/nodes?county={COUNTY}&seen_before=1")["total"] == 0


@pytest.mark.slow
def test_trend_and_reports_take_a_since_until_range(site: tuple[Central, Client]) -> None:
    """The dashboard's date-range picker asks the trend and the reports for since..until."""
    _, client = site
    today = dt.date.fromisoformat(client.get(f"/api/v1/history/coverage?code={COUNTY}")["to"])
    since, until = today - dt.timedelta(days=6), today
    q = f"code={COUNTY}&since={since}&until={until}"
    trend = client.get(f"/api/v1/history/coverage?{q}")
    assert (trend["from"], trend["to"]) == (since.isoformat(), until.isoformat())
    assert trend["days"][-1]["day"] == today.isoformat()  # today's live figure, within the range
    past = client.get(f"/api/v1/history/coverage?code={COUNTY}&since=2026-01-01&until=2026-01-31")
    assert (past["from"], past["to"], past["days"]) == ("2026-01-01", "2026-01-31", [])
    status, body = client.raw("GET", f"/api/v1/reports/coverage.csv?{q}")
    assert status == 200
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    days = {r[0] for r in rows[1 : rows.index([])]}  # days with figures: only today's here
    assert days == {today.isoformat()}
    status, body = client.raw("GET", f"/api/v1/reports/coverage.csv?code={COUNTY}&until={since}")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert status == 200 and rows[1] == []  # a range before today: no day has figures
    status, page = client.raw("GET", f"/dashboard/report?{q}")
    assert status == 200 and f"since={since}&amp;until={until}" in page.decode()
    for query, needle_zh, needle_en in (
        ("since=2026-11-20&until=2026-11-01", "晚于 until", "is after until"),
        ("since=2026-02-30", "应为日期", "must be a date"),
        ("since=2024-01-01&until=2026-01-01", "范围超过", "range over"),
        ("since=2026-11-01&from=2026-11-01", "重复", "repeats since"),
    ):
        for path in ("/api/v1/history/coverage", "/api/v1/reports/coverage.xlsx"):
            status, body = client.raw("GET", f"{path}?{query}")
            err = json.loads(body)["error"]
            assert status == 400 and err["code"] == "bad_param", body
            assert needle_zh in err["message"] and needle_en in err["message"], err


@pytest.mark.slow
def test_a_county_user_gets_only_their_county(site: tuple[Central, Client]) -> None:
    central, _ = site
    county = Client(central.api, "h5county")
    assert county.raw("GET", f"/api/v1/reports/coverage.xlsx?code={COUNTY}")[0] == 403
    assert county.raw("GET", f"/api/v1/history/coverage?code={COUNTY}")[0] == 403
    trend = county.get("/api/v1/history/coverage")
    assert trend["code"] == "450103"
