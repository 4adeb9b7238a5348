"""The PostgreSQL store (psycopg 3): :class:`central.store.SqlStore`'s logic on a server database
that ``[store] url`` names, each kind of row of a batch written by one set-based statement
(``INSERT … SELECT FROM unnest(…)``, the same upserts as SQLite's).

Durability: each batch is one transaction; PostgreSQL's COMMIT returns after the WAL is flushed
(``synchronous_commit=on``, the server default), so what central acknowledged to the broker
survives a crash of central or of the database server.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from central import migrate
from central.store import (
    _UPSERT_DEVICE,
    _UPSERT_NODE,
    HEALTH_KEEP_PER_NODE,
    SqlStore,
    Write,
    _device_params,
    _node_params,
)
from central.write_batch import FoldedBatch, interval_rounds

#: How long a connection attempt waits before start-up fails with the server's error.
CONNECT_TIMEOUT_S = 10


class PostgresStore(SqlStore):
    """One connection, autocommit (transactions are the store's explicit BEGIN/COMMIT);
    the database is brought to the newest schema when opened."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        migrate.upgrade(url)
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)

    def close(self) -> None:
        self.conn.close()

    @property
    def lost(self) -> bool:
        """Whether the server ended the connection (a restart, an administrator, the link)."""
        return self.conn.closed

    def reconnect(self) -> None:
        """A new connection in place of a lost one."""
        self.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)

    def stage(self, writes: Sequence[Write]) -> None:
        """As :meth:`SqlStore.stage`, the statements pipelined: sent without waiting for each
        answer, so a batch costs about one round trip to the server rather than one per node.
        A failed statement surfaces when the pipeline ends; the transaction is then rolled
        back and the connection is ready for the next batch."""
        try:
            with self.conn.pipeline():
                super().stage(writes)
        except BaseException:
            if self.conn.info.transaction_status != TransactionStatus.IDLE:
                self.conn.execute("ROLLBACK")
            raise

    def _write(self, batch: FoldedBatch, prune: Sequence[str]) -> None:
        """One statement per kind of row for the whole batch: the rows go to the server as
        one array per column and ``unnest`` turns them back into rows, so the server plans and
        runs each statement once instead of once per row. A node's state intervals, which chain,
        go in rounds of one per node (:func:`central.write_batch.interval_rounds`)."""
        run = self.conn.execute
        if batch.nodes:
            run(_UPSERT_NODES, _columns([_node_params(n) for n in batch.nodes], 13))
        for rnd in interval_rounds(batch.intervals):
            run(_CLOSE_INTERVALS, ([w.node_id for w in rnd], [w.start for w in rnd]))
            run(
                _OPEN_INTERVALS,
                _columns([(w.node_id, w.state, w.start, w.reason) for w in rnd], 4),
            )
        if batch.health:
            run(
                _INSERT_HEALTH,
                _columns([(h.node_id, h.ts, h.recv_ts, h.body) for h in batch.health], 4),
            )
        if batch.gaps:
            run(_DELETE_GAPS, ([g.node_id for g in batch.gaps], [g.boot_id for g in batch.gaps]))
            rows = [(g.node_id, g.boot_id, a, b, d) for g in batch.gaps for a, b, d in g.gaps]
            if rows:
                run(_INSERT_GAPS, _columns(rows, 5))
        if batch.devices:
            run(_UPSERT_DEVICES, _columns([_device_params(d) for d in batch.devices], 8))
        if batch.events:
            run(_INSERT_EVENTS, _columns(batch.events, 10))
        if prune:
            run(_PRUNE_HEALTH, (HEALTH_KEEP_PER_NODE, list(prune)))

    def _sql(self, sql: str) -> str:
        # the hot path's statements hold no literal "?" (nor "%"), only placeholders
        return sql.replace("?", "%s")

    def _exec(self, sql: str, params: Sequence[object] = ()) -> Iterable[tuple[Any, ...]]:
        return self.conn.execute(sql, params or None)

    def _many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(sql, rows)


def _columns(rows: Sequence[Sequence[object]], width: int) -> list[list[object]]:
    """``rows`` as ``width`` column lists: the parameters of an ``unnest`` statement."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(c) for c in zip(*rows, strict=True)]


def _unnest(*types: str) -> str:
    return "SELECT * FROM unnest(" + ", ".join(f"%s::{t}[]" for t in types) + ")"


#: The same upserts as SQLite's, their VALUES replaced by the batch's arrays.
_UPSERT_NODES = _UPSERT_NODE.replace(
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
    _unnest(
        "text", "text", "text", "text", "float8", "text", "text", "int8", "float8", "text",
        "float8", "float8", "text",
    ),
)  # fmt: skip
_UPSERT_DEVICES = _UPSERT_DEVICE.replace(
    "VALUES (?,?,?,?,?,?,?,?)",
    _unnest("text", "text", "text", "text", "text", "float8", "text", "int4"),
)

_CLOSE_INTERVALS = """
UPDATE state_history s SET "end" = u.start FROM unnest(%s::text[], %s::float8[]) AS u(n, start)
WHERE s.node_id = u.n AND s."end" IS NULL
"""
_OPEN_INTERVALS = "INSERT INTO state_history(node_id, state, start, reason) " + _unnest(
    "text", "text", "float8", "text"
)
_INSERT_HEALTH = "INSERT INTO health(node_id, ts, recv_ts, body) " + _unnest(
    "text", "float8", "float8", "text"
)
_DELETE_GAPS = """
DELETE FROM gaps g USING unnest(%s::text[], %s::text[]) AS k(n, b)
WHERE g.node_id = k.n AND g.boot_id = k.b
"""
_INSERT_GAPS = "INSERT INTO gaps(node_id, boot_id, first_seq, last_seq, detected) " + _unnest(
    "text", "text", "int8", "int8", "float8"
)
_INSERT_EVENTS = (
    "INSERT INTO events(node_id, village, boot_id, seq, ts, recv_ts, priority, kind, device,"
    " data) "
    + _unnest("text", "text", "text", "int8", "float8", "float8", "text", "text", "text", "text")
    + " ON CONFLICT(node_id, boot_id, seq) DO NOTHING"
)
#: Each listed node's rows older than its HEALTH_KEEP_PER_NODE newest (the health_node index).
_PRUNE_HEALTH = """
DELETE FROM health h USING (
  SELECT k.n, (SELECT id FROM health WHERE node_id = k.n ORDER BY id DESC LIMIT 1 OFFSET %s)
    AS cut
  FROM unnest(%s::text[]) AS k(n)) c
WHERE h.node_id = c.n AND h.id <= c.cut
"""
