"""The schema of the release before versioned migrations: every table, index and constraint.

A database made by that release (tables created by each module as its routes started, no
``alembic_version``) is adopted by this same step: what exists is kept with its rows, what is
missing is created (a table, an index, the columns that the modules used to add on start:
``units.retired``, ``enrol_tokens.revoked_at``).

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TEXT = sa.Text()
_INT = sa.Integer()
#: 64-bit ids and sequence numbers; exactly INTEGER on SQLite, where ``id`` is the rowid.
_INT64: sa.types.TypeEngine[int] = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: Unix seconds: PostgreSQL's REAL is 4 bytes, too coarse for a timestamp.
_TIME: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")


def _col(name: str, type_: Any, default: str | None = None) -> sa.Column[Any]:
    """A NOT NULL column (``default``: its server default, SQL text)."""
    return sa.Column(
        name, type_, nullable=False, server_default=None if default is None else sa.text(default)
    )


def _id() -> sa.Column[Any]:
    return sa.Column("id", _INT64, primary_key=True)


def _partial(where: str) -> dict[str, Any]:
    return {"sqlite_where": sa.text(where), "postgresql_where": sa.text(where)}


def upgrade() -> None:
    have = set(sa.inspect(op.get_bind()).get_table_names())

    def table(name: str, *items: sa.Column[Any] | sa.Constraint) -> None:
        if name not in have:
            op.create_table(name, *items)

    def column(table: str, col: sa.Column[Any]) -> None:
        """Columns that older databases lack (added by the modules then, on start)."""
        if col.name not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}:
            op.add_column(table, col)

    def index(name: str, table: str, *cols: str, **kw: Any) -> None:
        existing = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes(table)}
        if name not in existing:
            op.create_index(name, table, list(cols), **kw)

    table(
        "nodes",
        sa.Column("node_id", _TEXT, primary_key=True),
        _col("village", _TEXT),
        _col("county", _TEXT),
        _col("state", _TEXT),
        _col("state_since", _TIME),
        _col("state_reason", _TEXT),
        sa.Column("boot_id", _TEXT),
        _col("birth_seq", _INT64, "0"),
        _col("health_interval_s", _TIME),
        _col("sw_version", _TEXT, "''"),
        _col("first_seen", _TIME),
        _col("last_seen", _TIME),
        sa.Column("last_health", _TEXT),
    )
    index("nodes_village", "nodes", "village")
    index("nodes_county", "nodes", "county")
    table(
        "state_history",
        _id(),
        _col("node_id", _TEXT),
        _col("state", _TEXT),
        _col("start", _TIME),
        sa.Column("end", _TIME),
        _col("reason", _TEXT),
    )
    index("state_history_node", "state_history", "node_id", "start")
    index("state_history_open", "state_history", "node_id", **_partial('"end" IS NULL'))
    table(
        "health",
        _id(),
        _col("node_id", _TEXT),
        _col("ts", _TIME),
        _col("recv_ts", _TIME),
        _col("body", _TEXT),
    )
    index("health_node", "health", "node_id", "id")
    table(
        "devices",
        _col("node_id", _TEXT),
        _col("device_id", _TEXT),
        _col("kind", _TEXT),
        _col("state", _TEXT),
        sa.Column("name", _TEXT),
        _col("ts", _TIME),
        _col("detail", _TEXT, "'{}'"),
        _col("removed", _INT, "0"),
        sa.PrimaryKeyConstraint("node_id", "device_id"),
    )
    table(
        "events",
        _id(),
        _col("node_id", _TEXT),
        _col("village", _TEXT),
        _col("boot_id", _TEXT),
        _col("seq", _INT64),
        _col("ts", _TIME),
        _col("recv_ts", _TIME),
        _col("priority", _TEXT),
        _col("kind", _TEXT),
        sa.Column("device", _TEXT),
        _col("data", _TEXT),
        sa.UniqueConstraint("node_id", "boot_id", "seq"),
    )
    index("events_node_ts", "events", "node_id", "ts")
    index("events_village_ts", "events", "village", "ts")
    index("events_ts", "events", "ts")
    index("events_alarm", "events", "ts", "id", **_partial("priority = 'alarm'"))
    table(
        "gaps",
        _col("node_id", _TEXT),
        _col("boot_id", _TEXT),
        _col("first_seq", _INT64),
        _col("last_seq", _INT64),
        _col("detected", _TIME),
    )
    index("gaps_node", "gaps", "node_id", "boot_id")

    table(
        "units",
        sa.Column("code", _TEXT, primary_key=True),
        _col("name", _TEXT),
        _col("level", _INT),
        sa.Column("parent", _TEXT),
        _col("retired", _INT, "0"),
    )
    column("units", _col("retired", _INT, "0"))
    table("registry_meta", sa.Column("key", _TEXT, primary_key=True), _col("value", _TEXT))

    table(
        "users",
        sa.Column("name", _TEXT, primary_key=True),
        _col("role", _TEXT),
        _col("scope", _TEXT),
        _col("password_hash", _TEXT),
        _col("disabled", _INT, "0"),
        _col("created", _TIME),
        _col("changed", _TIME),
    )
    table(
        "sessions",
        sa.Column("token_sha256", _TEXT, primary_key=True),
        _col("user", _TEXT),
        _col("created", _TIME),
        _col("last_used", _TIME),
        _col("expires", _TIME),
        _col("address", _TEXT),
    )
    index("sessions_user", "sessions", "user")
    table(
        "audit",
        _id(),
        _col("ts", _TIME),
        sa.Column("user", _TEXT),
        sa.Column("role", _TEXT),
        _col("address", _TEXT),
        _col("action", _TEXT),
        _col("target", _TEXT),
        _col("outcome", _TEXT),
        _col("detail", _TEXT, "'{}'"),
    )
    index("audit_ts", "audit", "ts")
    index("audit_user", "audit", "user", "ts")
    index("audit_action", "audit", "action", "ts")

    table(
        "enrol_tokens",
        sa.Column("token_sha256", _TEXT, primary_key=True),
        _col("target", _TEXT),
        _col("created_at", _TIME),
        _col("expires_at", _TIME),
        sa.Column("used_at", _TIME),
        sa.Column("used_by", _TEXT),
        sa.Column("revoked_at", _TIME),
    )
    column("enrol_tokens", sa.Column("revoked_at", _TIME))
    table(
        "commissioning_reports",
        _id(),
        _col("node_id", _TEXT),
        _col("uploaded_at", _TIME),
        _col("ok", _INT),
        _col("technician", _TEXT, "''"),
        _col("report", _TEXT),
    )
    index("commissioning_by_node", "commissioning_reports", "node_id", "id")

    table(
        "coverage_daily",
        _col("day", _TEXT),
        _col("code", _TEXT),
        _col("villages", _INT),
        _col("provisioned", _INT),
        _col("covered", _INT),
        _col("taken", _TIME),
        _col("source", _TEXT),
        sa.PrimaryKeyConstraint("code", "day"),
    )
    for kind, by, at in (("acks", "acked_by", "acked_at"), ("closes", "closed_by", "closed_at")):
        table(
            f"alarm_{kind}",
            sa.Column("event_id", _INT64, primary_key=True, autoincrement=False),
            _col(by, _TEXT),
            _col(at, _TIME),
            _col("note", _TEXT, "''"),
        )
    table(
        "alert_rules",
        sa.Column("id", _INT, primary_key=True, autoincrement=False),
        _col("body", _TEXT),
        _col("updated", _TIME),
        _col("updated_by", _TEXT),
        sa.CheckConstraint("id = 1", name="alert_rules_one_row"),
    )
    table(
        "alerts",
        _id(),
        *(_col(c, _TEXT) for c in ("rule", "key", "kind", "severity", "labels", "zh", "en")),
        *(_col(c, _TIME) for c in ("value", "since", "fired")),
        sa.Column("resolved", _TIME),
    )
    index("alerts_firing", "alerts", "rule", "key", **_partial("resolved IS NULL"))
    table(
        "meetings",
        sa.Column("session", _TEXT, primary_key=True),
        _col("node", _TEXT),
        _col("village", _TEXT),
        sa.Column("camera", _TEXT),
        sa.Column("user", _TEXT),
        _col("started", _TIME),
        sa.Column("answered", _TIME),
        sa.Column("ended", _TIME),
        sa.Column("end_reason", _TEXT),
        _col("detail", _TEXT, "''"),
        _col("stats", _TEXT, "'{}'"),
    )
    index("meetings_village", "meetings", "village", "started")
    table(
        "snapshots",
        _id(),
        _col("node_id", _TEXT),
        _col("village", _TEXT),
        _col("alarm_boot_id", _TEXT),
        _col("alarm_seq", _INT64),
        _col("camera", _TEXT),
        _col("zone", _INT),
        _col("taken_ts", _TIME),
        _col("recv_ts", _TIME),
        _col("width", _INT),
        _col("height", _INT),
        _col("jpeg", sa.LargeBinary()),
        sa.UniqueConstraint("node_id", "alarm_boot_id", "alarm_seq", "camera"),
    )


def downgrade() -> None:
    raise NotImplementedError("the first schema has no earlier version to return to")
