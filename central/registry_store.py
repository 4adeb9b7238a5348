"""The village registry in central's database (SQLite or PostgreSQL, :mod:`central.db`): the
imported scope's units in table ``units``, the scope itself in ``registry_meta``.

An import (:func:`import_edition`) is one write transaction: the edition's units are bulk-loaded
into a temporary staging table (``COPY FROM STDIN`` on PostgreSQL, one ``executemany`` on
SQLite), then merged into ``units`` with a few set-based statements. A power cut or an error
leaves either the old registry or the new one, never a mix.

Merging an edition: names, levels and parents are updated where they changed (unchanged rows
are not rewritten, so a re-import writes almost nothing); new codes are added; a village of the
scope that the edition no longer has is *retired* (kept with ``retired = 1`` and its last name,
so a node bound to it is still known and flagged, never dropped); other units the edition lacks
are removed, as are retired villages outside a narrower new scope. Node bindings (``nodes``)
are never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from central.db import Db
from registry import VILLAGE_LEVEL, ImportReport, Registry, Unit

#: Rows loaded per progress report during an import (~0.1 s of work each).
IMPORT_CHUNK = 50_000

#: PostgreSQL's memory for the merge's hash joins, for this transaction only.
PG_WORK_MEM = "256MB"

#: The staging table (temporary: private to the importing connection, gone when it ends).
STAGING = "units_import"
#: The staged rows that differ from ``units`` (temporary too).
DIFF = "units_diff"


def load(db: Db) -> Registry | None:
    """The registry imported into ``db``, or None when none was imported."""
    row = db.fetchone("SELECT value FROM registry_meta WHERE key = 'scope'")
    if row is None:
        return None
    scope = str(row[0])
    # ORDER BY level, code: every parent before its children.
    rows = db.fetchall(
        "SELECT code, name, parent FROM units WHERE retired = 0 ORDER BY level, code"
    )
    retired = db.fetchall(
        "SELECT code, name FROM units WHERE retired = 1 AND level = ?", (VILLAGE_LEVEL,)
    )
    return Registry(
        scope, ((str(c), str(n), p) for c, n, p in rows), {str(c): str(n) for c, n in retired}
    )


def import_edition(
    db: Db,
    scope: str,
    data_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Make ``scope`` of an edition (the packaged one, or ``data_dir``) the registry in ``db``,
    in one transaction (module docstring). ``progress(done, total)`` is called as the edition's
    units are loaded."""
    registry = Registry.from_package(scope, data_dir)  # refuses a bad scope before any write
    villages = registry.village_count()
    pg = db.backend == "postgresql"
    if not pg:
        # SQLite keeps temporary tables in a file by default: the staging table in memory
        # (~60 MB for the whole country) for this connection, before the transaction begins.
        db.execute("PRAGMA temp_store = MEMORY")
    with db.transaction(write=True):
        if pg:
            # The comparison joins whole tables: hash them in memory rather than in batches on
            # disk (the server's default work_mem is 4 MB; the country's units are ~60 MB).
            db.execute(f"SET LOCAL work_mem = '{PG_WORK_MEM}'")
        for table in (DIFF, STAGING):
            db.execute(f"DROP TABLE IF EXISTS {table}")
        # SQLite looks codes up in the staging table by its key; PostgreSQL hashes it whole,
        # and a key would only slow the COPY down.
        db.execute(
            f"CREATE TEMPORARY TABLE {STAGING} (code TEXT {'' if pg else 'PRIMARY KEY'}, "
            "name TEXT NOT NULL, level INTEGER NOT NULL, parent TEXT)"
        )
        db.load_rows(STAGING, ("code", "name", "level", "parent"), _counted(registry, progress))
        if db.fetchone("SELECT 1 FROM units LIMIT 1") is None:  # the first import: all new
            db.execute(
                "INSERT INTO units(code, name, level, parent, retired) "
                f"SELECT code, name, level, parent, 0 FROM {STAGING}"
            )
            report = ImportReport(scope, villages, villages, 0, [])
        else:
            _diff(db, pg)
            report = _compare(db, scope, villages)
            _merge(db, scope)
            db.execute(f"DROP TABLE {DIFF}")
        db.execute(
            "INSERT INTO registry_meta(key, value) VALUES ('scope', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (scope,),
        )
        db.execute(f"DROP TABLE {STAGING}")
    return report


def import_registry(db: Db, scope: str) -> int:
    """Make ``scope`` of the packaged edition the registry in ``db`` (:func:`import_edition`).
    Returns the number of villages imported."""
    return import_edition(db, scope).villages


