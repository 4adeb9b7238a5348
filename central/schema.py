"""Central's whole database schema, in one place, for SQLite and PostgreSQL (SQLAlchemy Core).

This is the schema at the newest migration (``central/migrations``); a test compares a migrated
database with it on both backends, so a change here without a migration (or the reverse) fails.
Every module uses the tables that :func:`central.migrate.upgrade` made; none creates its own.

Types: times are Unix seconds in double precision (``REAL`` on SQLite, ``DOUBLE PRECISION`` on
PostgreSQL: PostgreSQL's ``REAL`` is 4 bytes, a second's resolution lost by 2038); flags are
integers 0/1 on both, so the same SQL reads them. ``end`` and ``user`` are reserved words in
PostgreSQL: SQLAlchemy quotes them here; SQL written by hand that must run there quotes them too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    REAL,
    BigInteger,
    CheckConstraint,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeEngine

metadata = MetaData()


def _time() -> TypeEngine[float]:
    return Double().with_variant(REAL(), "sqlite")


def _int64() -> TypeEngine[int]:
    """Ids and sequence numbers: 64-bit on both (SQLite's INTEGER is; PostgreSQL's is not). On
    SQLite the type must stay exactly ``INTEGER`` for ``id`` to be the rowid."""
    return BigInteger().with_variant(Integer(), "sqlite")


def _partial(where: str) -> dict[str, Any]:
    """A partial index's predicate on both backends (both support them)."""
    return {"sqlite_where": text(where), "postgresql_where": text(where)}


def _serial() -> Column[int]:
    """``id INTEGER PRIMARY KEY``: SQLite's rowid, PostgreSQL's SERIAL."""
    return Column("id", _int64(), primary_key=True)


# -- ingest: node registry, liveness, health, events with dedupe (central.store) ----------------

