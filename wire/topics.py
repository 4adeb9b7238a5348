"""Topic names of the contract.

Every topic a node writes is under ``shilian/v1/<node_id>/``, so broker ACL pattern lines
``pattern write shilian/v1/%u/<kind>`` (with the node id as the MQTT user name, e.g. the
certificate CN) confine a node to its own subtree, and to the kinds nodes write.

Alarm-priority events have a topic of their own so that central can take them on a session of its
own: a broker delivers one session's queue in order, so on a shared session an alarm from one node
would wait behind every other node's buffered history (docs/protocol.md, the alarm lane).

    shilian/v1/<node>/state              retained, QoS 1   NodeState (birth / death)
    shilian/v1/<node>/health             QoS 1             Health
    shilian/v1/<node>/event              QoS 1             Event (device and info priority)
    shilian/v1/<node>/event/alarm        QoS 1             Event (alarm priority: the alarm lane)
    shilian/v1/<node>/device/<device>    retained, QoS 1   DeviceState (empty payload: removed)
    shilian/v1/<node>/cmd/req            QoS 1, central -> node   CommandRequest
    shilian/v1/<node>/cmd/res            QoS 1, node -> central   CommandResponse
    shilian/v1/<node>/cert/req           QoS 1, node -> central   CertRequest (renewal CSR)
    shilian/v1/<node>/cert/res           QoS 1, central -> node   CertResponse
    shilian/v1/<node>/meet/req           QoS 1, central -> node   MeetingRequest (signalling)
    shilian/v1/<node>/meet/res           QoS 1, node -> central   MeetingReply
    shilian/v1/<node>/ack                QoS 1, central -> node   StoredAck (events stored)
    shilian/v1/central/caps              retained, QoS 1, central -> all   CentralCaps
    shilian/v1/bridge/<county>/state     retained, QoS 1, county broker -> central   "1" / "0"

``central`` and ``bridge`` are not node ids (a node id starts with 12 digits), so central's own
topics never parse as a node's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from wire.errors import Fault, LocalWireError, RemoteWireError
from wire.limits import TOPIC_ROOT
from wire.messages import Priority

# A node id is its village's 12-digit statistical code, a dash, and a short local name: the
# village is part of the identity, and a village may have several nodes. Only characters that are
# safe as an MQTT topic level, a certificate CN and a file name.
NODE_ID_RE = re.compile(r"^(\d{12})-([a-z0-9][a-z0-9_]{0,15})$")
DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_ROOT_LEVELS = TOPIC_ROOT.count("/") + 1


class Kind(StrEnum):
    STATE = "state"
    HEALTH = "health"
    EVENT = "event"
    EVENT_ALARM = "event/alarm"
    DEVICE = "device"
    CMD_REQ = "cmd/req"
    CMD_RES = "cmd/res"
    CERT_REQ = "cert/req"
    CERT_RES = "cert/res"
    MEET_REQ = "meet/req"
    MEET_RES = "meet/res"
    ACK = "ack"


@dataclass(frozen=True, slots=True)
class Route:
    """A parsed topic: whose it is and what it carries."""

    node_id: str
    kind: Kind
    device_id: str | None = None

    @property
    def village(self) -> str:
        return self.node_id[:12]


def valid_node_id(node_id: str) -> bool:
    return NODE_ID_RE.match(node_id) is not None


def node_id_village(node_id: str) -> str:
    """The 12-digit village code a node id belongs to."""
    if not valid_node_id(node_id):
        raise LocalWireError(Fault.BAD_TOPIC, f"not a node id: {node_id!r}")
    return node_id[:12]


class Topics:
    """Topic builders for one node (the only place topic strings are formatted)."""

    __slots__ = ("base", "node_id")

    def __init__(self, node_id: str) -> None:
        if not valid_node_id(node_id):
            raise LocalWireError(
                Fault.BAD_TOPIC,
                f"node id {node_id!r} must be <12-digit village code>-<name>, e.g. 450102001001-a",
            )
        self.node_id = node_id
        self.base = f"{TOPIC_ROOT}/{node_id}"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def health(self) -> str:
        return f"{self.base}/health"

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def event_alarm(self) -> str:
        return f"{self.base}/event/alarm"

    def event_for(self, priority: Priority) -> str:
        """The topic an event of ``priority`` is published on: alarms on the alarm lane."""
        return self.event_alarm if priority is Priority.ALARM else self.event

    def device(self, device_id: str) -> str:
        if not DEVICE_ID_RE.match(device_id):
            raise LocalWireError(Fault.BAD_TOPIC, f"not a device id: {device_id!r}")
        return f"{self.base}/device/{device_id}"

    @property
    def cmd_req(self) -> str:
        return f"{self.base}/cmd/req"

    @property
    def cmd_res(self) -> str:
        return f"{self.base}/cmd/res"

    @property
    def cert_req(self) -> str:
        return f"{self.base}/cert/req"

    @property
    def cert_res(self) -> str:
        return f"{self.base}/cert/res"

    @property
    def meet_req(self) -> str:
        return f"{self.base}/meet/req"

    @property
    def meet_res(self) -> str:
        return f"{self.base}/meet/res"

    @property
    def ack(self) -> str:
        return f"{self.base}/ack"

    def owns(self, topic: str) -> bool:
        """True if ``topic`` is inside this node's subtree (e.g. a command's response topic)."""
        return topic.startswith(self.base + "/")


#: Central's capabilities, retained (wire.messages.CentralCaps); every node reads it.
CENTRAL_CAPS_TOPIC = f"{TOPIC_ROOT}/central/caps"

#: A county broker's bridge to the city broker (docs/scale.md): mosquitto publishes ``1`` there,
#: retained, when the bridge connects, and the city broker publishes the bridge's will ``0`` when
#: the bridge is lost. Six digits: the county's statistical code.
BRIDGE_STATE_SUBSCRIPTION = f"{TOPIC_ROOT}/bridge/+/state"
COUNTY_CODE_RE = re.compile(r"^\d{6}$")


def bridge_state_topic(county: str) -> str:
    """The notification topic of the bridge of ``county`` (a 6-digit code)."""
    if not COUNTY_CODE_RE.match(county):
        raise LocalWireError(Fault.BAD_TOPIC, f"not a county code: {county!r}")
    return f"{TOPIC_ROOT}/bridge/{county}/state"


def bridge_county(topic: str) -> str | None:
    """The county of a bridge notification topic; None if ``topic`` is not one."""
    parts = topic.split("/")
    if len(parts) != _ROOT_LEVELS + 3 or "/".join(parts[:_ROOT_LEVELS]) != TOPIC_ROOT:
        return None
    if parts[_ROOT_LEVELS] != "bridge" or parts[-1] != "state":
        return None
    county = parts[_ROOT_LEVELS + 1]
    return county if COUNTY_CODE_RE.match(county) else None


def parse_bridge_state(county: str, payload: bytes) -> bool:
    """Whether the bridge of ``county`` is up: ``1`` up, ``0`` down (mosquitto's notification
    payloads); :class:`RemoteWireError` (SCHEMA) for anything else."""
    if payload == b"1":
        return True
    if payload == b"0":
        return False
    raise RemoteWireError(
        Fault.SCHEMA, f"bridge state of county {county} must be 1 or 0, got {payload[:40]!r}"
    )


#: What central's main session subscribes to (everything nodes send but the alarm lane; not the
#: requests it sends itself). ``+/event`` does not match ``+/event/alarm``: no message is
#: delivered to both sessions.
CENTRAL_SUBSCRIPTIONS: tuple[str, ...] = (
    f"{TOPIC_ROOT}/+/state",
    f"{TOPIC_ROOT}/+/health",
    f"{TOPIC_ROOT}/+/event",
    f"{TOPIC_ROOT}/+/device/+",
    f"{TOPIC_ROOT}/+/cmd/res",
    f"{TOPIC_ROOT}/+/cert/req",
    f"{TOPIC_ROOT}/+/meet/res",
    BRIDGE_STATE_SUBSCRIPTION,
)
#: What central's alarm session subscribes to: alarm-priority events only, so that they never
#: queue behind history in the broker.
CENTRAL_ALARM_SUBSCRIPTIONS: tuple[str, ...] = (f"{TOPIC_ROOT}/+/event/alarm",)


def shared_subscriptions(group: str) -> tuple[str, ...]:
    """Central's subscriptions (both sessions' topics) as MQTT 5 shared subscriptions of
    ``group``: the broker hands each message to one member of the group."""
    return tuple(f"$share/{group}/{t}" for t in CENTRAL_SUBSCRIPTIONS + CENTRAL_ALARM_SUBSCRIPTIONS)


def parse_topic(topic: str) -> Route:
    """Parse a topic of the contract; :class:`RemoteWireError` (BAD_TOPIC) otherwise."""
    parts = topic.split("/")
    if len(parts) < _ROOT_LEVELS + 2 or "/".join(parts[:_ROOT_LEVELS]) != TOPIC_ROOT:
        raise RemoteWireError(Fault.BAD_TOPIC, f"not a shilian/v1 topic: {topic[:200]!r}")
    node_id = parts[_ROOT_LEVELS]
    if not valid_node_id(node_id):
        raise RemoteWireError(Fault.BAD_TOPIC, f"bad node id in topic: {topic[:200]!r}")
    rest = parts[_ROOT_LEVELS + 1 :]
    if len(rest) == 1:
        try:
            kind = Kind(rest[0])
        except ValueError:
            raise RemoteWireError(Fault.BAD_TOPIC, f"unknown topic: {topic[:200]!r}") from None
        if kind in (Kind.STATE, Kind.HEALTH, Kind.EVENT, Kind.ACK):
            return Route(node_id, kind)
    elif len(rest) == 2:
        if rest[0] == "device" and DEVICE_ID_RE.match(rest[1]):
            return Route(node_id, Kind.DEVICE, rest[1])
        if rest[0] == "event" and rest[1] == "alarm":
            return Route(node_id, Kind.EVENT_ALARM)
        if rest[0] in ("cmd", "cert", "meet") and rest[1] in ("req", "res"):
            return Route(node_id, Kind(f"{rest[0]}/{rest[1]}"))
    raise RemoteWireError(Fault.BAD_TOPIC, f"unknown topic: {topic[:200]!r}")
