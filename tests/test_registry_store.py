"""The village registry in central's database, on both backends: import, re-import, a narrower
scope, a failed import leaving the old registry, node bindings kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from central.cli import app as central_app
from central.db import Db, Target, open_db
from central.registry_store import import_edition, import_registry, load, village
from registry import Registry, RegistryError, Unit


@pytest.fixture
def db(db_target: Target) -> Db:
    return open_db(db_target)


def test_import_and_load_round_trip(db: Db) -> None:
    assert load(db) is None
    assert village(db, "450102001003") is False  # nothing imported yet
    assert import_registry(db, "4501") == 1856
    loaded = load(db)
    assert loaded is not None
    packaged = Registry.from_package("4501")
    assert loaded.scope == "4501"
    assert loaded.root() == packaged.root()
    assert list(loaded.villages()) == list(packaged.villages())
    assert db.fetchone("SELECT count(*), min(level), max(level) FROM units") == (2007, 2, 5)
    assert village(db, "450102001003") == Unit("450102001003", "兴宁社区居委会", 5, "450102001")
    assert village(db, "450102999999") is None
    # A narrower scope replaces the old one entirely.
    assert import_registry(db, "450102") == sum(
        1 for _ in Registry.from_package("450102").villages()
    )
    again = load(db)
    assert again is not None and again.scope == "450102" and again.unit("4501") is None
    assert db.fetchone("SELECT count(*) FROM units WHERE substr(code, 1, 6) <> '450102'") == (0,)


def test_reimport_changes_nothing(db: Db) -> None:
    import_registry(db, "4501")
    before = db.fetchall("SELECT code, name, level, parent, retired FROM units ORDER BY code")
    report = import_edition(db, "4501")
    assert (report.added, report.renamed, report.retired) == (0, 0, [])
    assert report.villages == 1856
    assert db.fetchall("SELECT code, name, level, parent, retired FROM units ORDER BY code") == (
        before
    )


def test_a_failed_import_leaves_the_old_registry(db: Db) -> None:
    import_registry(db, "450102")
    before = db.fetchall("SELECT code, name, retired FROM units ORDER BY code")

    def fail(done: int, total: int) -> None:
        raise OSError("disk gone mid-import")

    with pytest.raises(OSError):
        import_edition(db, "4501", progress=fail)
    assert db.fetchall("SELECT code, name, retired FROM units ORDER BY code") == before
    reg = load(db)
    assert reg is not None and reg.scope == "450102"
    with pytest.raises(RegistryError):
        import_edition(db, "4599")  # no such city: refused before any write
    assert db.fetchall("SELECT code, name, retired FROM units ORDER BY code") == before
    import_registry(db, "4501")  # the connection is usable afterwards
    assert db.fetchone("SELECT value FROM registry_meta WHERE key = 'scope'") == ("4501",)


def test_node_bindings_are_kept(db: Db) -> None:
    import_registry(db, "4501")
    db.execute(
        "INSERT INTO nodes(node_id, village, county, state, state_since, state_reason, "
        "birth_seq, health_interval_s, sw_version, first_seen, last_seen) "
        "VALUES ('450102001003-a', '450102001003', '450102', 'online', 1, '', 1, 30, '1', 1, 1)"
    )
    import_registry(db, "450102")
    assert db.fetchall("SELECT node_id, village FROM nodes") == [("450102001003-a", "450102001003")]


def test_import_registry_command_reaches_the_configured_database(
    tmp_path: Path, db_target: Target
) -> None:
    store = f'path = "{db_target}"' if isinstance(db_target, Path) else f'url = "{db_target}"'
    (tmp_path / "central.toml").write_text(f"[store]\n{store}\n", encoding="utf-8")
    r = CliRunner().invoke(
        central_app,
        ["import-registry", "--config", str(tmp_path / "central.toml"), "--scope", "450102"],
    )
    assert r.exit_code == 0, r.output
    db = open_db(db_target)
    try:
        reg = load(db)
        assert reg is not None and reg.scope == "450102"
    finally:
        db.close()
