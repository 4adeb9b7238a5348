"""Read-side queries of the HTTP API over central's database (schema: central.migrations), on
SQLite or PostgreSQL (central.db).

Every query runs in a small thread pool, so the event loop never waits on the database. On
SQLite each query has its own read-only connection: in WAL mode readers never block ingest's
writer nor each other. On PostgreSQL the pool keeps one plain connection per worker, reused
(MVCC readers never block writers either); a connection a query failed on is closed, not
reused, and a kept one the server ended meanwhile is replaced and the query run again once.
The query functions are plain ``(db, ...) -> data`` over a :class:`central.db.Db`, so tests call
them directly.

Indexes these queries rely on (central.migrations): nodes(village), nodes(county),
events(node_id, ts), events(village, ts), events(ts), health(node_id, id),
state_history(node_id, start), gaps(node_id, boot_id).
"""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from central.db import Cursor, Db, PostgresDb, SqliteDb, Target

T = TypeVar("T")

#: Reader threads. Reads are short and run in parallel on both backends; a few threads keep one
#: slow query (a large offset) from queueing the others without letting a burst of API calls
#: take the CPU from ingest on a 2-core box. On PostgreSQL also the most connections kept.
READ_WORKERS = 4
#: How long a SQLite reader waits on a lock (only during WAL recovery or a checkpoint restart).
READ_BUSY_TIMEOUT_S = 5.0
#: Rows of each history shown in a node's detail: enough for a glance, small enough to be fast.
DETAIL_HEALTH_ROWS = 20
DETAIL_EVENT_ROWS = 20
DETAIL_HISTORY_ROWS = 20
#: Open gaps listed in a node's detail (a node with more has a deeper problem than a list shows).
DETAIL_GAP_ROWS = 100

_NODE_COLUMNS = (
    "node_id, village, county, state, state_since, state_reason, boot_id, birth_seq, "
    "health_interval_s, sw_version, first_seen, last_seen, last_health"
)
_EVENT_COLUMNS = "id, node_id, village, boot_id, seq, ts, recv_ts, priority, kind, device, data"


@dataclass(frozen=True, slots=True)
class NodeFilter:
    village: str | None = None  # 12 digits
    township: str | None = None  # 9 digits
    county: str | None = None  # 6 digits
    state: str | None = None  # "online" | "offline"
    scope: str | None = None  # a division-code prefix: the user's scope (central.auth)
    seen_before: float | None = None  # last seen before this, Unix seconds (exclusive)


@dataclass(frozen=True, slots=True)
class EventFilter:
    node: str | None = None
    village: str | None = None
    county: str | None = None
    priority: str | None = None
    since: float | None = None  # event time (the node's clock), Unix seconds, inclusive
    scope: str | None = None  # a division-code prefix: the user's scope (central.auth)


