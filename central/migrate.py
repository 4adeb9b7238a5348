"""Bring central's database to the newest schema (Alembic, migrations in ``central/migrations``).

Central runs :func:`upgrade` at start, before any route or ingest; ``shilian central migrate``
shows or runs the same. A database made before versioned migrations (tables, no
``alembic_version``) is adopted by the first migration with all its rows (docs/storage.md).

An upgrade is one transaction (DDL is transactional on both backends; on SQLite the driver's
own transaction handling is bypassed so that it is): a failure leaves the database as it was.
Two processes upgrading at once are serialised (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an
advisory lock); the second finds the work done.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from central.migrations import HEAD

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection, Engine

#: Where the migrations live: inside the package, so an installed wheel carries them.
SCRIPT_LOCATION = "central:migrations"
#: The URL schemes of PostgreSQL in ``[store] url``.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: PostgreSQL advisory lock key held while upgrading ("shilian" in ASCII, as a bigint).
PG_LOCK_KEY = 0x7368696C69616E


@dataclass(frozen=True, slots=True)
class Status:
    current: str | None  # None: no version (an empty database, or one from before migrations)
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def sqlalchemy_url(target: str | Path) -> str:
    """A SQLite file path, or a ``postgresql://`` URL, as SQLAlchemy's URL (psycopg 3)."""
    if isinstance(target, Path):
        return f"sqlite:///{target}"
    for scheme in POSTGRES_SCHEMES:
        if target.startswith(scheme):
            return "postgresql+psycopg://" + target.removeprefix(scheme)
    raise ValueError(f"not a PostgreSQL URL: {target!r}")


#: How long a new connection keeps asking for WAL mode while another holds the file's lock.
WAL_WAIT_S = 5.0


def _wal(conn: sqlite3.Connection) -> None:
    """WAL mode on; switching needs the file to itself, and SQLite answers "database is
    locked" at once, without its busy wait, while another connection (a second upgrader on a
    new file) holds a lock: asked again until the wait is over."""
    deadline = time.monotonic() + WAL_WAIT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def engine(target: str | Path, *, upgrading: bool = False) -> Engine:
    """An engine for one short job (no pool kept: central's stores hold their own connections);
    ``upgrading``: its transactions take SQLite's write lock at once."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    eng = create_engine(sqlalchemy_url(target), poolclass=NullPool)
    if isinstance(target, Path):

        @event.listens_for(eng, "connect")
        def _pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            # sqlite3 would commit before each DDL statement: take the transactions over
            dbapi_conn.isolation_level = None
            # the same busy wait as the stores: central may be running on the file
            dbapi_conn.execute("PRAGMA busy_timeout=5000")
            _wal(dbapi_conn)

        @event.listens_for(eng, "begin")
        def _begin(conn: Connection) -> None:
            # the write lock first when upgrading: one upgrader at a time
            conn.exec_driver_sql("BEGIN IMMEDIATE" if upgrading else "BEGIN")

    return eng


@cache
def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    return cfg


@cache
def head() -> str:
    """The newest revision, read from the migration scripts."""
    from alembic.script import ScriptDirectory

    rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert rev is not None  # the package ships at least the first migration
    return rev


def status(target: str | Path) -> Status:
    from alembic.runtime.migration import MigrationContext

    with engine(target).connect() as conn:
        return Status(MigrationContext.configure(conn).get_current_revision(), head())


def upgrade(target: str | Path, revision: str = "head") -> Status:
    """Run every migration the database lacks, up to ``revision``; returns the new status."""
    from alembic import command

    eng = engine(target, upgrading=True)
    try:
        with eng.begin() as conn:
            if not isinstance(target, Path):
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK_KEY})")
            cfg = _config()
            cfg.attributes["connection"] = conn
            try:
                command.upgrade(cfg, revision)
            finally:
                del cfg.attributes["connection"]
        return status(target)
    finally:
        eng.dispose()


def ensure(path: Path) -> str:
    """Upgrade the SQLite file at ``path`` unless it is at the newest version already; returns
    the version. At the newest version this is one read, without loading Alembic or SQLAlchemy
    (each store opening the file calls it; central's start and the command-line tools too)."""
    conn = sqlite3.connect(path, timeout=5.0)
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:  # no version table: a new file, or one from before
        row = None
    finally:
        conn.close()
    if row is not None and row[0] == HEAD:
        return HEAD
    current = upgrade(path).current
    assert current is not None
    return current
