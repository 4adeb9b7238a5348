"""Coverage history: one snapshot per day per unit (scope down to county, and townships when
the scope has few enough), for the dashboard's 30-day trend and the coverage reports.

- A *snapshot* is taken from the in-memory coverage index at :data:`SNAPSHOT_AT` local time
  (Asia/Shanghai: the governance centres' day) and at start-up when today has none yet; a later
  snapshot of the same day replaces the earlier one, so a day's row is its last known state.
- Days before central kept snapshots are *derived* from the nodes' online/offline intervals
  (``state_history``, central.store) at the same time of day: a fresh install shows what it can.
  A derived row never replaces a snapshot.
- The trend's last point is today's current figure (the coverage index), not a stored row.

Storage: table ``coverage_daily`` in central's database (SQLite or PostgreSQL, central.db),
written on its own connection (durable commits) from one thread. A power cut loses at most
the snapshot being written; the next start writes today's again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from central.coverage import CoverageIndex
from central.db import ERRORS, Db, Target, open_db
from registry import Registry

log = logging.getLogger("shilian.central.history")

TZ = ZoneInfo("Asia/Shanghai")
#: Local time of the daily snapshot: late enough to be the day's state, early enough to land
#: before midnight even if central is busy.
SNAPSHOT_AT = dt.time(23, 55)
#: Days shown by the trend and derived at start-up from the node intervals.
TREND_DAYS = 30
#: Longest report range: a year of days (rows per day: the unit and its children).
MAX_RANGE_DAYS = 366
#: Townships are kept per day only when the scope has at most this many (a city's ~150, a
#: province's ~2,500); the whole country's 41,000 would add 1.2 million rows a month.
MAX_TOWNSHIPS = 5000
#: Deepest level snapshotted: 4 township (3 county when the scope has too many townships).
TOWNSHIP_LEVEL = 4


@dataclass(frozen=True, slots=True)
class DayRow:
    """One unit's coverage on one day. ``source``: ``snapshot`` or ``derived``."""

    day: str  # ISO date, local (Asia/Shanghai)
    code: str
    villages: int
    provisioned: int
    covered: int
    taken: float  # the instant the figures describe, Unix seconds
    source: str

    @property
    def ratio(self) -> float:
        return self.covered / self.villages if self.villages else 0.0


# -- time (pure) --------------------------------------------------------------------------------


def local_day(ts: float, tz: dt.tzinfo = TZ) -> dt.date:
    return dt.datetime.fromtimestamp(ts, tz).date()


def day_instant(day: dt.date, tz: dt.tzinfo = TZ) -> float:
    """The moment a day's figures describe: :data:`SNAPSHOT_AT` local time on ``day``."""
    return dt.datetime.combine(day, SNAPSHOT_AT, tz).timestamp()


def next_snapshot(now: float, tz: dt.tzinfo = TZ) -> float:
    """The next :data:`SNAPSHOT_AT` strictly after ``now``."""
    today = local_day(now, tz)
    at = day_instant(today, tz)
    return at if at > now else day_instant(today + dt.timedelta(days=1), tz)


def parse_day(text: str) -> dt.date:
    """``YYYY-MM-DD`` → date; ValueError otherwise."""
    return dt.date.fromisoformat(text) if len(text) == 10 else dt.date.fromisoformat("x")


# -- what is kept (pure) ------------------------------------------------------------------------


def depth(registry: Registry) -> int:
    """Deepest level kept per day for this scope."""
    root = registry.root()
    if root.level >= TOWNSHIP_LEVEL:
        return TOWNSHIP_LEVEL
    townships = 0
    stack = [root.code]
    while stack and townships <= MAX_TOWNSHIPS:
        code = stack.pop()
        for c in registry.child_codes(code):
            if len(c) == 9:
                townships += 1
            elif len(c) < 9:
                stack.append(c)
    return TOWNSHIP_LEVEL if townships <= MAX_TOWNSHIPS else TOWNSHIP_LEVEL - 1


