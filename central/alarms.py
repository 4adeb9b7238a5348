"""Alarm handling at central: the alarm list and operator acknowledgement.

An alarm is an event of priority ``alarm`` (panic, intrusion, fire, tamper from the village
alarm board or panels; docs/protocol.md). It stays *open* until an operator acknowledges it
(who, when, a note), then *acknowledged* until an operator closes it (handled: who, when, a
note). Acknowledging twice is refused (409, saying in words who did it and when) so two
operators never both believe they are the one handling it. Its *severity* follows its kind
(:func:`severity`: a tamper is a warning, everything else critical). Who acknowledged or
closed is the logged-in user (role operator or admin, the alarm's village in their scope:
central.auth); each acknowledgement and closing is in the audit log.

Storage: tables ``alarm_acks`` and ``alarm_closes`` in central's database (SQLite or
PostgreSQL, central.db), one row per acknowledged (closed) event, committed durably (SQLite
``synchronous=FULL``, PostgreSQL's COMMIT after the WAL flush) before the API answers: an
answered acknowledgement survives a crash or a power cut. A partial index on ``events`` over
alarm rows keeps the open list and the ``shilian_alarms_open`` gauge proportional to the number
of alarms, not of all events.

Routes (docs/api.md): ``GET /api/v1/alarms``, ``POST /api/v1/alarms/{event_id}/ack``,
``POST /api/v1/alarms/{event_id}/close``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from central import auth, body_errors, http, views
from central.db import ERRORS, Db, Target, open_db
from wire import event_kinds

log = logging.getLogger("shilian.central.alarms")

#: Over central.store's ``events`` (created by the store before the API starts).
#: Operator name and note lengths: a name, and a sentence or two of what was done.
MAX_BY_CHARS = 64
MAX_NOTE_CHARS = 1000

_COLUMNS = (
    "e.id, e.node_id, e.village, e.boot_id, e.seq, e.ts, e.recv_ts, e.kind, e.device, e.data,"
    " a.acked_by, a.acked_at, a.note, c.closed_by, c.closed_at, c.note AS close_note"
)
_FROM = (
    " FROM events e LEFT JOIN alarm_acks a ON a.event_id = e.id"
    " LEFT JOIN alarm_closes c ON c.event_id = e.id"
)
#: ``acked``: acknowledged and not closed; ``handled``: acknowledged, closed or not.
_STATES = ("open", "acked", "closed", "handled", "all")
_ORDERS = ("open_first", "newest")
#: Alarm kinds that are warnings (someone opened a box or moved a sensor); every other alarm
#: kind, including one this version does not know, is critical: a person may be in danger.
WARNING_KINDS = frozenset({event_kinds.TAMPER})
SEVERITIES = ("critical", "warning")
#: Times in messages are China Standard Time, as operators read them on the wall clock.
CST = dt.timezone(dt.timedelta(hours=8))


def severity(kind: str) -> str:
    return "warning" if kind in WARNING_KINDS else "critical"


def spoken_time(ts: float) -> tuple[str, str]:
    """``ts`` for a message, in Chinese and English (China Standard Time)."""
    t = dt.datetime.fromtimestamp(ts, CST)
    return (
        f"{t.year}年{t.month}月{t.day}日 {t:%H:%M:%S}",
        f"{t:%Y-%m-%d %H:%M:%S} (UTC+8)",
    )


class UnknownAlarm(Exception):
    """No event with this id, or it is not an alarm."""


class AlreadyAcked(Exception):
    """The alarm was acknowledged before; ``by`` and ``at`` tell by whom and when."""

    def __init__(self, by: str, at: float) -> None:
        super().__init__(f"already acknowledged by {by} at {at}")
        self.by, self.at = by, at


class AlreadyClosed(AlreadyAcked):
    """The alarm was closed before; ``by`` and ``at`` tell by whom and when."""


class NotAcked(Exception):
    """An alarm is closed after someone acknowledged it (took it in hand), not before."""


@dataclass(frozen=True, slots=True)
class AlarmFilter:
    state: str = "open"  # one of _STATES
    node: str | None = None
    village: str | None = None  # 12 digits
    county: str | None = None  # 6 digits
    scope: str | None = None  # a division-code prefix: the user's scope (central.auth)
    severity: str | None = None  # critical | warning
    since: float | None = None  # event time, Unix seconds, inclusive
    until: float | None = None  # event time, Unix seconds, exclusive
    order: str = "open_first"  # open_first (then oldest first) | newest


class AckStore:
    """The writer of ``alarm_acks`` and ``alarm_closes``: one connection (central.db), used from
    one thread at a time (the API runs it on a single-thread executor)."""

    def __init__(self, target: Target) -> None:
        self.db = open_db(target)

    def close(self) -> None:
        self.db.close()

    def ack(self, event_id: int, by: str, note: str, at: float) -> None:
        """Record the acknowledgement; :class:`UnknownAlarm` / :class:`AlreadyAcked`."""
        with self._alarm_transaction(event_id) as c:
            prev = c.fetchone(
                "SELECT acked_by, acked_at FROM alarm_acks WHERE event_id = ?", (event_id,)
            )
            if prev is not None:
                raise AlreadyAcked(prev[0], prev[1])
            c.execute(
                "INSERT INTO alarm_acks(event_id, acked_by, acked_at, note) VALUES (?,?,?,?)",
                (event_id, by, at, note),
            )

    def close_alarm(self, event_id: int, by: str, note: str, at: float) -> None:
        """Record that the alarm was handled; :class:`UnknownAlarm` / :class:`NotAcked` /
        :class:`AlreadyClosed`."""
        with self._alarm_transaction(event_id) as c:
            if not c.fetchone("SELECT 1 FROM alarm_acks WHERE event_id = ?", (event_id,)):
                raise NotAcked(event_id)
            prev = c.fetchone(
                "SELECT closed_by, closed_at FROM alarm_closes WHERE event_id = ?", (event_id,)
            )
            if prev is not None:
                raise AlreadyClosed(prev[0], prev[1])
            c.execute(
                "INSERT INTO alarm_closes(event_id, closed_by, closed_at, note) VALUES (?,?,?,?)",
                (event_id, by, at, note),
            )

    @contextmanager
    def _alarm_transaction(self, event_id: int) -> Iterator[Db]:
        """One write transaction on an existing alarm (:class:`UnknownAlarm` otherwise),
        committed when the block ends, rolled back if it raises. Write transactions take turns
        on both backends (central.db), so no other writer comes between the check and the
        insert."""
        db = self.db
        with db.transaction(write=True):
            row = db.fetchone("SELECT priority FROM events WHERE id = ?", (event_id,))
            if row is None or row[0] != "alarm":
                raise UnknownAlarm(event_id)
            yield db


# -- queries (plain functions over a read-only connection) -------------------------------------


def _alarm(row: dict[str, Any]) -> dict[str, Any]:
    d = {k: row[k] for k in ("id", "node_id", "village", "boot_id", "seq", "ts", "recv_ts")}
    d["county"] = row["village"][:6]
    d["kind"] = row["kind"]
    d["severity"] = severity(row["kind"])
    d["device"] = row["device"]
    d["data"] = json.loads(row["data"])
    acked = row["acked_by"] is not None
    closed = row["closed_by"] is not None
    d["state"] = "closed" if closed else "acked" if acked else "open"
    d["ack"] = (
        {"by": row["acked_by"], "at": row["acked_at"], "note": row["note"]} if acked else None
    )
    d["close"] = (
        {"by": row["closed_by"], "at": row["closed_at"], "note": row["close_note"]}
        if closed
        else None
    )
    return d


def list_alarms(
    db: Db, f: AlarmFilter, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, one page): open alarms first, then oldest first (event time, arrival);
    or newest first (``order="newest"``)."""
    state: views.Cond = {
        "open": ("a.event_id IS NULL", ()),
        "acked": ("a.event_id IS NOT NULL AND c.event_id IS NULL", ()),
        "closed": ("c.event_id IS NOT NULL", ()),
        "handled": ("a.event_id IS NOT NULL", ()),
    }.get(f.state)
    warn = sorted(WARNING_KINDS)
    marks = ",".join("?" * len(warn))
    sev: views.Cond = {
        "warning": (f"e.kind IN ({marks})", tuple(warn)),
        "critical": (f"e.kind NOT IN ({marks})", tuple(warn)),
    }.get(f.severity or "")
    sql_where, args = views.where(
        ("e.priority = 'alarm'", ()),  # a literal: lets SQLite use the partial index
        state,
        views.eq("e.node_id", f.node),
        views.eq("e.village", f.village),
        views.under("e.village", f.county),
        views.under("e.village", f.scope),
        sev,
        None if f.since is None else ("e.ts >= ?", (f.since,)),
        None if f.until is None else ("e.ts < ?", (f.until,)),
    )
    sql = _FROM + sql_where
    order = "e.ts DESC, e.id DESC" if f.order == "newest" else "a.event_id IS NOT NULL, e.ts, e.id"
    with db.transaction(write=False):  # the count and the page from one state
        total = views.count(db, "SELECT count(*)" + sql, args)
        rows = views.records(
            db.execute(
                f"SELECT {_COLUMNS}{sql} ORDER BY {order} LIMIT ? OFFSET ?", [*args, limit, offset]
            )
        )
    return total, [_alarm(r) for r in rows]