def village(db: Db, code: str) -> Unit | bool | None:
    """The village-level unit ``code`` in the registry imported into ``db``; None when the code
    is not there; False when no registry was imported at all."""
    if db.fetchone("SELECT 1 FROM registry_meta WHERE key = 'scope'") is None:
        return False
    row = db.fetchone(
        "SELECT code, name, level, parent FROM units WHERE code = ? AND level = ?",
        (code, VILLAGE_LEVEL),
    )
    return None if row is None else Unit(str(row[0]), str(row[1]), int(row[2]), row[3])


def _counted(
    registry: Registry, progress: Callable[[int, int], None] | None
) -> Iterator[tuple[str, str, int, str | None]]:
    total = len(registry)
    for i, row in enumerate(registry.rows(), 1):
        yield row
        if progress is not None and (i % IMPORT_CHUNK == 0 or i == total):
            progress(i, total)


def _diff(db: Db, pg: bool) -> None:
    """The rows where the staged edition and ``units`` differ, in one pass over both (a full
    join): on a re-import of an unchanged edition it is empty, and everything after it is
    cheap."""
    db.execute(
        f"CREATE TEMPORARY TABLE {DIFF} AS SELECT coalesce(s.code, u.code) AS code, "
        "s.name AS s_name, s.level AS s_level, s.parent AS s_parent, "
        "u.name AS u_name, u.level AS u_level, u.retired AS u_retired, "
        "CASE WHEN u.code IS NULL THEN 1 ELSE 0 END AS is_new, "
        "CASE WHEN s.code IS NULL THEN 1 ELSE 0 END AS is_gone "
        f"FROM {STAGING} s FULL OUTER JOIN units u ON u.code = s.code "
        "WHERE u.code IS NULL OR s.code IS NULL OR u.name <> s.name OR u.level <> s.level "
        "OR u.retired <> 0 OR u.parent IS DISTINCT FROM s.parent"
    )
    if pg:
        db.execute(f"ANALYZE {DIFF}")  # small or large: the next statements' plans depend on it


def _compare(db: Db, scope: str, villages: int) -> ImportReport:
    """What merging the staged edition will change, in villages."""
    (added,) = db.fetchone(
        f"SELECT count(*) FROM {DIFF} WHERE is_new = 1 AND s_level = ?", (VILLAGE_LEVEL,)
    ) or (0,)
    (renamed,) = db.fetchone(
        f"SELECT count(*) FROM {DIFF} WHERE is_new = 0 AND is_gone = 0 AND u_level = ? "
        "AND u_retired = 0 AND u_name <> s_name",
        (VILLAGE_LEVEL,),
    ) or (0,)
    # Membership by code prefix: an exception to the prefix rule would need its parent chain
    # from the old import, and the 2023 table has none (registry/data/README.md).
    retired = [
        str(c)
        for (c,) in db.fetchall(
            f"SELECT code FROM {DIFF} WHERE is_gone = 1 AND u_level = ? "
            "AND substr(code, 1, ?) = ? ORDER BY code",
            (VILLAGE_LEVEL, len(scope), scope),
        )
    ]
    return ImportReport(scope, villages, int(added), int(renamed), retired)


def _merge(db: Db, scope: str) -> None:
    """Make ``units`` the staged edition, retiring the scope's vanished villages."""
    in_scope = "substr(code, 1, ?) = ?"
    db.execute(
        "UPDATE units SET retired = 1, parent = NULL WHERE code IN "
        f"(SELECT code FROM {DIFF} WHERE is_gone = 1 AND u_retired = 0 AND u_level = ? "
        f"AND {in_scope})",
        (VILLAGE_LEVEL, len(scope), scope),
    )
    db.execute(
        "DELETE FROM units WHERE code IN "
        f"(SELECT code FROM {DIFF} WHERE is_gone = 1 AND u_retired = 0 "
        f"AND NOT (u_level = ? AND {in_scope}))",
        (VILLAGE_LEVEL, len(scope), scope),
    )
    db.execute(
        "DELETE FROM units WHERE code IN "
        f"(SELECT code FROM {DIFF} WHERE is_gone = 1 AND u_retired = 1 AND NOT {in_scope})",
        (len(scope), scope),
    )
    db.execute(
        "UPDATE units SET name = d.s_name, level = d.s_level, parent = d.s_parent, retired = 0 "
        f"FROM {DIFF} d WHERE d.code = units.code AND d.is_new = 0 AND d.is_gone = 0"
    )
    db.execute(
        "INSERT INTO units(code, name, level, parent, retired) "
        f"SELECT code, s_name, s_level, s_parent, 0 FROM {DIFF} WHERE is_new = 1"
    )