def kept_units(registry: Registry) -> list[str]:
    """Codes of the units kept per day: the scope's root and every unit down to :func:`depth`."""
    deepest = depth(registry)
    out: list[str] = []
    stack = [registry.root()]
    while stack:
        u = stack.pop()
        out.append(u.code)
        if u.level < deepest:
            stack.extend(c for c in registry.children(u.code) if c.level <= deepest)
    return out


def snapshot_rows(
    units: Iterable[str], coverage: CoverageIndex, day: dt.date, taken: float
) -> list[DayRow]:
    """Today's figures of ``units`` from the coverage index (on the loop's thread)."""
    iso = day.isoformat()
    rows = []
    for code in units:
        c = coverage.summary(code)
        rows.append(DayRow(iso, code, c.villages, c.provisioned, c.covered, taken, "snapshot"))
    return rows


def derive_rows(
    db: Db,
    registry: Registry,
    villages_under: dict[str, int],
    days: Iterable[dt.date],
    tz: dt.tzinfo = TZ,
) -> list[DayRow]:
    """Rows for ``days`` of the units in ``villages_under`` (code → villages in the registry)
    from the nodes' intervals: at each day's instant a village is
    provisioned if a node of it had been seen, covered if one was online. Only days after the
    first recorded interval (before that central knew nothing)."""
    row = db.fetchone("SELECT min(start) FROM state_history")
    first = None if row is None else row[0]
    if first is None:
        return []
    units = list(villages_under)
    wanted = set(units)
    chains: dict[str, list[str]] = {}

    def chain(village: str) -> list[str]:
        if village not in chains:
            chains[village] = [u.code for u in registry.ancestors(village) if u.code in wanted]
        return chains[village]

    out: list[DayRow] = []
    for day in days:
        at = day_instant(day, tz)
        if at < first:
            continue
        provisioned = {
            v
            for (v,) in db.fetchall(
                "SELECT DISTINCT village FROM nodes WHERE first_seen <= ?", (at,)
            )
        }
        covered = {
            r[0][:12]
            for r in db.fetchall(  # "end" is a reserved word in PostgreSQL
                "SELECT node_id FROM state_history WHERE state = 'online' AND start <= ?"
                ' AND ("end" IS NULL OR "end" > ?)',
                (at, at),
            )
        }
        prov_n: dict[str, int] = dict.fromkeys(units, 0)
        cov_n: dict[str, int] = dict.fromkeys(units, 0)
        for v in provisioned:
            if registry.has_village(v):
                for code in chain(v):
                    prov_n[code] += 1
        for v in covered & provisioned:
            if registry.has_village(v):
                for code in chain(v):
                    cov_n[code] += 1
        iso = day.isoformat()
        out.extend(
            DayRow(iso, code, villages_under[code], prov_n[code], cov_n[code], at, "derived")
            for code in units
        )
    return out


# -- storage ------------------------------------------------------------------------------------


class HistoryStore:
    """Writer of ``coverage_daily``: one connection (central.db), used from one thread at a
    time."""

    def __init__(self, target: Target) -> None:
        self.db = open_db(target)

    def close(self) -> None:
        self.db.close()

    def has_day(self, code: str, day: dt.date) -> bool:
        return (
            self.db.fetchone(
                "SELECT 1 FROM coverage_daily WHERE code = ? AND day = ? AND source = 'snapshot'",
                (code, day.isoformat()),
            )
            is not None
        )

    def missing_days(self, code: str, days: list[dt.date]) -> list[dt.date]:
        have = {
            r[0]
            for r in self.db.fetchall(
                "SELECT day FROM coverage_daily WHERE code = ? AND day >= ?",
                (code, days[0].isoformat()),
            )
        }
        return [d for d in days if d.isoformat() not in have]

    def write(self, rows: list[DayRow]) -> None:
        """Snapshots replace the day's row; derived rows only fill gaps (one transaction)."""
        with self.db.transaction(write=True):
            for r in rows:
                conflict = (
                    "DO UPDATE SET villages=excluded.villages, provisioned=excluded.provisioned,"
                    " covered=excluded.covered, taken=excluded.taken, source=excluded.source"
                    if r.source == "snapshot"
                    else "DO NOTHING"
                )
                self.db.execute(
                    "INSERT INTO coverage_daily(day, code, villages, provisioned, covered, taken,"
                    f" source) VALUES (?,?,?,?,?,?,?) ON CONFLICT(code, day) {conflict}",
                    (r.day, r.code, r.villages, r.provisioned, r.covered, r.taken, r.source),
                )


