"""The wire contract between edge nodes, central and provisioning (docs/protocol.md).

Everything that crosses MQTT is defined here: topic names, payload schemas, limits and the
codec. Nobody formats a topic string or parses a payload by hand elsewhere.
"""

from wire.codec import decode, encode
from wire.errors import Fault, LocalWireError, RemoteWireError, WireError
from wire.limits import MAX_PAYLOAD_BYTES, PROTOCOL_VERSION
from wire.messages import (
    CommandRequest,
    CommandResponse,
    DeviceState,
    Event,
    Health,
    NodeState,
    Priority,
)
from wire.topics import Kind, Route, Topics, node_id_village, parse_topic, valid_node_id

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "PROTOCOL_VERSION",
    "CommandRequest",
    "CommandResponse",
    "DeviceState",
    "Event",
    "Fault",
    "Health",
    "Kind",
    "LocalWireError",
    "NodeState",
    "Priority",
    "RemoteWireError",
    "Route",
    "Topics",
    "WireError",
    "decode",
    "encode",
    "node_id_village",
    "parse_topic",
    "valid_node_id",
]
