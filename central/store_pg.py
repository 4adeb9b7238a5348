"""The PostgreSQL store (psycopg 3): the same :class:`central.store.SqlStore` logic and SQL as
SQLite's, on a server database that ``[store] url`` names.

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
from central.store import SqlStore, Write

#: How long a connection attempt waits before start-up fails with the server's error.
CONNECT_TIMEOUT_S = 10


class PostgresStore(SqlStore):
    """One connection, autocommit (transactions are the store's explicit BEGIN/COMMIT);
    the database is brought to the newest schema when opened."""

    def __init__(self, url: str) -> None:
        self.url = url
        migrate.upgrade(url)
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)

    def close(self) -> None:
        self.conn.close()

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

    def _sql(self, sql: str) -> str:
        # the hot path's statements hold no literal "?" (nor "%"), only placeholders
        return sql.replace("?", "%s")

    def _exec(self, sql: str, params: Sequence[object] = ()) -> Iterable[tuple[Any, ...]]:
        return self.conn.execute(sql, params or None)

    def _many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(sql, rows)
