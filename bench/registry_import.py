"""The whole country's registry imported into central's database, as an operator runs it.

    python bench/registry_import.py [--runs 3] [--backend sqlite|postgresql] [--url URL]

Each run: a fresh database (SQLite: a new file in a temporary folder; PostgreSQL: a new
database on the server of ``--url``, default ``postgresql://postgres@127.0.0.1:5432/postgres``,
dropped afterwards) opened by :func:`central.db.open_db` (the connection central and
``shilian central import-registry`` use), then the packaged NBS 2023 edition imported for scope
"" (620,573 villages, 665,276 units), then the same edition again (an update: every unit
compared, nothing added or retired). Prints one JSON line: ``seconds`` (the best first import;
target <= 10) with every run's figures and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from central.db import Target, open_db
from central.registry_store import import_edition

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def fresh(backend: str, admin_url: str) -> Iterator[Target]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp) / "central.sqlite3"
        return
    name = f"shilian_bench_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_once(target: Target) -> tuple[float, float, int]:
    db = open_db(target)
    try:
        t0 = time.perf_counter()
        report = import_edition(db, "")
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        import_edition(db, "")
        update = time.perf_counter() - t0
    finally:
        db.close()
    return first, update, report.villages


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument(
        "--url", default=DEFAULT_ADMIN_URL, help="PostgreSQL server (a database to connect to)"
    )
    args = ap.parse_args()
    firsts: list[float] = []
    updates: list[float] = []
    villages = 0
    load_before = os.getloadavg()[0]
    for _ in range(args.runs):
        with fresh(args.backend, args.url) as target:
            first, update, villages = run_once(target)
        firsts.append(round(first, 2))
        updates.append(round(update, 2))
        print(f"import {first:.2f} s, re-import {update:.2f} s", file=sys.stderr)
    print(
        json.dumps(
            {
                "backend": args.backend,
                "seconds": min(firsts),
                "first_import_s": firsts,
                "reimport_s": updates,
                "villages": villages,
                "target_s": 10,
                "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
        )
    )


if __name__ == "__main__":
    main()
