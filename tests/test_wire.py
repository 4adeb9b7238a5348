"""The wire contract: topics and the payload codec (pure; no broker)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire import (
    MAX_PAYLOAD_BYTES,
    CommandResponse,
    DeviceState,
    Event,
    Fault,
    Health,
    Kind,
    LocalWireError,
    NodeState,
    Priority,
    RemoteWireError,
    Topics,
    decode,
    encode,
    parse_topic,
)
from wire.codec import SCHEMAS
from wire.messages import AnyMessage
from wire.topics import Route

NODE = "450102001001-a"
BOOT = "0" * 31 + "1"


def test_topics_round_trip() -> None:
    t = Topics(NODE)
    assert parse_topic(t.state).kind is Kind.STATE
    assert parse_topic(t.event).node_id == NODE
    r = parse_topic(t.device("cam1"))
    assert (r.kind, r.device_id, r.village) == (Kind.DEVICE, "cam1", "450102001001")
    assert parse_topic(t.cmd_res).kind is Kind.CMD_RES
    assert t.owns(t.cmd_res) and not t.owns(Topics("450102001001-b").cmd_res)


def test_alarms_have_a_lane_of_their_own_that_only_central_s_alarm_session_takes() -> None:
    from paho.mqtt.client import topic_matches_sub

    from wire import Priority
    from wire.topics import CENTRAL_ALARM_SUBSCRIPTIONS, CENTRAL_SUBSCRIPTIONS

    t = Topics(NODE)
    assert t.event_for(Priority.ALARM) == t.event_alarm == f"shilian/v1/{NODE}/event/alarm"
    assert t.event_for(Priority.DEVICE) == t.event_for(Priority.INFO) == t.event
    assert parse_topic(t.event_alarm) == Route(NODE, Kind.EVENT_ALARM)
    assert parse_topic(t.event) == Route(NODE, Kind.EVENT)

    def takes(subs: tuple[str, ...], topic: str) -> bool:
        return any(topic_matches_sub(s, topic) for s in subs)

    # each message reaches exactly one of central's sessions
    assert takes(CENTRAL_ALARM_SUBSCRIPTIONS, t.event_alarm)
    assert not takes(CENTRAL_SUBSCRIPTIONS, t.event_alarm)
    for topic in (t.state, t.health, t.event, t.device("cam1"), t.cmd_res, t.cert_req):
        assert takes(CENTRAL_SUBSCRIPTIONS, topic), topic
        assert not takes(CENTRAL_ALARM_SUBSCRIPTIONS, topic), topic


@pytest.mark.parametrize(
    "topic",
    [
        "shilian/v1/450102001001-a",
        "shilian/v2/450102001001-a/state",
        "shilian/v1/4501-a/state",
        "shilian/v1/450102001001-A/state",
        "shilian/v1/450102001001-a/nope",
        "shilian/v1/450102001001-a/device/../x",
        "other/450102001001-a/state",
    ],
)
def test_bad_topics_are_remote_errors(topic: str) -> None:
    with pytest.raises(RemoteWireError) as e:
        parse_topic(topic)
    assert e.value.fault is Fault.BAD_TOPIC


def test_bad_node_id_is_local_error() -> None:
    with pytest.raises(LocalWireError):
        Topics("not-a-node")


def _event(**kw: object) -> Event:
    base: dict[str, object] = {
        "node": NODE,
        "boot_id": BOOT,
        "seq": 1,
        "ts": 1.0,
        "priority": Priority.ALARM,
        "kind": "panic",
    }
    base.update(kw)
    return Event.model_validate(base)


def test_event_round_trip_and_unknown_fields_ignored() -> None:
    ev = _event(data={"zone": 3})
    raw = json.loads(encode(ev))
    raw["added_in_v1_1"] = "ignored"
    back = decode(Event, json.dumps(raw).encode(), node_id=NODE)
    assert back == ev


@pytest.mark.parametrize(
    ("payload", "fault"),
    [
        (b"{not json", Fault.INVALID_JSON),
        (b'{"v": 1}', Fault.SCHEMA),
        (b"[]", Fault.SCHEMA),
        (b"x" * (MAX_PAYLOAD_BYTES + 1), Fault.OVERSIZE),
    ],
)
def test_bad_payloads(payload: bytes, fault: Fault) -> None:
    with pytest.raises(RemoteWireError) as e:
        decode(Event, payload)
    assert e.value.fault is fault


def test_unknown_version() -> None:
    raw = json.loads(encode(_event()))
    raw["v"] = 2
    with pytest.raises(RemoteWireError) as e:
        decode(Event, json.dumps(raw).encode())
    assert e.value.fault is Fault.UNKNOWN_VERSION
    # a v2 payload that also changed its fields is still reported as a version problem
    with pytest.raises(RemoteWireError) as e:
        decode(Event, b'{"v": 2, "something": "else"}')
    assert e.value.fault is Fault.UNKNOWN_VERSION


def test_identity_in_payload_cannot_override_topic() -> None:
    with pytest.raises(RemoteWireError) as e:
        decode(Event, encode(_event()), node_id="450102001001-b")
    assert e.value.fault is Fault.IDENTITY_MISMATCH


def test_encode_refuses_oversize() -> None:
    with pytest.raises(LocalWireError) as e:
        encode(_event(data={"blob": "x" * MAX_PAYLOAD_BYTES}))
    assert e.value.fault is Fault.OVERSIZE


def test_state_defaults() -> None:
    s = NodeState(node=NODE, state="online", boot_id=BOOT, birth_seq=1, ts=0, reason="connect")
    assert decode(NodeState, encode(s)).health_interval_s == 30.0
    h = Health.model_validate(
        {
            "node": NODE,
            "boot_id": BOOT,
            "ts": 1,
            "interval_s": 30,
            "uptime_s": 1,
            "sw_version": "0.1.0",
            "cpu_pct": 1,
            "mem_used_pct": 2,
            "disk_used_pct": 3,
            "outbox_depth": 0,
        }
    )
    assert decode(Health, encode(h), node_id=NODE) == h


@given(st.binary(max_size=2048), st.sampled_from(sorted(SCHEMAS, key=str)))
def test_any_bytes_give_a_message_or_a_typed_error(payload: bytes, kind: Kind) -> None:
    try:
        decode(SCHEMAS[kind], payload, node_id=NODE)
    except RemoteWireError as e:
        assert isinstance(e.fault, Fault)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from(["v", "node", "boot_id", "seq", "ts", "kind"]), _json))
def test_any_json_object_gives_a_message_or_a_typed_error(obj: dict[str, object]) -> None:
    try:
        decode(Event, json.dumps(obj).encode(), node_id=NODE)
    except RemoteWireError as e:
        assert isinstance(e.fault, Fault)


@pytest.mark.parametrize("schema", [NodeState, Health, Event, DeviceState, CommandResponse])
def test_v_is_required_as_documented(schema: type[Any]) -> None:
    """docs/protocol.md: every payload carries ``v``. Without it the payload is refused (schema),
    so a client that forgets it learns at once instead of being read as v1 by chance."""
    examples: dict[type[Any], AnyMessage] = {
        NodeState: NodeState(
            node=NODE, state="online", boot_id="a" * 32, birth_seq=1, ts=1.0, reason="connect"
        ),
        Health: Health(
            node=NODE,
            boot_id="a" * 32,
            ts=1.0,
            interval_s=30,
            uptime_s=1,
            sw_version="x",
            cpu_pct=1,
            mem_used_pct=1,
            disk_used_pct=1,
            outbox_depth=0,
        ),
        Event: _event(),
        DeviceState: DeviceState(node=NODE, ts=1.0, kind="camera", state="up"),
        CommandResponse: CommandResponse(node=NODE, ok=True),
    }
    raw = json.loads(encode(examples[schema]))
    assert decode(schema, json.dumps(raw).encode(), node_id=NODE) == examples[schema]
    del raw["v"]
    with pytest.raises(RemoteWireError) as e:
        decode(schema, json.dumps(raw).encode(), node_id=NODE)
    assert e.value.fault is Fault.SCHEMA and e.value.detail.startswith("v:")


def test_the_refusal_table_of_protocol_md() -> None:
    """docs/protocol.md names one reason per kind of bad input; a version that is not the
    integer 1 is a version problem even when the rest is valid."""
    raw = json.loads(encode(_event()))
    for v, fault in (("1", Fault.UNKNOWN_VERSION), (2, Fault.UNKNOWN_VERSION)):
        with pytest.raises(RemoteWireError) as e:
            decode(Event, json.dumps({**raw, "v": v}).encode(), node_id=NODE)
        assert e.value.fault is fault
    for payload, fault in (
        (b"\xff\xfe{", Fault.INVALID_JSON),
        (b'"text"', Fault.SCHEMA),
        (json.dumps({**raw, "seq": 0}).encode(), Fault.SCHEMA),  # out of range
        (json.dumps({**raw, "boot_id": "XYZ"}).encode(), Fault.SCHEMA),  # pattern
    ):
        with pytest.raises(RemoteWireError) as e:
            decode(Event, payload, node_id=NODE)
        assert e.value.fault is fault, payload