nodes = Table(
    "nodes",
    metadata,
    Column("node_id", Text, primary_key=True),
    Column("village", Text, nullable=False),
    Column("county", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("state_since", _time(), nullable=False),
    Column("state_reason", Text, nullable=False),
    Column("boot_id", Text),
    Column("birth_seq", _int64(), nullable=False, server_default=text("0")),
    Column("health_interval_s", _time(), nullable=False),
    Column("sw_version", Text, nullable=False, server_default=text("''")),
    Column("first_seen", _time(), nullable=False),
    Column("last_seen", _time(), nullable=False),
    Column("last_health", Text),
    Index("nodes_village", "village"),
    Index("nodes_county", "county"),
    # Every health report rewrites its node's row. Half of each page left free lets PostgreSQL
    # put the new version on the same page with no new index entries (a HOT update), and reclaim
    # the old one without a vacuum; at fillfactor 100 each update added an entry to each of the
    # three indexes (measured: bench/store_backends.py, docs/scale.md). SQLite updates in place.
    postgresql_with={"fillfactor": 50},
)

state_history = Table(
    "state_history",
    metadata,
    _serial(),
    Column("node_id", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("start", _time(), nullable=False),
    Column("end", _time()),
    Column("reason", Text, nullable=False),
    Index("state_history_node", "node_id", "start"),
    Index("state_history_open", "node_id", **_partial('"end" IS NULL')),
)

health = Table(
    "health",
    metadata,
    _serial(),
    Column("node_id", Text, nullable=False),
    Column("ts", _time(), nullable=False),
    Column("recv_ts", _time(), nullable=False),
    Column("body", Text, nullable=False),
    Index("health_node", "node_id", "id"),
)

devices = Table(
    "devices",
    metadata,
    Column("node_id", Text, nullable=False),
    Column("device_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("name", Text),
    Column("ts", _time(), nullable=False),
    Column("detail", Text, nullable=False, server_default=text("'{}'")),
    Column("removed", Integer, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("node_id", "device_id"),
)

events = Table(
    "events",
    metadata,
    _serial(),
    Column("node_id", Text, nullable=False),
    Column("village", Text, nullable=False),
    Column("boot_id", Text, nullable=False),
    Column("seq", _int64(), nullable=False),
    Column("ts", _time(), nullable=False),
    Column("recv_ts", _time(), nullable=False),
    Column("priority", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("device", Text),
    Column("data", Text, nullable=False),
    UniqueConstraint("node_id", "boot_id", "seq"),
    Index("events_node_ts", "node_id", "ts"),
    Index("events_village_ts", "village", "ts"),
    Index("events_ts", "ts"),
    # the alarm list (central.alarms): alarm rows only, in time order
    Index("events_alarm", "ts", "id", **_partial("priority = 'alarm'")),
)

gaps = Table(
    "gaps",
    metadata,
    Column("node_id", Text, nullable=False),
    Column("boot_id", Text, nullable=False),
    Column("first_seq", _int64(), nullable=False),
    Column("last_seq", _int64(), nullable=False),
    Column("detected", _time(), nullable=False),
    Index("gaps_node", "node_id", "boot_id"),
)

# -- the village registry (registry.divisions) ---------------------------------------------------

units = Table(
    "units",
    metadata,
    Column("code", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("level", Integer, nullable=False),
    Column("parent", Text),
    # 1: absent from the imported edition, kept for the nodes bound to it
    Column("retired", Integer, nullable=False, server_default=text("0")),
)

registry_meta = Table(
    "registry_meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

# -- operators (central.accounts, central.audit) -------------------------------------------------

users = Table(
    "users",
    metadata,
    Column("name", Text, primary_key=True),
    Column("role", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("disabled", Integer, nullable=False, server_default=text("0")),
    Column("created", _time(), nullable=False),
    Column("changed", _time(), nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("token_sha256", Text, primary_key=True),
    Column("user", Text, nullable=False),
    Column("created", _time(), nullable=False),
    Column("last_used", _time(), nullable=False),
    Column("expires", _time(), nullable=False),
    Column("address", Text, nullable=False),
    Index("sessions_user", "user"),
)

audit = Table(
    "audit",
    metadata,
    _serial(),
    Column("ts", _time(), nullable=False),
    Column("user", Text),
    Column("role", Text),
    Column("address", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("detail", Text, nullable=False, server_default=text("'{}'")),
    Index("audit_ts", "ts"),
    Index("audit_user", "user", "ts"),
    Index("audit_action", "action", "ts"),
)

# -- enrolment and commissioning (central.tokens, central.commissioning) -------------------------

enrol_tokens = Table(
    "enrol_tokens",
    metadata,
    Column("token_sha256", Text, primary_key=True),
    Column("target", Text, nullable=False),  # a node id, or a 12-digit village code
    Column("created_at", _time(), nullable=False),
    Column("expires_at", _time(), nullable=False),
    Column("used_at", _time()),
    Column("used_by", Text),  # the node id enrolled with it
    Column("revoked_at", _time()),
)

commissioning_reports = Table(
    "commissioning_reports",
    metadata,
    _serial(),
    Column("node_id", Text, nullable=False),
    Column("uploaded_at", _time(), nullable=False),
    Column("ok", Integer, nullable=False),
    Column("technician", Text, nullable=False, server_default=text("''")),
    Column("report", Text, nullable=False),  # the JSON as uploaded (validated)
    Index("commissioning_by_node", "node_id", "id"),
)

# -- coverage history, alarms, alerts, meetings, pictures ----------------------------------------

coverage_daily = Table(
    "coverage_daily",
    metadata,
    Column("day", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("villages", Integer, nullable=False),
    Column("provisioned", Integer, nullable=False),
    Column("covered", Integer, nullable=False),
    Column("taken", _time(), nullable=False),
    Column("source", Text, nullable=False),
    PrimaryKeyConstraint("code", "day"),
)


def _alarm_mark(name: str, by: str, at: str) -> Table:
    """Who acknowledged (or closed) an alarm event, when, with a note; one row per event."""
    return Table(
        name,
        metadata,
        Column("event_id", _int64(), primary_key=True, autoincrement=False),
        Column(by, Text, nullable=False),
        Column(at, _time(), nullable=False),
        Column("note", Text, nullable=False, server_default=text("''")),
    )


alarm_acks = _alarm_mark("alarm_acks", "acked_by", "acked_at")
alarm_closes = _alarm_mark("alarm_closes", "closed_by", "closed_at")


def _one_row(name: str) -> Table:
    """An admin's setting kept as one JSON row over central.toml's (``id`` always 1)."""
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("body", Text, nullable=False),
        Column("updated", _time(), nullable=False),
        Column("updated_by", Text, nullable=False),
        CheckConstraint("id = 1", name=f"{name}_one_row"),
    )


alert_rules = _one_row("alert_rules")
#: The admins' webhook receiver changes (URL, timeout, attempts) over central.toml's, by the
#: digest of the entry each replaces (central.alerting).
alert_webhooks = _one_row("alert_webhooks")

alerts = Table(
    "alerts",
    metadata,
    _serial(),
    Column("rule", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("severity", Text, nullable=False),
    Column("labels", Text, nullable=False),
    Column("zh", Text, nullable=False),
    Column("en", Text, nullable=False),
    Column("value", _time(), nullable=False),
    Column("since", _time(), nullable=False),
    Column("fired", _time(), nullable=False),
    Column("resolved", _time()),
    Index("alerts_firing", "rule", "key", **_partial("resolved IS NULL")),
)

meetings = Table(
    "meetings",
    metadata,
    Column("session", Text, primary_key=True),
    Column("node", Text, nullable=False),
    Column("village", Text, nullable=False),
    Column("camera", Text),
    Column("user", Text),
    Column("started", _time(), nullable=False),
    Column("answered", _time()),
    Column("ended", _time()),
    Column("end_reason", Text),
    Column("detail", Text, nullable=False, server_default=text("''")),
    Column("stats", Text, nullable=False, server_default=text("'{}'")),
    Index("meetings_village", "village", "started"),
)

snapshots = Table(
    "snapshots",
    metadata,
    _serial(),
    Column("node_id", Text, nullable=False),
    Column("village", Text, nullable=False),
    Column("alarm_boot_id", Text, nullable=False),
    Column("alarm_seq", _int64(), nullable=False),
    Column("camera", Text, nullable=False),
    Column("zone", Integer, nullable=False),
    Column("taken_ts", _time(), nullable=False),
    Column("recv_ts", _time(), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("jpeg", LargeBinary, nullable=False),
    UniqueConstraint("node_id", "alarm_boot_id", "alarm_seq", "camera"),
)