def get_alarm(db: Db, event_id: int) -> dict[str, Any] | None:
    row = views.record(
        db.execute(f"SELECT {_COLUMNS}{_FROM} WHERE e.id = ? AND e.priority = 'alarm'", (event_id,))
    )
    return None if row is None else _alarm(row)


def open_count(db: Db) -> int:
    return views.count(
        db,
        "SELECT count(*) FROM events e WHERE e.priority = 'alarm' AND NOT EXISTS"
        " (SELECT 1 FROM alarm_acks a WHERE a.event_id = e.id)",
    )


class OpenAlarmsCollector(Collector):
    """``shilian_alarms_open``, counted at scrape time (an index scan over alarm rows only) on a
    reader of its own (central.views.open_reader), kept between scrapes: the scrape runs on the
    event loop, which must not wait for a new PostgreSQL connection each time. A reader that
    failed is closed and opened again at the next scrape."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._db: Db | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            if self._db is None:
                self._db = views.open_reader(self._target)
            n = open_count(self._db)
        except ERRORS as e:  # a locked file, a server gone: no sample this time
            log.warning("shilian_alarms_open: cannot count open alarms: %s", e)
            self.close()
            return
        yield GaugeMetricFamily(
            "shilian_alarms_open", "未处理的报警 / alarms not yet acknowledged", value=n
        )

    def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            db.close()


# -- HTTP ---------------------------------------------------------------------------------------


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    by: str | None = Field(
        default=None,
        max_length=MAX_BY_CHARS,
        description="ignored (kept for old clients): the acknowledging operator is the logged-in "
        "user",
    )
    note: str = Field(default="", max_length=MAX_NOTE_CHARS, description="what was done")


_ACKS: web.AppKey[AckStore] = web.AppKey("alarm_acks", AckStore)
_WRITER: web.AppKey[ThreadPoolExecutor] = web.AppKey("alarm_writer", ThreadPoolExecutor)


def add_routes(app: web.Application) -> None:
    """Mount the alarm routes and the ``shilian_alarms_open`` gauge on the API ``app``.

    The tables are central's (central.schema), made at start before any route."""
    app.router.add_get("/api/v1/alarms", alarms)
    app.router.add_post("/api/v1/alarms/{event_id}/ack", ack)
    app.router.add_post("/api/v1/alarms/{event_id}/close", close)

    async def acks(app: web.Application) -> AsyncIterator[None]:
        ctx = app[http.CTX]
        # One writer thread: acks are serialised, and the connection stays on one thread.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alarm-ack")
        loop = asyncio.get_running_loop()
        try:
            app[_ACKS] = store = await loop.run_in_executor(pool, AckStore, ctx.db_target)
            app[_WRITER] = pool
            collector = OpenAlarmsCollector(ctx.db_target)
            ctx.metrics_registry.register(collector)
            try:
                yield
            finally:
                ctx.metrics_registry.unregister(collector)
                collector.close()
                await loop.run_in_executor(pool, store.close)
        finally:
            pool.shutdown(wait=True)

    app.cleanup_ctx.append(acks)


