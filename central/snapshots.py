"""Camera snapshots taken on alarm, stored at central (wire.snapshots, docs/central.md).

A snapshot arrives as an ordinary ``snapshot`` event. Before the ingest batch is written,
:meth:`SnapshotIntake.split` takes the JPEG out of each such event: the event row keeps its
seq (no gap), camera, zone, size and alarm reference, and the picture goes to table
``snapshots``, in the same transaction (:meth:`SnapshotIntake.stage`). A snapshot is joined to
its alarm by the alarm's identity at the node (node, boot id, seq), so it does not matter which
of the two arrives first.

What is kept: at most :data:`MAX_PER_ALARM` pictures per alarm (one per camera; a camera's
second picture for the same alarm replaces nothing and is ignored), and the newest
:data:`MAX_TOTAL` pictures overall (the oldest are deleted in the transaction that adds new
ones): at most 44 KiB each, so ~210 MiB of pictures at most. An invalid snapshot (bad base64,
not a JPEG, over the bound) is refused: its event row says why, and it is counted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from central.db import Cursor, Db, pg_sql
from central.store import EventRow, Write
from central.views import records
from wire.snapshots import SNAPSHOT_KIND, SnapshotData

#: Pictures kept per alarm: the cameras of one zone (the edge sends at most 16 per alarm,
#: 4 by default); more would be the same scene from further away.
MAX_PER_ALARM = 8
#: Pictures kept in total (newest): 5,000 x <= 44 KiB <= ~210 MiB, weeks of alarms for a county
#: at a few dozen alarms a day. Older alarms keep their event rows, without pictures.
MAX_TOTAL = 5000

OUTCOMES = ("stored", "refused", "over_alarm_bound")


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    node_id: str
    village: str
    alarm_boot_id: str
    alarm_seq: int
    camera: str
    zone: int
    taken_ts: float
    recv_ts: float
    width: int
    height: int
    jpeg: bytes


def split_event(row: EventRow) -> tuple[EventRow, SnapshotRow | None]:
    """A ``snapshot`` event row → (the row without its picture, the picture) or, if invalid,
    (the row saying why, None)."""
    try:
        data = SnapshotData.model_validate(json.loads(row.data))
        jpeg = data.jpeg()
    except (ValidationError, ValueError) as e:
        why = str(e).splitlines()[0][:200]
        return row._replace(data=json.dumps({"refused": why})), None
    meta = data.model_dump(mode="json", exclude={"jpeg_b64"})
    meta["bytes"] = len(jpeg)
    shot = SnapshotRow(
        row.node_id,
        row.village,
        data.alarm_boot_id,
        data.alarm_seq,
        data.camera,
        data.zone,
        data.taken_ts,
        row.recv_ts,
        data.width,
        data.height,
        jpeg,
    )
    return row._replace(data=json.dumps(meta, ensure_ascii=False)), shot


class SnapshotIntake:
    """Writes table ``snapshots`` on the store's writer connection, SQLite's or PostgreSQL's
    (used by the service's writer only, between the store's stage and commit)."""

    def __init__(
        self, conn: sqlite3.Connection | psycopg.Connection[Any], registry: CollectorRegistry
    ) -> None:
        self._execute: Callable[[str, Sequence[object]], Cursor]
        self.rebind(conn)
        self.counts = Counter(
            "shilian_snapshots",
            "报警抓拍入库结果 / alarm snapshots received, by outcome",
            ["outcome"],
            registry=registry,
        )
        for o in OUTCOMES:
            self.counts.labels(o)

    def rebind(self, conn: sqlite3.Connection | psycopg.Connection[Any]) -> None:
        """Write on ``conn`` from now on (the store's new connection after it lost its last)."""
        if isinstance(conn, sqlite3.Connection):
            self._execute = conn.execute
        else:
            pg = conn
            self._execute = lambda sql, params: pg.execute(pg_sql(sql), params)

    def split(self, writes: list[Write]) -> tuple[list[Write], list[SnapshotRow]]:
        """Take the pictures out of the batch's snapshot events."""
        if not any(isinstance(w, EventRow) and w.kind == SNAPSHOT_KIND for w in writes):
            return writes, []
        out: list[Write] = []
        shots: list[SnapshotRow] = []
        for w in writes:
            if isinstance(w, EventRow) and w.kind == SNAPSHOT_KIND:
                w, shot = split_event(w)
                if shot is None:
                    self.counts.labels("refused").inc()
                else:
                    shots.append(shot)
            out.append(w)
        return out, shots

    def stage(self, shots: Sequence[SnapshotRow]) -> None:
        """Insert ``shots`` in the transaction the store has open (rolled back on failure)."""
        if not shots:
            return
        execute = self._execute
        try:
            for s in shots:
                (n,) = execute(
                    "SELECT count(*) FROM snapshots WHERE node_id=? AND alarm_boot_id=?"
                    " AND alarm_seq=?",
                    (s.node_id, s.alarm_boot_id, s.alarm_seq),
                ).fetchone()
                if n >= MAX_PER_ALARM:
                    self.counts.labels("over_alarm_bound").inc()
                    continue
                cur = execute(
                    "INSERT INTO snapshots(node_id, village, alarm_boot_id, alarm_seq, camera,"
                    " zone, taken_ts, recv_ts, width, height, jpeg) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT DO NOTHING",
                    (
                        s.node_id, s.village, s.alarm_boot_id, s.alarm_seq, s.camera, s.zone,
                        s.taken_ts, s.recv_ts, s.width, s.height, s.jpeg,
                    ),
                )  # fmt: skip
                self.counts.labels("stored" if cur.rowcount else "over_alarm_bound").inc()
            execute(
                "DELETE FROM snapshots WHERE id <= (SELECT id FROM snapshots ORDER BY id DESC"
                " LIMIT 1 OFFSET ?)",
                (MAX_TOTAL,),
            )
        except BaseException:
            execute("ROLLBACK", ())
            raise


# -- queries (central.views readers) ------------------------------------------------------------


def for_alarm(db: Db, node_id: str, boot_id: str, seq: int) -> list[dict[str, Any]]:
    """The pictures' metadata of one alarm, by camera."""
    return records(
        db.execute(
            "SELECT camera, zone, taken_ts, recv_ts, width, height, length(jpeg) AS bytes"
            " FROM snapshots WHERE node_id=? AND alarm_boot_id=? AND alarm_seq=? ORDER BY camera",
            (node_id, boot_id, seq),
        )
    )


def jpeg_of(db: Db, node_id: str, boot_id: str, seq: int, camera: str) -> bytes:
    row = db.fetchone(
        "SELECT jpeg FROM snapshots WHERE node_id=? AND alarm_boot_id=? AND alarm_seq=?"
        " AND camera=?",
        (node_id, boot_id, seq, camera),
    )
    return b"" if row is None else bytes(row[0])
