"""Central's database behind one small :class:`Db` protocol, on SQLite (the embedded default,
WAL) or PostgreSQL (psycopg 3), so that every module writes its SQL once.

The SQL a module writes:

- ``?`` placeholders; on PostgreSQL they become ``%s`` (a ``?`` or ``%`` inside a quoted literal
  is left as written);
- the portable forms: ``INSERT ... ON CONFLICT (...) DO NOTHING / DO UPDATE`` (SQLite ≥ 3.24)
  rather than ``INSERT OR IGNORE/REPLACE``, ``RETURNING`` (SQLite ≥ 3.35), no ``rowid``, no date
  functions (times are REAL seconds computed in Python), booleans stored as 0/1 integers, and
  ``"user"`` quoted where a column has that name (a reserved word on PostgreSQL).

Rows are plain tuples on both backends.

Transactions: outside :meth:`Db.transaction` each statement commits on its own. Inside
``transaction(write=True)`` the writers of the whole database take turns, on both backends:
SQLite's ``BEGIN IMMEDIATE`` takes the file's write lock at once (waiting up to
:data:`central.store.BUSY_TIMEOUT_MS`); on PostgreSQL the transaction takes the advisory lock
:data:`WRITE_LOCK_KEY` first. So a read-then-write in one write transaction sees no other writer
between its read and its write, as it would on SQLite, and code written for one backend is
correct on the other. (The ingest store, :mod:`central.store_pg`, has its own connection and
never takes that lock: its writes are upserts that need no turn.)

Inside ``transaction(write=False)`` every statement sees one snapshot of the database (SQLite's
deferred transaction; PostgreSQL ``REPEATABLE READ READ ONLY``, where a write is an error).

Durability: a transaction is durable when :meth:`Db.transaction` returns (SQLite
``synchronous=FULL``; PostgreSQL's COMMIT waits for the WAL flush). An exception inside it rolls
everything back, and the exception propagates.

One :class:`Db` is one connection: use it from one thread at a time (a thread may hand it to
another, as ``asyncio.to_thread`` does).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import psycopg
import psycopg.errors

from central import migrate
from central.migrations import HEAD
from central.store import connect as sqlite_connect

if TYPE_CHECKING:
    from central.config import StoreConfig

#: A database: the SQLite file's path, or a ``postgresql://`` URL.
Target = Path | str

Backend = Literal["sqlite", "postgresql"]

T = TypeVar("T")

#: A unique, primary-key, foreign-key or check violation, on either backend.
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (
    sqlite3.IntegrityError,
    psycopg.errors.IntegrityError,
)

#: What a failing database raises on either backend (a locked or full disk, a lost server).
ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)

#: PostgreSQL advisory lock every write transaction holds until it ends: the writers take turns
#: as SQLite's do ("shilianw" in ASCII). Distinct from :data:`central.migrate.PG_LOCK_KEY`.
WRITE_LOCK_KEY = 0x7368696C69616E77

#: How long opening a PostgreSQL connection may take before start-up fails with its error.
CONNECT_TIMEOUT_S = 10

Row = tuple[Any, ...]


class Cursor(Protocol):
    """What :meth:`Db.execute` returns: the DB-API cursor of either driver."""

    @property
    def rowcount(self) -> int: ...

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Db(Protocol):
    backend: Backend

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...

    def fetchone(self, sql: str, params: Sequence[object] = ()) -> Row | None: ...

    def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...

    def transaction(self, *, write: bool) -> Any: ...

    def load_rows(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
    ) -> None: ...

    def close(self) -> None: ...


class DatabaseUnreachable(Exception):
    """The configured database could not be opened at start: server down, wrong address or
    name, login refused. Its message names the database (without user and password) and the
    server's reason in one line."""

    def __init__(self, t: Target, cause: BaseException) -> None:
        reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()
        super().__init__(
            f"无法连接数据库 / cannot reach the database {shown(t)}: "
            f"{reason[0] if reason else type(cause).__name__}"
        )


def _unreachable_errors() -> tuple[type[BaseException], ...]:
    """What opening a database raises when it cannot be reached (SQLAlchemy wraps the driver's
    error while migrating)."""
    from sqlalchemy.exc import OperationalError

    return (psycopg.OperationalError, OperationalError)


def opening(t: Target, fn: Callable[[], T]) -> T:
    """``fn()``, which opens ``t``; a database that cannot be reached raises
    :class:`DatabaseUnreachable`."""
    try:
        return fn()
    except _unreachable_errors() as e:
        raise DatabaseUnreachable(t, e) from e


def shown(t: Target) -> str:
    """A database for a message: a PostgreSQL URL without its user and password."""
    return str(t) if isinstance(t, Path) else t.split("@")[-1]


def target(store: StoreConfig) -> Target:
    """The database ``[store]`` names: ``url`` if given, else the SQLite ``path``."""
    return store.url if store.url is not None else store.path


