"""A node's latest commissioning report in brief, for the dashboard's node page.

Route (docs/dashboard.md): ``GET /api/v1/dashboard/nodes/{node_id}/reports`` →
``{"node_id", "commissioning": {"id", "uploaded_at", "ok", "technician"} | null}``, behind the
operator login like the rest of the dashboard; the reports themselves are stored and served by
:mod:`central.commissioning`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from central.db import Db, Target, open_db

_DB: web.AppKey[Target] = web.AppKey("commissioning_summary_db")


def add_routes(app: web.Application, db: Target) -> None:
    """``db``: central's database (a SQLite path or a PostgreSQL URL), already at the newest
    schema (central upgrades it at start)."""
    app[_DB] = db
    app.router.add_get("/api/v1/dashboard/nodes/{node_id}/reports", node_reports)


def commissioning_summary(db: Db, node_id: str) -> dict[str, Any] | None:
    """The node's latest commissioning report in brief (central.commissioning stores
    them), or None: none uploaded."""
    row = db.fetchone(
        "SELECT id, uploaded_at, ok, technician FROM commissioning_reports WHERE node_id = ?"
        " ORDER BY id DESC LIMIT 1",
        (node_id,),
    )
    if row is None:
        return None
    return {"id": row[0], "uploaded_at": row[1], "ok": bool(row[2]), "technician": row[3]}


async def node_reports(request: web.Request) -> web.Response:
    """``{"commissioning": {...} | null}`` for the node page: a 200 either way, so the page can
    ask without a failed request (a 404 shows as an error in the browser's console)."""
    node_id = request.match_info["node_id"][:80]
    summary = await asyncio.to_thread(_summary, request.app[_DB], node_id)
    return web.json_response(
        {"node_id": node_id, "commissioning": summary},
        dumps=lambda o: json.dumps(o, ensure_ascii=False),
    )


def _summary(t: Target, node_id: str) -> dict[str, Any] | None:
    db = open_db(t, upgrade=False)
    try:
        return commissioning_summary(db, node_id)
    finally:
        db.close()
