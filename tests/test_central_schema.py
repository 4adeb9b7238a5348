"""Central's schema and migrations on both backends (a SQLite file; a real PostgreSQL database
per test): a migrated database equals central.schema, an old database is adopted with its rows,
and the migrate command on either backend."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from typer.testing import CliRunner

from central import migrate, migrations
from central.cli import app as central_cli
from central.coverage import CoverageIndex
from central.ingest import Ingest
from central.liveness import Liveness
from central.schema import metadata
from central.store import SqliteStore
from central.store_pg import PostgresStore
from registry import Registry
from tests.postgres import scratch_database
from tests.test_central_ingest import BOOT, NODE, VILLAGE, event, state

#: Central's database as the release before versioned migrations left it (every module's DDL).
LEGACY_DDL = (Path(__file__).parent / "legacy_central.sql").read_text(encoding="utf-8")
NANNING = Registry.from_package("4501")


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | Path]:
    if request.param == "sqlite":
        yield tmp_path / "c.db"
    else:
        with scratch_database() as url:
            yield url


def differences(target: str | Path) -> list[object]:
    eng = migrate.engine(target)
    try:
        with eng.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))
    finally:
        eng.dispose()


def adopted_differences(db: Path) -> list[object]:
    """As :func:`differences`, less one that is not one: SQLite reflects a PRIMARY KEY declared
    without NOT NULL (the old DDL) as nullable, though an INTEGER PRIMARY KEY is the rowid and
    central never writes a NULL key. Rebuilding every table (events: millions of rows) to
    restate it is not worth a first start's downtime."""
    keys = {(t.name, c.name) for t in metadata.tables.values() for c in t.primary_key}
    rest: list[object] = []
    for diff in differences(db):
        if isinstance(diff, list) and all(
            d[0] == "modify_nullable" and (d[2], d[3]) in keys for d in diff
        ):
            continue
        rest.append(diff)
    return rest


def test_the_head_constant_is_the_newest_script() -> None:
    assert migrate.head() == migrations.HEAD


def test_a_migrated_database_equals_the_schema(target: str | Path) -> None:
    assert migrate.status(target).current is None
    status = migrate.upgrade(target)
    assert status.current == migrate.head() and status.up_to_date
    assert differences(target) == []
    assert migrate.upgrade(target) == status  # again: nothing to do


def _execute(target: str | Path, sql: str) -> None:
    if isinstance(target, Path):
        with sqlite3.connect(target) as c:
            c.execute(sql)
    else:
        with psycopg.connect(target, autocommit=True) as c:
            c.execute(sql)


def test_a_failed_upgrade_changes_nothing(target: str | Path) -> None:
    """A name taken by something not a table: the upgrade fails part-way and is rolled back."""
    _execute(target, "CREATE VIEW enrol_tokens AS SELECT 1 AS x")
    with pytest.raises(sqlalchemy.exc.DatabaseError):
        migrate.upgrade(target)
    assert migrate.status(target).current is None
    eng = migrate.engine(target)
    try:
        with eng.connect() as conn:
            assert sqlalchemy.inspect(conn).get_table_names() == []
    finally:
        eng.dispose()


def test_two_upgraders_at_once_both_succeed(target: str | Path) -> None:
    """Two processes starting on one new database (central and a tool): one waits. On SQLite
    the race is over a new file's switch to WAL, lost about one time in three: ten files."""
    targets = (
        [target] if isinstance(target, str) else [target.with_suffix(f".{i}.db") for i in range(10)]
    )
    for t in targets:
        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(migrate.upgrade, [t, t]))
        assert all(s.up_to_date for s in done)
        assert differences(t) == []


def _legacy(path: Path, ddl: str) -> None:
    with sqlite3.connect(path) as c:
        c.executescript(ddl)


def _fill(path: Path) -> None:
    with sqlite3.connect(path) as c:
        c.execute(
            "INSERT INTO nodes VALUES (?,?,?,'online',100.0,'connect','b1',3,30.0,'0.9',50.0,"
            "120.0,'{}')",
            (NODE, VILLAGE, VILLAGE[:6]),
        )
        c.execute("INSERT INTO state_history(node_id, state, start, reason) VALUES (?,?,?,?)",
                  (NODE, "online", 100.0, "connect"))  # fmt: skip
        c.executemany(
            "INSERT INTO events(node_id, village, boot_id, seq, ts, recv_ts, priority, kind,"
            " device, data) VALUES (?,?,'b1',?,?,?,?,'k',NULL,'{}')",
            [(NODE, VILLAGE, seq, 100.0 + seq, 100.0 + seq, "info") for seq in (1, 2, 5)],
        )
        c.execute("INSERT INTO gaps VALUES (?, 'b1', 3, 4, 105.0)", (NODE,))


