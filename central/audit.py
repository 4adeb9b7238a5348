"""The audit log: who did what at central, from where, and how it ended.

One row per login, logout, failed login, alarm acknowledgement, command to a node, user change,
enrolment token creation, revocation and firmware upload. Table ``audit`` in central's database
(SQLite or PostgreSQL, :mod:`central.db`), committed before the action is answered
(central.accounts owns the connection). Rows are never updated or deleted by central.

Writers: the API through ``central.auth.audit(request, ...)``; command-line tools on the box
through :func:`central.accounts.record_local` (user ``cli:<login name>``, address ``local``).
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from central.db import Db

#: Longest detail stored per row: enough for a command's arguments or a note, bounded so one
#: request cannot grow the log by megabytes.
MAX_DETAIL_CHARS = 4000

_AUDIT_COLUMNS = ("id", "ts", "user", "role", "address", "action", "target", "outcome")


@dataclass(frozen=True, slots=True)
class Entry:
    ts: float
    user: str | None  # None: nobody logged in (e.g. a failed login)
    role: str | None
    address: str
    action: str  # login | login_failed | logout | alarm_ack | command | user_add | ...
    target: str  # what it was done to: a user, a node, an alarm id, a file
    outcome: str  # ok | denied | error code
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    user: str | None = None
    action: str | None = None
    since: float | None = None
    until: float | None = None  # exclusive


def record(db: Db, e: Entry) -> None:
    detail = json.dumps(e.detail, ensure_ascii=False, default=str)
    if len(detail) > MAX_DETAIL_CHARS:
        detail = json.dumps({"truncated": detail[:MAX_DETAIL_CHARS]}, ensure_ascii=False)
    db.execute(
        'INSERT INTO audit(ts, "user", role, address, action, target, outcome, detail)'
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (e.ts, e.user, e.role, e.address[:64], e.action, e.target[:200], e.outcome, detail),
    )


def local_login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def list_audit(db: Db, f: AuditFilter, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, one page newest first), from one snapshot."""
    conds: list[str] = []
    args: list[Any] = []
    if f.user is not None:
        conds.append('"user" = ?')
        args.append(f.user)
    if f.action is not None:
        conds.append("action = ?")
        args.append(f.action)
    if f.since is not None:
        conds.append("ts >= ?")
        args.append(f.since)
    if f.until is not None:
        conds.append("ts < ?")
        args.append(f.until)
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    with db.transaction(write=False):  # one snapshot for the count and the page
        (total,) = db.fetchone(f"SELECT count(*) FROM audit{where}", args) or (0,)
        rows = db.fetchall(
            'SELECT id, ts, "user", role, address, action, target, outcome, detail FROM audit'
            f"{where} ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
    out = []
    for r in rows:
        d = dict(zip(_AUDIT_COLUMNS, r[:8], strict=True))
        d["detail"] = json.loads(r[8])
        out.append(d)
    return int(total), out
