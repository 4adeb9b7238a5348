"""The record of every meeting in central's database (table ``meetings``; SQLite or PostgreSQL,
central.db): who called which
node, when it was answered and ended, why, and the quality the page reported. A record is
written before the offer is sent (central.meetings), so a crash leaves at most records without
an end, which the next start settles (``MeetingService.reconcile``)."""

from __future__ import annotations

import json
from typing import Any

from central.db import Target, open_db
from wire.meeting import Call, EndReason

#: Records without an end read at a start: more than central's calls at once (256) several
#: crashes over; older ones are left for the next start.
MAX_UNFINISHED = 1024


class MeetingStore:
    """The ``meetings`` table on one connection (central.db). Every method is blocking: call it
    from a worker thread, one at a time (the service does). Each statement commits on its own."""

    def __init__(self, target: Target) -> None:
        self.db = open_db(target)

    def close(self) -> None:
        self.db.close()

    def unfinished(self) -> list[dict[str, Any]]:
        """Records without an end: calls central did not see end (it crashed during them)."""
        return self._select("WHERE ended IS NULL", (), MAX_UNFINISHED, 0)

    def end(self, session: str, reason: EndReason, detail: str, now: float) -> None:
        self.db.execute(
            "UPDATE meetings SET ended = ?, end_reason = ?, detail = ? WHERE session = ?"
            " AND ended IS NULL",
            (now, reason.value, detail[:1000], session),
        )

    def started(self, call: Call, camera: str | None, user: str | None) -> None:
        self.db.execute(  # "user" is a reserved word in PostgreSQL
            'INSERT INTO meetings(session, node, village, camera, "user", started)'
            " VALUES (?, ?, ?, ?, ?, ?)",
            (call.session, call.node_id, call.node_id[:12], camera, user, call.started),
        )

    def update(self, call: Call) -> None:
        end = call.end
        self.db.execute(
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
        cur = self.db.execute(
            "UPDATE meetings SET stats = ? WHERE session = ?", (json.dumps(stats), session)
        )
        return cur.rowcount == 1

    def get(self, session: str) -> dict[str, Any] | None:
        rows = self._select("WHERE session = ?", (session,), 1, 0)
        return rows[0] if rows else None

    def history(self, village: str, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        row = self.db.fetchone("SELECT count(*) FROM meetings WHERE village = ?", (village,))
        assert row is not None  # an aggregate has one row
        return int(row[0]), self._select("WHERE village = ?", (village,), limit, offset)

    def _select(
        self, where: str, args: tuple[Any, ...], limit: int, offset: int
    ) -> list[dict[str, Any]]:
        names = (
            "session", "node", "village", "camera", "user", "started", "answered", "ended",
            "end_reason", "detail", "stats",
        )  # fmt: skip
        cols = ", ".join(f'"{c}"' for c in names)  # "user" is a reserved word in PostgreSQL
        rows = self.db.fetchall(
            f"SELECT {cols} FROM meetings {where} ORDER BY started DESC LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        out = []
        for r in rows:
            d = dict(zip(names, r, strict=True))
            d["stats"] = json.loads(d["stats"])
            d["state"] = "ended" if d["ended"] is not None else (
                "active" if d["answered"] is not None else "offered"
            )  # fmt: skip
            out.append(d)
        return out