def read_days(
    db: Db, codes: list[str], first: dt.date, last: dt.date
) -> dict[str, dict[str, DayRow]]:
    """``{code: {iso day: row}}`` for ``codes`` between ``first`` and ``last`` inclusive."""
    out: dict[str, dict[str, DayRow]] = {c: {} for c in codes}
    rows = db.fetchall(
        "SELECT day, code, villages, provisioned, covered, taken, source FROM coverage_daily"
        f" WHERE code IN ({','.join('?' * len(codes))}) AND day BETWEEN ? AND ?",
        [*codes, first.isoformat(), last.isoformat()],
    )
    for r in rows:
        row = DayRow(*(tuple(r)))
        out[row.code][row.day] = row
    return out


def row_json(r: DayRow) -> dict[str, Any]:
    return {
        "day": r.day,
        "villages": r.villages,
        "provisioned": r.provisioned,
        "covered": r.covered,
        "ratio": r.ratio,
        "source": r.source,
    }


# -- the task -----------------------------------------------------------------------------------


class HistoryTask:
    """Writes the snapshots; owned by central's supervisor (:meth:`run` until ``stop``)."""

    def __init__(
        self,
        db_path: Target,
        registry: Registry,
        coverage: CoverageIndex,
        clock: Callable[[], float],
        tz: dt.tzinfo = TZ,
    ) -> None:
        self.db_path = db_path
        self.registry = registry
        self.coverage = coverage
        self.clock = clock
        self.tz = tz
        self.units = kept_units(registry)
        self.snapshots = 0

    def today_rows(self, units: Iterable[str] | None = None) -> list[DayRow]:
        """The current figures as today's rows of ``units`` (default: every kept unit), e.g. the
        trend's and the reports' last day. On the loop: the coverage index is the loop's."""
        now = self.clock()
        return snapshot_rows(
            self.units if units is None else units, self.coverage, local_day(now, self.tz), now
        )

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        store = await asyncio.to_thread(HistoryStore, self.db_path)
        try:
            try:
                await self._catch_up(store)
            except ERRORS as e:  # history is a convenience: central runs on without it
                log.warning("覆盖率历史补全失败 / coverage history catch-up failed: %s", e)
            while not stop.is_set():
                wait = next_snapshot(self.clock(), self.tz) - self.clock()
                try:
                    async with asyncio.timeout(max(0.0, wait)):
                        await stop.wait()
                except TimeoutError:
                    await self._snapshot(store)
        finally:
            await loop.run_in_executor(None, store.close)

    async def _catch_up(self, store: HistoryStore) -> None:
        now = self.clock()
        today = local_day(now, self.tz)
        root = self.registry.root().code
        if not await asyncio.to_thread(store.has_day, root, today):
            await self._snapshot(store)
        days = [today - dt.timedelta(days=i) for i in range(TREND_DAYS, 0, -1)]
        missing = await asyncio.to_thread(store.missing_days, root, days)
        if missing:
            rows = await asyncio.to_thread(
                derive_rows,
                store.db,
                self.registry,
                {code: self.coverage.summary(code).villages for code in self.units},
                missing,
                self.tz,
            )
            if rows:
                await asyncio.to_thread(store.write, rows)
                log.info(
                    "由节点状态区间补全覆盖率历史 / derived coverage history for %d days",
                    len({r.day for r in rows}),
                )

    async def _snapshot(self, store: HistoryStore) -> None:
        rows = self.today_rows()  # on the loop: the coverage index is the loop's
        try:
            await asyncio.to_thread(store.write, rows)
        except ERRORS as e:
            log.warning("覆盖率快照写入失败 / coverage snapshot not written: %s", e)
            return
        self.snapshots += 1
        log.info("覆盖率快照 / coverage snapshot %s: %d units", rows[0].day, len(rows))