class ReadOnlySqliteDb(SqliteDb):
    """A :class:`central.db.SqliteDb` on a read-only connection (``mode=ro``): a query can
    never write, and opening it never creates nor migrates the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(
            path.resolve().as_uri() + "?mode=ro",
            uri=True,
            timeout=READ_BUSY_TIMEOUT_S,
            isolation_level=None,  # transactions are explicit, as central.db's
            check_same_thread=False,
        )
        self._depth = 0


def open_reader(target: Target) -> Db:
    """A connection for reading ``target`` (the schema is central's, made at start)."""
    return ReadOnlySqliteDb(target) if isinstance(target, Path) else PostgresDb(target)


class ReadViews:
    """Runs query functions off the event loop, each on a reader (:func:`open_reader`)."""

    def __init__(self, target: Target, workers: int = READ_WORKERS) -> None:
        self.target = target
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="api-read")
        #: PostgreSQL connections between queries (at most ``workers``: one per thread).
        self._idle: queue.SimpleQueue[Db] = queue.SimpleQueue()

    async def run(self, query: Callable[[Db], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run, query)

    def _run(self, query: Callable[[Db], T]) -> T:
        if isinstance(self.target, Path):
            db = open_reader(self.target)
            try:
                return query(db)
            finally:
                db.close()
        try:
            db = self._idle.get_nowait()
            kept = True
        except queue.Empty:
            db = open_reader(self.target)
            kept = False
        try:
            result = query(db)
        except BaseException:
            lost = kept and _lost(db)
            db.close()  # it may be broken or inside a failed transaction
            if not lost:
                raise
            # A kept connection the server ended meanwhile (a restart, an administrator):
            # reads have no effects, so the query runs again once on a new connection.
            db = open_reader(self.target)
            try:
                result = query(db)
            except BaseException:
                db.close()
                raise
        self._idle.put(db)
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def _lost(db: Db) -> bool:
    """Whether ``db``'s PostgreSQL connection is gone (its server ended it, or the link)."""
    return isinstance(db, PostgresDb) and db.conn.broken


def records(cur: Cursor) -> list[dict[str, Any]]:
    """The rows of ``cur`` as dicts by column name (rows are tuples on both backends)."""
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def record(cur: Cursor) -> dict[str, Any] | None:
    """The first row of ``cur`` as a dict by column name, or None."""
    row = cur.fetchone()
    return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _node(row: dict[str, Any]) -> dict[str, Any]:
    d = dict(row)
    d["last_health"] = _json(d["last_health"])
    return d


def _event(row: dict[str, Any]) -> dict[str, Any]:
    d = dict(row)
    d["data"] = _json(d["data"])
    return d


#: One condition of a WHERE clause with its parameters; None means "no condition".
Cond = tuple[str, tuple[Any, ...]] | None


def where(*conds: Cond) -> tuple[str, list[Any]]:
    """``(" WHERE a AND b", args)`` for the given conditions, or ``("", [])`` for none."""
    used = [c for c in conds if c is not None]
    args = [a for _, values in used for a in values]
    return (" WHERE " + " AND ".join(sql for sql, _ in used)) if used else "", args


def eq(column: str, value: object) -> Cond:
    return None if value is None else (f"{column} = ?", (value,))


def under(column: str, code: str | None) -> Cond:
    """Village codes under ``code`` (any division-code prefix: a user's scope, a county, a
    township): a range on the indexed 12-digit column instead of substr(), so the index serves
    it. "" or None: no condition."""
    if not code:
        return None
    pad = 12 - len(code)
    return f"{column} BETWEEN ? AND ?", (code + "0" * pad, code + "9" * pad)


def _node_where(f: NodeFilter) -> tuple[str, list[Any]]:
    return where(
        eq("village", f.village),
        under("village", f.township),
        eq("county", f.county),
        eq("state", f.state),
        under("village", f.scope),
        None if f.seen_before is None else ("last_seen < ?", (f.seen_before,)),
    )


def list_nodes(db: Db, f: NodeFilter, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, one page in node id order)."""
    sql_where, args = _node_where(f)
    with db.transaction(write=False):  # the count and the page from one state
        total = count(db, f"SELECT count(*) FROM nodes{sql_where}", args)
        rows = records(
            db.execute(
                f"SELECT {_NODE_COLUMNS} FROM nodes{sql_where} ORDER BY node_id LIMIT ? OFFSET ?",
                [*args, limit, offset],
            )
        )
    return total, [_node(r) for r in rows]


def count(db: Db, sql: str, args: list[Any] | tuple[Any, ...] = ()) -> int:
    row = db.fetchone(sql, args)
    assert row is not None  # an aggregate has one row
    return int(row[0])


def node_exists(db: Db, node_id: str) -> bool:
    return db.fetchone("SELECT 1 FROM nodes WHERE node_id = ?", (node_id,)) is not None


def village_nodes(db: Db, village: str) -> list[dict[str, Any]]:
    return records(
        db.execute(
            "SELECT node_id, state, state_since, state_reason, last_seen FROM nodes "
            "WHERE village = ? ORDER BY node_id",
            (village,),
        )
    )


def node_detail(db: Db, node_id: str) -> dict[str, Any] | None:
    """The node's row with its recent health, events, devices, state history and open gaps;
    None if central has never seen it. One read transaction: one state of the database."""
    with db.transaction(write=False):
        row = record(db.execute(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE node_id = ?", (node_id,)))
        if row is None:
            return None
        detail = _node(row)
        detail["health"] = [
            {"ts": r["ts"], "recv_ts": r["recv_ts"], **json.loads(r["body"])}
            for r in records(
                db.execute(
                    "SELECT ts, recv_ts, body FROM health WHERE node_id = ? ORDER BY ts DESC"
                    " LIMIT ?",
                    (node_id, DETAIL_HEALTH_ROWS),
                )
            )
        ]
        detail["events"] = _in_node_order(
            records(
                db.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE node_id = ? ORDER BY id DESC"
                    " LIMIT ?",
                    (node_id, DETAIL_EVENT_ROWS),
                )
            )
        )
        detail["devices"] = [
            {**r, "detail": _json(r["detail"]), "removed": bool(r["removed"])}
            for r in records(
                db.execute(
                    "SELECT device_id, kind, state, name, ts, detail, removed FROM devices "
                    "WHERE node_id = ? ORDER BY device_id",
                    (node_id,),
                )
            )
        ]
        # "end" is a reserved word in PostgreSQL
        detail["state_history"] = records(
            db.execute(
                'SELECT state, start, "end", reason FROM state_history WHERE node_id = ? '
                "ORDER BY start DESC, id DESC LIMIT ?",
                (node_id, DETAIL_HISTORY_ROWS),
            )
        )
        detail["gaps"] = records(
            db.execute(
                "SELECT boot_id, first_seq, last_seq, detected FROM gaps WHERE node_id = ? "
                "ORDER BY detected, first_seq LIMIT ?",
                (node_id, DETAIL_GAP_ROWS),
            )
        )
        return detail


def _in_node_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One node's events newest first in the node's own order: the boot central stored last
    first, then by ``seq``, not by ``ts``: a node's clock can be stepped (``clock_off_s``), its
    sequence cannot. ``rows`` are the node's newest stored events (by ``id``)."""
    boot_rank: dict[str, int] = {}
    for r in rows:  # by id, newest first: a boot's rank is its newest stored event
        boot_rank.setdefault(r["boot_id"], -len(boot_rank))
    rows = sorted(rows, key=lambda r: (boot_rank[r["boot_id"]], r["seq"]), reverse=True)
    return [_event(r) for r in rows]


def list_events(db: Db, f: EventFilter, limit: int) -> list[dict[str, Any]]:
    """Events newest first by event time (ties: newest received first); one node's events
    (``node`` given, no ``since``) newest first in the node's own order (:func:`_in_node_order`)."""
    if f.node is not None and f.since is None:
        sql_where, args = where(
            eq("node_id", f.node),
            eq("village", f.village),
            under("village", f.county),
            eq("priority", f.priority),
            under("village", f.scope),
        )
        return _in_node_order(
            records(
                db.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM events{sql_where} ORDER BY id DESC LIMIT ?",
                    [*args, limit],
                )
            )
        )
    sql_where, args = where(
        eq("node_id", f.node),
        eq("village", f.village),
        under("village", f.county),
        eq("priority", f.priority),
        None if f.since is None else ("ts >= ?", (f.since,)),
        under("village", f.scope),
    )
    rows = records(
        db.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events{sql_where} ORDER BY ts DESC, id DESC LIMIT ?",
            [*args, limit],
        )
    )
    return [_event(r) for r in rows]
