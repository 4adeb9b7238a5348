"""Central's ingest store on either backend of a ``db_target`` (tests/conftest.py), for tests
that need rows written the way central writes them."""

from __future__ import annotations

from pathlib import Path

from central.db import Target
from central.store import SqliteStore
from central.store_pg import PostgresStore


def open_store(target: Target) -> SqliteStore | PostgresStore:
    """The store central would open on ``target`` (brought to the newest schema)."""
    return SqliteStore(target) if isinstance(target, Path) else PostgresStore(target)
