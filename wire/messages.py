"""Payload schemas (JSON, UTF-8). See docs/protocol.md for an example of each.

Rules common to every payload:
- ``v`` is the major schema version (:data:`wire.limits.PROTOCOL_VERSION`), required; a receiver
  refuses a payload without it (``schema``) or with any other value (``unknown_version``).
- Unknown fields are ignored, so a v1 receiver accepts payloads from a newer v1 sender that
  added optional fields.
- ``node`` repeats the sender's node id. The topic is the identity: a payload whose ``node``
  differs from its topic is refused (``identity_mismatch``), never applied to either node.
- ``ts`` is the sender's wall clock, Unix seconds.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wire.limits import (
    DEFAULT_HEALTH_INTERVAL_S,
    MAX_HEALTH_INTERVAL_S,
    MIN_HEALTH_INTERVAL_S,
    PROTOCOL_VERSION,
)

BootId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="uuid4 hex of one agent run")]
NodeId = Annotated[str, Field(pattern=r"^\d{12}-[a-z0-9][a-z0-9_]{0,15}$")]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
Timestamp = Annotated[float, Field(ge=0, description="Unix seconds, sender's clock")]


class Priority(StrEnum):
    """Event priority: alarm > device > info. The outbox sends higher first within a node's
    backlog order rules and drops only lower ones when full (docs/protocol.md)."""

    ALARM = "alarm"
    DEVICE = "device"
    INFO = "info"

    @property
    def rank(self) -> int:
        """Larger is more important."""
        return _RANK[self]


_RANK = {Priority.ALARM: 2, Priority.DEVICE: 1, Priority.INFO: 0}


def _v_required(schema: dict[str, Any]) -> None:
    """In the JSON Schema, ``v`` is required as on the wire (``wire.decode`` refuses a payload
    without it); the model's default only serves our own code building messages."""
    required = schema.setdefault("required", [])
    if "v" not in required:
        required.insert(0, "v")
    v = schema["properties"]["v"]
    v.pop("default", None)
    v["const"] = PROTOCOL_VERSION


class _Payload(BaseModel):
    # defer_build: a model's validator and serializer are built on its first use, so a process
    # holds only those it uses (an idle edge: state and health, never the certificate ones).
    model_config = ConfigDict(
        extra="ignore", frozen=True, defer_build=True, json_schema_extra=_v_required
    )

    v: int = Field(default=PROTOCOL_VERSION, strict=True, description="major schema version")


class NodeState(_Payload):
    """Birth ("online", on every connect) and death ("offline": the MQTT last will, or a clean
    stop). Retained. ``birth_seq`` grows with every connection of the node and survives reboots.
    A birth with a new ``boot_id`` is a new life (a replaced box starts again at 1); a death of
    another boot, or a state of the current boot with a lower ``birth_seq``, is stale and
    ignored."""

    node: NodeId
    state: Literal["online", "offline"]
    boot_id: BootId
    birth_seq: int = Field(ge=1)
    ts: Timestamp
    reason: Literal["connect", "will", "stopped"]
    health_interval_s: float = Field(
        default=DEFAULT_HEALTH_INTERVAL_S, ge=MIN_HEALTH_INTERVAL_S, le=MAX_HEALTH_INTERVAL_S
    )
    sw_version: str = Field(default="", max_length=64)


class Health(_Payload):
    """Periodic health report (default every 30 s)."""

    node: NodeId
    boot_id: BootId
    ts: Timestamp
    interval_s: float = Field(ge=MIN_HEALTH_INTERVAL_S, le=MAX_HEALTH_INTERVAL_S)
    uptime_s: float = Field(ge=0)
    sw_version: str = Field(max_length=64)
    cpu_pct: float = Field(ge=0, le=100)
    mem_used_pct: float = Field(ge=0, le=100)
    disk_used_pct: float = Field(ge=0, le=100)
    temp_c: float | None = Field(default=None, description="board temperature where it has one")
    outbox_depth: int = Field(ge=0)
    last_publish_age_s: float | None = Field(
        default=None, ge=0, description="seconds since the last PUBACK; null before the first"
    )
    cert_not_after: Timestamp | None = Field(
        default=None, description="expiry of the node's client certificate (absent: no TLS)"
    )
    outbox_disk_full_since: Timestamp | None = Field(
        default=None, description="the outbox has refused events since then: disk full"
    )