def is_postgres(t: Target) -> bool:
    return isinstance(t, str)


def open_db(t: Target, *, upgrade: bool = True) -> Db:
    """A connection to ``t``, the database brought to the newest schema first (a fast check
    when it already is; ``upgrade=False``: no check, for a module that opens a connection per
    request after checking once)."""
    if isinstance(t, Path):
        if upgrade:
            migrate.ensure(t)
        return SqliteDb(t)
    if not t.startswith(migrate.POSTGRES_SCHEMES):
        raise ValueError(f"not a PostgreSQL URL: {t!r}")
    db = PostgresDb(t)
    try:
        if upgrade and _pg_version(db) != HEAD:
            migrate.upgrade(t)
    except BaseException:
        db.close()
        raise
    return db


def _pg_version(db: PostgresDb) -> str | None:
    try:
        row = db.fetchone("SELECT version_num FROM alembic_version")
    except psycopg.errors.UndefinedTable:
        return None
    return None if row is None else str(row[0])


class _Transactions:
    """Explicit transactions on an autocommit connection; nested calls join the outer one."""

    _depth: int

    def _begin(self, write: bool) -> None:
        raise NotImplementedError

    def _end(self, sql: str) -> None:
        """``COMMIT`` or ``ROLLBACK`` on the connection."""
        raise NotImplementedError

    def _rollback(self) -> None:
        self._end("ROLLBACK")

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[None]:
        """One transaction; nested calls join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._begin(write)
        self._depth = 1
        try:
            yield
        except BaseException:
            self._rollback()
            raise
        else:
            self._end("COMMIT")
        finally:
            self._depth = 0


class SqliteDb(_Transactions):
    """The SQLite file through :func:`central.store.connect` (WAL, ``synchronous=FULL``, busy
    timeout), in autocommit mode; transactions are explicit."""

    backend: Backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite_connect(path)
        self._depth = 0

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor:
        return self.conn.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self.conn.executemany(sql, rows)

    def fetchone(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        row: Row | None = self.conn.execute(sql, tuple(params)).fetchone()
        return row

    def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self.conn.execute(sql, tuple(params)).fetchall()

    def _begin(self, write: bool) -> None:
        self.conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def _end(self, sql: str) -> None:
        self.conn.execute(sql)

    def load_rows(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
    ) -> None:
        """Bulk-insert ``rows`` into ``table`` (names from the caller's own code, never input)."""
        marks = ", ".join("?" * len(columns))
        self.conn.executemany(f"INSERT INTO {table}({', '.join(columns)}) VALUES ({marks})", rows)

    def close(self) -> None:
        self.conn.close()


class PostgresDb(_Transactions):
    """One psycopg connection in autocommit mode; transactions are explicit."""

    backend: Backend = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = self._connect()
        self._depth = 0
        self._closed = False

    def _connect(self) -> psycopg.Connection[Row]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)

    def _live(self) -> psycopg.Connection[Row]:
        """The connection; outside a transaction a new one if the server ended the last (a
        restart, an administrator): the statement that met the end failed (nothing is run
        twice), the next one runs."""
        if self.conn.closed and not self._closed and self._depth == 0:
            self.conn = self._connect()
        return self.conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor:
        return self._live().execute(pg_sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        with self._live().cursor() as cur:
            cur.executemany(pg_sql(sql), rows)

    def fetchone(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        return self._live().execute(pg_sql(sql), tuple(params)).fetchone()

    def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self._live().execute(pg_sql(sql), tuple(params)).fetchall()

    def _begin(self, write: bool) -> None:
        # A read transaction sees one snapshot, as SQLite's does (READ COMMITTED would take a
        # new one per statement).
        self._live().execute(
            "BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        )
        if write:
            try:
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
            except BaseException:
                self._rollback()
                raise

    def _end(self, sql: str) -> None:
        if sql == "COMMIT" or not self.conn.closed:
            self.conn.execute(sql)

    def load_rows(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
    ) -> None:
        """Bulk-insert ``rows`` into ``table`` with ``COPY ... FROM STDIN`` (names from the
        caller's own code, never input); several times faster than INSERTs."""
        with (
            self._live().cursor() as cur,
            cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def close(self) -> None:
        self._closed = True
        self.conn.close()


@lru_cache(maxsize=1024)
def pg_sql(sql: str) -> str:
    """``sql`` with its ``?`` placeholders as psycopg's ``%s`` and each literal ``%`` doubled;
    inside quoted literals and identifiers (``'...'``, ``"..."``) a ``?`` stays as written."""
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if ch == "%":
            out.append("%%")
        elif quote is not None:
            out.append(ch)
            if ch == quote:
                quote = None  # a doubled quote closes and reopens: same result
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        else:
            out.append(ch)
    return "".join(out)
