"""The whole country's registry imported into central's database, as an operator runs it.

    python bench/registry_import.py [--runs 3]

Each run: a fresh SQLite database opened by central's own store (WAL, synchronous=FULL, the
connection central and ``shilian central import-registry`` use), then the packaged NBS 2023
edition imported for scope "" (620,573 villages, 665,276 units), then the same edition again
(an update: every unit compared and rewritten, nothing added or retired). Prints one JSON line:
``seconds`` (the best first import; target <= 10) with every run's figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from central.store import SqliteStore
from registry import import_edition


def run_once(folder: Path) -> tuple[float, float, int]:
    store = SqliteStore(folder / "central.sqlite3")
    try:
        t0 = time.perf_counter()
        report = import_edition(store.conn, "")
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        import_edition(store.conn, "")
        update = time.perf_counter() - t0
    finally:
        store.close()
    return first, update, report.villages


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    firsts: list[float] = []
    updates: list[float] = []
    villages = 0
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            first, update, villages = run_once(Path(tmp))
        firsts.append(round(first, 2))
        updates.append(round(update, 2))
        print(f"import {first:.2f} s, re-import {update:.2f} s", file=sys.stderr)
    print(
        json.dumps(
            {
                "seconds": min(firsts),
                "first_import_s": firsts,
                "reimport_s": updates,
                "villages": villages,
                "target_s": 10,
            }
        )
    )


if __name__ == "__main__":
    main()
