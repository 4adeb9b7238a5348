"""A county broker's bridge state in the ingest core: while it is down the county's online nodes
are held (reason ``county_link_down``, no health deadline), when it is back their deadlines
restart from that moment. Pure: time is a number passed in."""

from __future__ import annotations

import pytest

from central.ingest import COUNTY_LINK_DOWN, COUNTY_LINK_UP, Ingest
from central.liveness import Liveness
from central.store import IntervalRow, NodeRow, Snapshot
from tests.test_central_ingest import NODE, NODE_B, OTHER_VILLAGE, VILLAGE, health, state
from wire import Fault
from wire.errors import LocalWireError
from wire.topics import BRIDGE_STATE_SUBSCRIPTION, CENTRAL_SUBSCRIPTIONS, bridge_state_topic

COUNTY = VILLAGE[:6]
ELSEWHERE = "450103001001"
NODE_ELSEWHERE = f"{ELSEWHERE}-a"
BRIDGE = bridge_state_topic(COUNTY)


def make_ingest(snapshot: Snapshot | None = None) -> Ingest:
    villages = {VILLAGE, OTHER_VILLAGE, ELSEWHERE}
    return Ingest(snapshot or Snapshot({}, {}), villages.__contains__, Liveness())


def online_fleet(now: float = 100.0) -> Ingest:
    ing = make_ingest()
    for node in (NODE, NODE_B, NODE_ELSEWHERE):
        ing.handle(*state(node=node, interval=10.0), now)
    ing.take()
    return ing


def test_central_subscribes_to_every_county_bridge_state() -> None:
    from paho.mqtt.client import topic_matches_sub

    assert BRIDGE == "shilian/v1/bridge/450102/state"
    assert BRIDGE_STATE_SUBSCRIPTION in CENTRAL_SUBSCRIPTIONS
    assert topic_matches_sub(BRIDGE_STATE_SUBSCRIPTION, BRIDGE)
    with pytest.raises(LocalWireError):
        bridge_state_topic("4501")


def test_a_down_bridge_holds_its_county_past_every_deadline_and_only_its_county() -> None:
    ing = online_fleet()
    out = ing.handle(BRIDGE, b"0", 101.0)
    assert (out.kind, out.fault, out.ignored) == ("bridge", None, None)
    links = ing.take_county_links()
    assert [(c.county, c.up, c.nodes) for c in links] == [(COUNTY, False, 2)]
    writes, changes = ing.take()
    assert changes == []  # still online: coverage unchanged
    assert not any(isinstance(w, IntervalRow) for w in writes)
    held = {w.node_id: w.state_reason for w in writes if isinstance(w, NodeRow)}
    assert held == {NODE: COUNTY_LINK_DOWN, NODE_B: COUNTY_LINK_DOWN}

    # An hour of silence: the held county stays online, the other county's node times out.
    assert ing.expire(3700.0) == [NODE_ELSEWHERE]
    assert ing.nodes[NODE].state == ing.nodes[NODE_B].state == "online"
    assert ing.nodes[NODE].state_reason == COUNTY_LINK_DOWN
    assert ing.held_nodes() == 2


def test_the_bridge_back_restarts_deadlines_from_the_reconnect() -> None:
    ing = online_fleet()
    ing.handle(BRIDGE, b"0", 101.0)
    ing.expire(3700.0)
    ing.take_county_links()
    ing.handle(BRIDGE, b"1", 3700.0)
    assert [(c.up, c.nodes) for c in ing.take_county_links()] == [(True, 2)]
    assert ing.nodes[NODE].state_reason == COUNTY_LINK_UP
    assert ing.liveness.deadline(NODE) == 3715.0  # 1.5 x 10 s from the reconnect
    assert ing.expire(3714.9) == []
    ing.handle(*health(interval=10.0), 3705.0)  # NODE reports; NODE_B stays silent
    assert ing.expire(3715.0) == [NODE_B]
    assert ing.nodes[NODE_B].state_reason == "health_timeout"
    assert ing.nodes[NODE].state == "online"


def test_redelivered_retained_states_change_nothing_and_bad_ones_are_refused() -> None:
    ing = online_fleet()
    ing.handle(BRIDGE, b"1", 101.0)  # up while up: the retained state at every subscribe
    ing.handle(BRIDGE, b"0", 102.0)
    ing.handle(BRIDGE, b"0", 103.0)
    assert len(ing.take_county_links()) == 1
    out = ing.handle(BRIDGE, b"down", 104.0)
    assert out.fault is Fault.SCHEMA and "1 or 0" in out.detail
    assert COUNTY in ing.counties_down  # a bad message changes nothing
    out = ing.handle("shilian/v1/bridge/45/state", b"0", 104.0)
    assert out.fault is Fault.BAD_TOPIC


def test_a_restarted_central_keeps_the_hold_until_the_bridge_says_otherwise() -> None:
    ing = online_fleet()
    ing.handle(BRIDGE, b"0", 101.0)
    ing.take()
    snapshot = Snapshot(dict(ing.nodes), {})  # what the store reloads
    again = make_ingest(snapshot)
    assert again.counties_down == {COUNTY: 100.0}
    again.liveness.reset(200.0, again.online_nodes())
    assert NODE not in again.expire(3700.0)
    again.handle(BRIDGE, b"1", 3700.0)  # the bridge's retained state after the restart
    assert again.nodes[NODE].state_reason == COUNTY_LINK_UP
