"""central/db.py on both backends: placeholders, transactions, integrity errors, writers taking
turns."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from central.config import StoreConfig
from central.db import INTEGRITY_ERRORS, Db, Target, open_db, pg_sql, target


@pytest.fixture
def db(db_target: Target) -> Db:
    d = open_db(db_target)
    d.execute("CREATE TABLE t_kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    return d


def test_open_db_brings_the_schema(db_target: Target) -> None:
    db = open_db(db_target)
    try:
        assert db.backend == ("sqlite" if isinstance(db_target, Path) else "postgresql")
        assert db.fetchone("SELECT count(*) FROM units") == (0,)
    finally:
        db.close()
    open_db(db_target).close()  # a second open finds the schema current


def test_target_from_store_config(tmp_path: Path) -> None:
    assert target(StoreConfig(path=tmp_path / "c.db")) == tmp_path / "c.db"
    url = "postgresql://shilian@db/shilian"
    assert target(StoreConfig(path=tmp_path / "c.db", url=url)) == url


def test_pg_sql_rewrites_placeholders_outside_literals() -> None:
    assert pg_sql("SELECT ? , '?' , \"a?\" WHERE x LIKE 'a%' AND y = ?") == (
        "SELECT %s , '?' , \"a?\" WHERE x LIKE 'a%%' AND y = %s"
    )
    assert pg_sql("SELECT 'it''s ?', ?") == "SELECT 'it''s ?', %s"


def test_placeholders_and_literals(db: Db) -> None:
    db.execute("INSERT INTO t_kv(k, v) VALUES (?, ?)", ("a%b", 1))
    db.executemany("INSERT INTO t_kv(k, v) VALUES (?, ?)", [("x?", 2), ("y", 3)])
    assert db.fetchone("SELECT v FROM t_kv WHERE k = ?", ("a%b",)) == (1,)
    assert db.fetchall("SELECT k FROM t_kv WHERE k LIKE 'x%' OR k = ? ORDER BY k", ("y",)) == [
        ("x?",),
        ("y",),
    ]
    assert db.fetchone("SELECT '50% ?', ?", ("p",)) == ("50% ?", "p")
    cur = db.execute("UPDATE t_kv SET v = v + 10 WHERE v >= ?", (2,))
    assert cur.rowcount == 2


def test_upsert_and_returning(db: Db) -> None:
    sql = (
        "INSERT INTO t_kv(k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = t_kv.v + "
        "excluded.v RETURNING v"
    )
    assert db.fetchone(sql, ("a", 1)) == (1,)
    assert db.fetchone(sql, ("a", 5)) == (6,)
    db.execute("INSERT INTO t_kv(k, v) VALUES (?, ?) ON CONFLICT DO NOTHING", ("a", 100))
    assert db.fetchall("SELECT k, v FROM t_kv") == [("a", 6)]


def test_a_failed_transaction_rolls_back_everything(db: Db) -> None:
    db.execute("INSERT INTO t_kv(k, v) VALUES ('keep', 1)")
    with pytest.raises(RuntimeError), db.transaction(write=True):
        db.execute("INSERT INTO t_kv(k, v) VALUES ('gone', 2)")
        db.execute("UPDATE t_kv SET v = 99 WHERE k = 'keep'")
        raise RuntimeError("boom")
    assert db.fetchall("SELECT k, v FROM t_kv") == [("keep", 1)]
    with db.transaction(write=True):  # the connection is usable afterwards
        db.execute("INSERT INTO t_kv(k, v) VALUES ('next', 3)")
    assert db.fetchone("SELECT count(*) FROM t_kv") == (2,)


def test_nested_transactions_join_the_outer_one(db: Db) -> None:
    with pytest.raises(RuntimeError), db.transaction(write=True):
        with db.transaction(write=True):
            db.execute("INSERT INTO t_kv(k, v) VALUES ('inner', 1)")
        raise RuntimeError("outer fails after the inner block ended")
    assert db.fetchone("SELECT count(*) FROM t_kv") == (0,)


def test_integrity_errors_are_caught_on_both_backends(db: Db) -> None:
    db.execute("INSERT INTO t_kv(k, v) VALUES ('a', 1)")
    with pytest.raises(INTEGRITY_ERRORS):
        db.execute("INSERT INTO t_kv(k, v) VALUES ('a', 2)")
    with pytest.raises(INTEGRITY_ERRORS), db.transaction(write=True):
        db.execute("INSERT INTO t_kv(k, v) VALUES ('b', 1)")
        db.execute("INSERT INTO t_kv(k, v) VALUES ('b', 2)")
    assert db.fetchall("SELECT k, v FROM t_kv") == [("a", 1)]
    with pytest.raises(INTEGRITY_ERRORS):
        db.execute("INSERT INTO t_kv(k, v) VALUES ('c', NULL)")


WRITERS = 4
ROUNDS = 15


def test_concurrent_writers_take_turns(db: Db, db_target: Target) -> None:
    """Read, wait, write back: without the writers taking turns, updates are lost."""
    db.execute("INSERT INTO t_kv(k, v) VALUES ('n', 0)")
    errors: list[BaseException] = []

    def writer() -> None:
        d = open_db(db_target)
        try:
            for _ in range(ROUNDS):
                with d.transaction(write=True):
                    row = d.fetchone("SELECT v FROM t_kv WHERE k = 'n'")
                    assert row is not None
                    time.sleep(0.002)  # another writer would slip in here
                    d.execute("UPDATE t_kv SET v = ? WHERE k = 'n'", (row[0] + 1,))
        except BaseException as e:  # reported by the main thread
            errors.append(e)
        finally:
            d.close()

    threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert db.fetchone("SELECT v FROM t_kv WHERE k = 'n'") == (WRITERS * ROUNDS,)


def test_a_read_transaction_sees_one_snapshot(db: Db, db_target: Target) -> None:
    other = open_db(db_target)
    try:
        with db.transaction(write=False):
            assert db.fetchone("SELECT count(*) FROM t_kv") == (0,)
            other.execute("INSERT INTO t_kv(k, v) VALUES ('a', 1)")  # commits at once
            assert db.fetchone("SELECT count(*) FROM t_kv") == (0,)
        assert db.fetchone("SELECT count(*) FROM t_kv") == (1,)
    finally:
        other.close()
