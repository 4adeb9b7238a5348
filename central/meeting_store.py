"""The record of every meeting in central's SQLite file (table ``meetings``): who called which
node, when it was answered and ended, why, and the quality the page reported. A record is
written before the offer is sent (central.meetings), so a crash leaves at most records without
an end, which the next start settles (``MeetingService.reconcile``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from central.store import connect
from wire.meeting import Call, EndReason

SCHEMA = """
CREATE TABLE IF NOT EXISTS meetings(session TEXT PRIMARY KEY, node TEXT NOT NULL,
  village TEXT NOT NULL, camera TEXT, user TEXT, started REAL NOT NULL, answered REAL,
  ended REAL, end_reason TEXT, detail TEXT NOT NULL DEFAULT '', stats TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS meetings_village ON meetings(village, started);
"""

#: Records without an end read at a start: more than central's calls at once (256) several
#: crashes over; older ones are left for the next start.
MAX_UNFINISHED = 1024


class MeetingStore:
    """The ``meetings`` table in central's SQLite file. Every method is blocking: call it from
    a worker thread (the service does)."""

    def __init__(self, path: Path) -> None:
        self.conn = connect(path)
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def unfinished(self) -> list[dict[str, Any]]:
        """Records without an end: calls central did not see end (it crashed during them)."""
        return self._select("WHERE ended IS NULL", (), MAX_UNFINISHED, 0)

    def end(self, session: str, reason: EndReason, detail: str, now: float) -> None:
        self.conn.execute(
            "UPDATE meetings SET ended = ?, end_reason = ?, detail = ? WHERE session = ?"
            " AND ended IS NULL",
            (now, reason.value, detail[:1000], session),
        )

    def started(self, call: Call, camera: str | None, user: str | None) -> None:
        self.conn.execute(
            "INSERT INTO meetings(session, node, village, camera, user, started)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (call.session, call.node_id, call.node_id[:12], camera, user, call.started),
        )

    def update(self, call: Call) -> None:
        end = call.end
        self.conn.execute(
            "UPDATE meetings SET camera = coalesce(?, camera), answered = ?, ended = ?,"
            " end_reason = ?, detail = ? WHERE session = ?",
            (
                call.camera,
                call.answered_at,
                call.ended_at,
                end.reason.value if end else None,
                end.detail[:1000] if end else "",
                call.session,
            ),
        )

    def set_stats(self, session: str, stats: dict[str, float]) -> bool:
        cur = self.conn.execute(
            "UPDATE meetings SET stats = ? WHERE session = ?", (json.dumps(stats), session)
        )
        return cur.rowcount == 1

    def get(self, session: str) -> dict[str, Any] | None:
        rows = self._select("WHERE session = ?", (session,), 1, 0)
        return rows[0] if rows else None

    def history(self, village: str, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        total = self.conn.execute(
            "SELECT count(*) FROM meetings WHERE village = ?", (village,)
        ).fetchone()[0]
        return int(total), self._select("WHERE village = ?", (village,), limit, offset)

    def _select(
        self, where: str, args: tuple[Any, ...], limit: int, offset: int
    ) -> list[dict[str, Any]]:
        cols = (
            "session, node, village, camera, user, started, answered, ended, end_reason,"
            " detail, stats"
        )
        rows = self.conn.execute(
            f"SELECT {cols} FROM meetings {where} ORDER BY started DESC LIMIT ? OFFSET ?",
            (*args, limit, offset),
        ).fetchall()
        out = []
        for r in rows:
            d = dict(zip([c.strip() for c in cols.split(",")], r, strict=True))
            d["stats"] = json.loads(d["stats"])
            d["state"] = "ended" if d["ended"] is not None else (
                "active" if d["answered"] is not None else "offered"
            )  # fmt: skip
            out.append(d)
        return out