def test_an_old_database_is_adopted_with_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    _legacy(db, LEGACY_DDL)
    _fill(db)
    with sqlite3.connect(db) as c:
        c.execute(
            "INSERT INTO users VALUES ('admin','admin','', 'h', 0, 1.0, 1.0)"
        )  # fmt: skip
        c.execute("INSERT INTO alarm_acks VALUES (1, 'admin', 2.0, 'done')")
        c.execute("INSERT INTO enrol_tokens VALUES ('t', ?, 1.0, 2.0, NULL, NULL, 1.5)", (NODE,))
    assert migrate.status(db).current is None

    assert migrate.upgrade(db).up_to_date
    assert adopted_differences(db) == []
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM events").fetchone()[0] == 3
        assert c.execute("SELECT name, role FROM users").fetchall() == [("admin", "admin")]
        assert c.execute("SELECT note FROM alarm_acks").fetchall() == [("done",)]
        assert c.execute("SELECT revoked_at FROM enrol_tokens").fetchall() == [(1.5,)]
    # ingest carries on where the old release stopped: dedupe state and the open gap
    store = SqliteStore(db)
    snap = store.load()
    assert snap.nodes[NODE].birth_seq == 3
    assert snap.seqs[(NODE, "b1")].high == 5
    assert snap.seqs[(NODE, "b1")].gaps == [(3, 4, 105.0)]
    store.close()


def test_an_old_database_with_some_tables_gets_the_rest(tmp_path: Path) -> None:
    """Only the store's tables (no route had started), and a registry from before editions."""
    store_ddl = LEGACY_DDL.split("-- central/accounts.py")[0]
    db = tmp_path / "old.db"
    _legacy(
        db,
        store_ddl + "CREATE TABLE units(code TEXT PRIMARY KEY, name TEXT NOT NULL,"
        " level INTEGER NOT NULL, parent TEXT);"
        "INSERT INTO units VALUES ('450102001003', '某村', 5, '450102001');",
    )
    _fill(db)
    assert migrate.upgrade(db).up_to_date
    assert adopted_differences(db) == []
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM events").fetchone()[0] == 3
        assert c.execute("SELECT code, retired FROM units").fetchall() == [("450102001003", 0)]
        assert c.execute("SELECT count(*) FROM alarm_acks").fetchone()[0] == 0


def test_coverage_is_rebuilt_from_the_postgresql_store(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    ing = Ingest(store.load(), NANNING.knows_village, Liveness())
    for topic, payload in (state(), event(1), event(2)):
        ing.handle(topic, payload, 100.0)
    store.apply(ing.take()[0])
    store.close()

    store = PostgresStore(pg_url)  # central restarted
    snap = store.load()
    store.close()
    coverage = CoverageIndex(NANNING)
    for n in snap.nodes.values():
        coverage.set_node(n.node_id, n.state == "online")
    county = coverage.summary(VILLAGE[:6])
    assert (county.covered, county.provisioned) == (1, 1)
    assert snap.seqs[(NODE, BOOT)].high == 2


def test_migrate_command_shows_and_upgrades(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    r = CliRunner().invoke(central_cli, ["migrate", "--db", str(db), "--status"])
    assert r.exit_code == 0, r.output
    assert "current: 无 / none" in r.output
    assert f"head: {migrate.head()}" in r.output
    r = CliRunner().invoke(central_cli, ["migrate", "--db", str(db)])
    assert r.exit_code == 0, r.output
    assert f"upgraded to: {migrate.head()}" in r.output
    r = CliRunner().invoke(central_cli, ["migrate", "--db", str(db), "--status"])
    assert "up to date" in r.output


def test_migrate_command_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    cfg = tmp_path / "central.toml"
    cfg.write_text(f'[store]\nurl = "{pg_url}"\n', encoding="utf-8")
    r = CliRunner().invoke(central_cli, ["migrate", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert f"upgraded to: {migrate.head()}" in r.output
    assert migrate.status(pg_url).up_to_date