class Event(_Payload):
    """Something that happened at the node. Sent from the durable outbox at QoS 1; central
    deduplicates by (node, boot_id, seq) and records gaps in seq."""

    node: NodeId
    boot_id: BootId
    seq: int = Field(ge=1, description="per boot, from 1, no gaps at the sender")
    ts: Timestamp
    priority: Priority
    kind: Name
    device: Name | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class DeviceState(_Payload):
    """State of one local device, retained on ``device/<device_id>``. New device kinds need no
    new mechanism: ``kind`` is open. An empty retained payload means the device was removed."""

    node: NodeId
    ts: Timestamp
    kind: Name = Field(description="camera, alarm_board, conference_terminal, ...")
    state: Literal["up", "down", "degraded", "unknown"]
    name: str | None = Field(default=None, max_length=128)
    detail: dict[str, Any] = Field(default_factory=dict)


class CommandRequest(_Payload):
    """Central -> node, with MQTT 5 response topic (inside the node's subtree) and correlation
    data; the message expiry interval is the caller's timeout."""

    cmd: Name
    args: dict[str, Any] = Field(default_factory=dict)


class CommandError(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    code: Name
    message: str = Field(max_length=1024)


class CommandResponse(_Payload):
    """Node -> central, on the request's response topic with its correlation data."""

    node: NodeId
    ok: bool
    result: dict[str, Any] | None = None
    error: CommandError | None = None


#: Largest CSR in a renewal request (a P-256 CSR is ~500 bytes; pki.ca checks the same).
MAX_CSR_CHARS = 16 * 1024
#: Largest certificate PEM in a renewal answer (a node certificate is ~800 bytes).
MAX_CERT_CHARS = 8 * 1024


class CertRequest(_Payload):
    """Node -> central on its own ``cert/req``: renew my certificate. The key was made on the
    box and never leaves it; ``csr_pem``'s CN must be the node id of the topic. MQTT 5 response
    topic (the node's own ``cert/res``) and correlation data as for commands."""

    node: NodeId
    ts: Timestamp
    csr_pem: str = Field(max_length=MAX_CSR_CHARS, description="PEM CSR, EC P-256, CN = node")
    serial: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{1,40}$",
        description="serial (hex) of the certificate the node uses now",
    )


class CertResponse(_Payload):
    """Central -> node on the node's ``cert/res`` with the request's correlation data: the new
    certificate, or a refusal (``error.code``, message zh-CN / English)."""

    node: NodeId
    ok: bool
    cert_pem: str | None = Field(default=None, max_length=MAX_CERT_CHARS)
    ca_pem: str | None = Field(default=None, max_length=MAX_CERT_CHARS)
    serial: str | None = Field(default=None, pattern=r"^[0-9a-f]{1,40}$")
    not_after: Timestamp | None = None
    error: CommandError | None = None


#: Boots named in one stored-acknowledgement (a node has one boot with unacknowledged events,
#: two or three across a restart); more wait for the next acknowledgement.
MAX_ACK_BOOTS = 16
#: Missing ranges named per boot: central keeps at most 1,000 open gaps per (node, boot)
#: (central/ingest.py MAX_OPEN_GAPS); a [first, last] pair is ~20 B, so 1,000 fit in a payload.
MAX_ACK_MISSING = 1000


class BootStored(BaseModel):
    """What central has stored of one boot's events: every seq from 1 to ``upto``, except
    those inside a ``missing`` range (inclusive pairs, ascending)."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    boot_id: BootId
    upto: int = Field(ge=0, description="highest seq stored; everything below it is stored too "
                      "unless inside a missing range")  # fmt: skip
    missing: list[tuple[int, int]] = Field(
        default_factory=list,
        max_length=MAX_ACK_MISSING,
        description="[first, last] seq ranges below upto not stored (yet)",
    )

    def covers(self, seq: int) -> bool:
        """Whether the event ``seq`` of this boot is stored at central."""
        if seq > self.upto:
            return False
        return not any(first <= seq <= last for first, last in self.missing)


class StoredAck(_Payload):
    """Central -> node on the node's ``ack`` (QoS 1, not retained): these events are committed
    to central's store. Sent after the commit, at most every 0.2 s per node, also for
    duplicates (a re-send after a lost acknowledgement is acknowledged again). The node deletes
    an event from its outbox only once an acknowledgement covers it (docs/protocol.md)."""

    node: NodeId
    ts: Timestamp
    boots: list[BootStored] = Field(max_length=MAX_ACK_BOOTS)


class CentralCaps(_Payload):
    """Central -> every node, retained on ``shilian/v1/central/caps``, published on every
    connect of central: what this central does. A node deletes events on central's
    stored-acknowledgement only while the last capabilities it saw say ``stored_acks``; without
    them (an older central, or the topic cleared) it deletes on the broker's PUBACK."""

    ts: Timestamp
    stored_acks: bool = Field(description="central publishes StoredAck on each node's ack topic")


AnyMessage = (
    NodeState
    | Health
    | Event
    | DeviceState
    | CommandRequest
    | CommandResponse
    | CertRequest
    | CertResponse
    | StoredAck
    | CentralCaps
)