def _event_id(request: web.Request) -> int:
    raw = request.match_info["event_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise _unknown_alarm(raw)
    return int(raw)


def _unknown_alarm(raw: object) -> http.ApiError:
    return http.ApiError(
        404,
        "unknown_alarm",
        f"没有编号为 {str(raw)[:40]} 的报警",
        f"no alarm with id {str(raw)[:40]}",
    )


async def alarms(request: web.Request) -> web.Response:
    ctx = request.app[http.CTX]
    q = http.params(
        request,
        (
            "state", "node", "village", "county", "severity", "since", "until", "order",
            "limit", "offset",
        ),
    )  # fmt: skip
    f = AlarmFilter(
        state=http.choice(q, "state", _STATES) or "open",
        node=http.node_id_param(q.get("node")),
        village=http.digits(q, "village", 12),
        county=http.digits(q, "county", 6),
        scope=auth.list_scope(request),
        severity=http.choice(q, "severity", SEVERITIES),
        since=http.unix_param(q, "since"),
        until=http.unix_param(q, "until"),
        order=http.choice(q, "order", _ORDERS) or "open_first",
    )
    limit = http.int_param(q, "limit", http.DEFAULT_PAGE, 1, http.MAX_PAGE)
    offset = http.int_param(q, "offset", 0, 0, 2**31)
    total, rows = await request.app[http.READS].run(lambda c: list_alarms(c, f, limit, offset))
    return http.ok(
        {
            "state": f.state,
            "total": total,
            "limit": limit,
            "offset": offset,
            "alarms": [_names(ctx, r) for r in rows],
        }
    )


def _names(ctx: http.ApiContext, alarm: dict[str, Any]) -> dict[str, Any]:
    village = ctx.registry.unit(alarm["village"])
    county = ctx.registry.unit(alarm["county"])
    alarm["village_name"] = village.name if village else None
    alarm["county_name"] = county.name if county else None
    return alarm


def _ack_body(raw: bytes) -> AckBody:
    data = http.json_body(raw)
    try:
        return AckBody.model_validate(data)
    except ValidationError as e:
        zh, en = body_errors.explain(e)
        raise http.ApiError(400, "bad_body", f"请求体有误：{zh}", f"invalid body: {en}") from None


async def ack(request: web.Request) -> web.Response:
    ctx = request.app[http.CTX]
    http.params(request, ())
    event_id = _event_id(request)
    body = _ack_body(await request.read())
    before = await request.app[http.READS].run(lambda c: get_alarm(c, event_id))
    if before is None:
        raise _unknown_alarm(event_id)
    auth.check_scope(request, before["village"])  # before writing: 403 leaves no trace
    by = auth.principal(request).user
    store = request.app[_ACKS]
    at = ctx.clock()
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(request.app[_WRITER], store.ack, event_id, by, body.note, at)
    except UnknownAlarm:
        raise _unknown_alarm(event_id) from None
    except AlreadyAcked as e:
        await auth.audit(request, "alarm_ack", str(event_id), "already_acked", by=e.by)
        zh_at, en_at = spoken_time(e.at)
        raise http.ApiError(
            409,
            "already_acked",
            f"报警 {event_id} 已由 {e.by} 于 {zh_at} 确认，无需重复确认",
            f"alarm {event_id} was already acknowledged by {e.by} at {en_at}",
        ) from None
    await auth.audit(
        request, "alarm_ack", str(event_id), "ok", node=before["node_id"], note=body.note
    )
    log.info("报警已确认 / alarm %d acknowledged by %s", event_id, by)
    alarm = await request.app[http.READS].run(lambda c: get_alarm(c, event_id))
    assert alarm is not None  # acked alarms are never deleted
    return http.ok(_names(ctx, alarm))


async def close(request: web.Request) -> web.Response:
    """Close an acknowledged alarm (it was handled), with a note of what was done."""
    ctx = request.app[http.CTX]
    http.params(request, ())
    event_id = _event_id(request)
    body = _ack_body(await request.read())
    before = await request.app[http.READS].run(lambda c: get_alarm(c, event_id))
    if before is None:
        raise _unknown_alarm(event_id)
    auth.check_scope(request, before["village"])
    by = auth.principal(request).user
    loop = asyncio.get_running_loop()
    store = request.app[_ACKS]
    try:
        await loop.run_in_executor(
            request.app[_WRITER], store.close_alarm, event_id, by, body.note, ctx.clock()
        )
    except UnknownAlarm:
        raise _unknown_alarm(event_id) from None
    except NotAcked:
        raise http.ApiError(
            409,
            "not_acked",
            f"报警 {event_id} 尚未确认，请先确认再关闭",
            f"alarm {event_id} is not acknowledged yet: acknowledge it before closing it",
        ) from None
    except AlreadyClosed as e:
        zh_at, en_at = spoken_time(e.at)
        raise http.ApiError(
            409,
            "already_closed",
            f"报警 {event_id} 已由 {e.by} 于 {zh_at} 关闭",
            f"alarm {event_id} was already closed by {e.by} at {en_at}",
        ) from None
    await auth.audit(
        request, "alarm_close", str(event_id), "ok", node=before["node_id"], note=body.note
    )
    log.info("报警已关闭 / alarm %d closed by %s", event_id, by)
    alarm = await request.app[http.READS].run(lambda c: get_alarm(c, event_id))
    assert alarm is not None  # alarms are never deleted
    return http.ok(_names(ctx, alarm))
