"""Encode and decode payloads: bytes in, a message or a typed error out (never another
exception). Pure: no I/O."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import ValidationError

from wire.errors import Fault, LocalWireError, RemoteWireError
from wire.limits import MAX_PAYLOAD_BYTES, PROTOCOL_VERSION
from wire.meeting import MeetingReply, MeetingRequest
from wire.messages import (
    AnyMessage,
    CertRequest,
    CertResponse,
    CommandRequest,
    CommandResponse,
    DeviceState,
    Event,
    Health,
    NodeState,
    StoredAck,
)
from wire.topics import Kind

M = TypeVar("M", bound=AnyMessage | MeetingRequest | MeetingReply)

SCHEMAS: dict[Kind, type[AnyMessage | MeetingRequest | MeetingReply]] = {
    Kind.STATE: NodeState,
    Kind.HEALTH: Health,
    Kind.EVENT: Event,
    Kind.EVENT_ALARM: Event,
    Kind.DEVICE: DeviceState,
    Kind.CMD_REQ: CommandRequest,
    Kind.CMD_RES: CommandResponse,
    Kind.CERT_REQ: CertRequest,
    Kind.CERT_RES: CertResponse,
    Kind.MEET_REQ: MeetingRequest,
    Kind.MEET_RES: MeetingReply,
    Kind.ACK: StoredAck,
}


def encode(msg: AnyMessage | MeetingRequest | MeetingReply) -> bytes:
    """Serialise ``msg``; :class:`LocalWireError` if it would exceed the payload limit."""
    if msg.v != PROTOCOL_VERSION:
        raise LocalWireError(Fault.UNKNOWN_VERSION, f"refusing to send v={msg.v}")
    data = msg.model_dump_json(exclude_none=True).encode()
    if len(data) > MAX_PAYLOAD_BYTES:
        raise LocalWireError(
            Fault.OVERSIZE, f"{type(msg).__name__} is {len(data)} B > {MAX_PAYLOAD_BYTES} B"
        )
    return data


def decode(schema: type[M], payload: bytes, *, node_id: str | None = None) -> M:
    """Parse ``payload`` as ``schema``.

    ``node_id`` is the identity from the topic; when given, a payload naming another node is
    refused. Raises :class:`RemoteWireError` with the :class:`Fault` as its reason.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RemoteWireError(Fault.OVERSIZE, f"{len(payload)} B > {MAX_PAYLOAD_BYTES} B")
    try:
        msg = schema.model_validate_json(payload)
    except ValidationError as e:
        errors = e.errors(include_url=False, include_input=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise RemoteWireError(Fault.INVALID_JSON, str(errors[0]["msg"])) from None
        # A newer major version may have changed any field: report the version, not the fields.
        _check_version_in_errors(payload)
        first = errors[0] if errors else {"loc": (), "msg": "invalid"}
        loc = ".".join(str(p) for p in first["loc"]) or "<root>"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RemoteWireError(Fault.SCHEMA, f"{loc}: {first['msg']}{more}") from None
    if "v" not in msg.model_fields_set:
        # The field has a default so that our own code can build messages without it, but the
        # contract requires it on the wire (docs/protocol.md): a payload without it is refused.
        raise RemoteWireError(Fault.SCHEMA, "v: Field required")
    if msg.v != PROTOCOL_VERSION:
        raise RemoteWireError(Fault.UNKNOWN_VERSION, f"v={msg.v}, this side speaks v1")
    if node_id is not None and getattr(msg, "node", node_id) != node_id:
        raise RemoteWireError(
            Fault.IDENTITY_MISMATCH,
            f"payload says node {getattr(msg, 'node', '')!r}, topic says {node_id!r}",
        )
    return msg  # type: ignore[return-value]  # model_validate_json returns the schema's type


def _check_version_in_errors(payload: bytes) -> None:
    """On a schema error, tell an unknown version apart from a malformed v1 payload."""
    try:
        obj = json.loads(payload)
    except ValueError:
        return
    if isinstance(obj, dict):
        v = obj.get("v", PROTOCOL_VERSION)
        if v != PROTOCOL_VERSION:
            raise RemoteWireError(Fault.UNKNOWN_VERSION, f"v={v!r}, this side speaks v1")
