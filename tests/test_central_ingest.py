"""The pure cores of central: ingest, liveness, the log limiter, the reconnect backoff. No I/O:
time is a number passed in."""

from __future__ import annotations

import json
import uuid

import pytest

import wire
from central.ingest import Ingest
from central.liveness import WILL_CONFIRM_S, Liveness
from central.store import DeviceRow, EventRow, GapsRow, HealthRow, IntervalRow, NodeRow, Snapshot
from resilience.log_limiter import LogLimiter
from wire import Fault

VILLAGE = "450102001003"
OTHER_VILLAGE = "450102001004"
NODE = f"{VILLAGE}-a"
NODE_B = f"{OTHER_VILLAGE}-a"
BOOT = uuid.uuid4().hex
BOOT2 = uuid.uuid4().hex


def make_ingest(snapshot: Snapshot | None = None, reconnect_grace_s: float | None = None) -> Ingest:
    villages = {VILLAGE, OTHER_VILLAGE}
    lv = Liveness() if reconnect_grace_s is None else Liveness(reconnect_grace_s=reconnect_grace_s)
    return Ingest(snapshot or Snapshot({}, {}), villages.__contains__, lv)


def state(
    node: str = NODE,
    st: str = "online",
    birth: int = 1,
    boot: str = BOOT,
    reason: str = "connect",
    interval: float = 30.0,
) -> tuple[str, bytes]:
    msg = wire.NodeState(
        node=node,
        state=st,  # type: ignore[arg-type]
        boot_id=boot,
        birth_seq=birth,
        ts=1.0,
        reason=reason,  # type: ignore[arg-type]
        health_interval_s=interval,
    )
    return wire.Topics(node).state, wire.encode(msg)


def health(node: str = NODE, boot: str = BOOT, interval: float = 30.0) -> tuple[str, bytes]:
    msg = wire.Health(
        node=node,
        boot_id=boot,
        ts=2.0,
        interval_s=interval,
        uptime_s=5,
        sw_version="0.1.0",
        cpu_pct=1,
        mem_used_pct=2,
        disk_used_pct=3,
        outbox_depth=0,
    )
    return wire.Topics(node).health, wire.encode(msg)


def event(seq: int, node: str = NODE, boot: str = BOOT) -> tuple[str, bytes]:
    msg = wire.Event(
        node=node, boot_id=boot, seq=seq, ts=3.0, priority=wire.Priority.INFO, kind="test"
    )
    return wire.Topics(node).event, wire.encode(msg)


def alarm(seq: int, node: str = NODE, boot: str = BOOT) -> tuple[str, bytes]:
    """An alarm-priority event on the alarm lane, as the edge sends it."""
    msg = wire.Event(
        node=node, boot_id=boot, seq=seq, ts=3.0, priority=wire.Priority.ALARM, kind="panic"
    )
    return wire.Topics(node).event_for(wire.Priority.ALARM), wire.encode(msg)


def feed(ing: Ingest, msg: tuple[str, bytes], now: float = 100.0) -> object:
    return ing.handle(msg[0], msg[1], now)


def test_online_then_will_then_stale_death_ignored() -> None:
    ing = make_ingest()
    out = ing.handle(*state(birth=5), 100.0)
    assert out.fault is None and out.ignored is None
    writes, changes = ing.take()
    assert changes == [(NODE, False), (NODE, True)]
    assert ing.nodes[NODE].state == "online"
    assert any(isinstance(w, IntervalRow) and w.state == "online" for w in writes)
    assert any(isinstance(w, NodeRow) and w.state == "online" for w in writes)

    # A stale death (older birth) must not override the newer birth.
    out = ing.handle(*state(st="offline", birth=4, reason="will"), 101.0)
    assert out.ignored == "stale_state"
    assert ing.nodes[NODE].state == "online"
    assert ing.take()[1] == []

    # The matching death (same birth) applies, a confirmation period later (liveness.py).
    out = ing.handle(*state(st="offline", birth=5, reason="will"), 102.0)
    assert out.ignored is None
    assert ing.nodes[NODE].state == "online"
    assert ing.expire(102.0 + WILL_CONFIRM_S / 2) == []
    ing.handle(*health(), 102.5)  # health does not undo a will
    assert ing.expire(102.0 + WILL_CONFIRM_S) == [NODE]
    assert ing.nodes[NODE].state == "offline" and ing.nodes[NODE].state_reason == "will"
    assert ing.take()[1] == [(NODE, False)]
    assert ing.liveness.deadline(NODE) is None

    # Its birth redelivered after the death is stale; a newer birth applies.
    assert ing.handle(*state(birth=5), 103.5).ignored == "stale_state"
    assert ing.nodes[NODE].state == "offline"
    ing.handle(*state(birth=6, boot=BOOT2), 104.0)
    assert ing.nodes[NODE].state == "online" and ing.nodes[NODE].boot_id == BOOT2


def test_a_clean_stop_applies_at_once() -> None:
    ing = make_ingest()
    ing.handle(*state(birth=2), 100.0)
    ing.handle(*state(st="offline", birth=2, reason="stopped"), 101.0)
    assert ing.nodes[NODE].state == "offline" and ing.nodes[NODE].state_reason == "stopped"


def test_wills_of_a_broker_restart_do_not_collapse_coverage() -> None:
    """mosquitto publishes every node's will when it shuts down and keeps it retained: central
    holds them through the grace period after its reconnect; the nodes' new births win. (Here
    without the reconnect window, which the next test adds.)"""
    ing = make_ingest(reconnect_grace_s=0.0)
    ing.handle(*state(birth=1, interval=10.0), 100.0)
    ing.handle(*state(node=NODE_B, birth=1, interval=10.0), 100.0)
    ing.take()
    # the broker shuts down: wills arrive, then central's connection drops (no ticks meanwhile)
    ing.handle(*state(st="offline", birth=1, reason="will"), 200.0)
    ing.handle(*state(node=NODE_B, st="offline", birth=1, reason="will"), 200.0)
    # reconnect at 230: a full grace period (15 s) for everyone, then retained wills again
    ing.liveness.reset(230.0, ing.online_nodes())
    ing.handle(*state(st="offline", birth=1, reason="will"), 230.1)
    ing.handle(*state(node=NODE_B, st="offline", birth=1, reason="will"), 230.1)
    assert ing.expire(244.9) == []
    ing.handle(*state(birth=2, interval=10.0), 236.0)  # NODE is back with a new birth
    assert ing.expire(245.0) == [NODE_B]  # NODE_B really died
    assert ing.nodes[NODE].state == "online"
    assert ing.nodes[NODE_B].state_reason == "will"
    assert ing.take()[1] == [(NODE_B, False)]


def test_retained_birth_redelivered_changes_nothing() -> None:
    ing = make_ingest()
    ing.handle(*state(birth=3), 100.0)
    ing.take()
    out = ing.handle(*state(birth=3), 200.0)
    assert out.ignored is None and out.fault is None
    writes, changes = ing.take()
    assert changes == [] and not any(isinstance(w, IntervalRow) for w in writes)


def test_health_timeout_and_revival_by_health_of_same_boot() -> None:
    ing = make_ingest()
    ing.handle(*state(interval=10.0), 100.0)
    ing.take()
    assert ing.expire(114.9) == []
    ing.handle(*health(interval=10.0), 110.0)  # deadline moves to 125
    assert ing.expire(120.0) == []
    assert ing.expire(125.0) == [NODE]
    writes, changes = ing.take()
    assert changes == [(NODE, False)]
    assert ing.nodes[NODE].state_reason == "health_timeout"
    assert any(isinstance(w, IntervalRow) and w.reason == "health_timeout" for w in writes)

    # Health from another boot does not revive it (that node must announce a birth first).
    ing.handle(*health(boot=BOOT2, interval=10.0), 126.0)
    assert ing.nodes[NODE].state == "offline"
    ing.handle(*health(interval=10.0), 127.0)
    assert ing.nodes[NODE].state == "online" and ing.nodes[NODE].state_reason == "health"
    assert ing.take()[1] == [(NODE, True)]


def test_health_is_stored_with_last_health_on_the_node() -> None:
    ing = make_ingest()
    ing.handle(*state(), 100.0)
    ing.handle(*health(), 101.0)
    writes, _ = ing.take()
    hw = [w for w in writes if isinstance(w, HealthRow)]
    assert len(hw) == 1 and json.loads(hw[0].body)["uptime_s"] == 5
    node = [w for w in writes if isinstance(w, NodeRow)][-1]
    assert node.last_health == hw[0].body


def test_events_deduplicated_and_gaps_opened_and_closed_out_of_order() -> None:
    ing = make_ingest()
    assert feed(ing, event(1)).ignored is None  # type: ignore[attr-defined]
    assert feed(ing, event(1)).ignored == "duplicate"  # type: ignore[attr-defined]
    out = ing.handle(*event(5), 100.0)
    assert out.gaps_opened == 1
    writes, _ = ing.take()
    assert [w.gaps for w in writes if isinstance(w, GapsRow)] == [((2, 4, 100.0),)]
    # alarms overtake lower priorities: 3 arrives before 2 and 4
    for seq in (3, 2):
        assert ing.handle(*event(seq), 101.0).ignored is None
    assert ing.handle(*event(3), 101.0).ignored == "duplicate"
    writes, _ = ing.take()
    assert [w.gaps for w in writes if isinstance(w, GapsRow)] == [((4, 4, 100.0),)]
    assert ing.handle(*event(4), 102.0).ignored is None
    writes, _ = ing.take()
    assert [w.gaps for w in writes if isinstance(w, GapsRow)] == [()]
    assert sorted(w.seq for w in writes if isinstance(w, EventRow)) == [4]
    # another boot has its own sequence
    assert ing.handle(*event(1, boot=BOOT2), 103.0).ignored is None


def test_an_alarm_on_its_lane_ahead_of_older_history_leaves_no_gap_and_no_duplicate() -> None:
    """The alarm session delivers an alarm before the main session's older history of the same
    node: the alarm is stored, the history after it is not taken for duplicates, and once it has
    all arrived no gap is left open. Dedupe spans both topics."""
    ing = make_ingest()
    assert alarm(1)[0].endswith("/event/alarm")
    assert [ing.handle(*event(s), 100.0).ignored for s in (1, 2)] == [None, None]
    out = ing.handle(*alarm(7), 101.0)  # seqs 3-6 still queued on the main session
    assert (out.kind, out.ignored, out.gaps_opened) == ("event/alarm", None, 1)
    assert [ing.handle(*event(s), 102.0).ignored for s in (3, 4, 5, 6)] == [None] * 4
    writes, _ = ing.take()
    assert sorted(w.seq for w in writes if isinstance(w, EventRow)) == [1, 2, 3, 4, 5, 6, 7]
    assert [w.gaps for w in writes if isinstance(w, GapsRow)] == [()]
    assert ing.seqs[(NODE, BOOT)].gaps == []
    # the same seq again on either topic (a redelivery) is a duplicate
    assert ing.handle(*alarm(7), 103.0).ignored == "duplicate"
    assert ing.handle(*event(7), 103.0).ignored == "duplicate"
    assert ing.handle(*alarm(3), 103.0).ignored == "duplicate"


def test_device_upsert_and_removal() -> None:
    ing = make_ingest()
    d = wire.DeviceState(node=NODE, ts=1.0, kind="camera", state="up", name="门口")
    topic = wire.Topics(NODE).device("cam1")
    ing.handle(topic, wire.encode(d), 100.0)
    ing.handle(topic, b"", 101.0)
    writes, _ = ing.take()
    rows = [w for w in writes if isinstance(w, DeviceRow)]
    assert [(r.kind, r.state, r.removed) for r in rows] == [("camera", "up", 0), ("", "unknown", 1)]


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (wire.Topics(NODE).event, b"{not json", Fault.INVALID_JSON),
        (wire.Topics(NODE).event, b'{"v":1,"node":"x"}', Fault.SCHEMA),
        (wire.Topics(NODE).event, b"x" * (wire.MAX_PAYLOAD_BYTES + 1), Fault.OVERSIZE),
        (wire.Topics(NODE).health, b'{"v":2,"node":"450102001003-a"}', Fault.UNKNOWN_VERSION),
        (wire.Topics(NODE).event, event(1, node=NODE_B)[1], Fault.IDENTITY_MISMATCH),
        (wire.Topics(NODE).state, state(node=NODE_B)[1], Fault.IDENTITY_MISMATCH),
        ("shilian/v1/999999999999-a/event", event(1)[1], Fault.UNKNOWN_VILLAGE),
        ("shilian/v1/not-a-node/event", b"{}", Fault.BAD_TOPIC),
        ("something/else", b"{}", Fault.BAD_TOPIC),
    ],
)
def test_bad_input_is_refused_by_reason_and_writes_nothing(
    topic: str, payload: bytes, reason: Fault
) -> None:
    ing = make_ingest()
    ing.handle(*state(node=NODE_B), 99.0)
    ing.take()
    out = ing.handle(topic, payload, 100.0)
    assert out.fault == reason
    assert ing.take() == ([], [])
    assert NODE not in ing.nodes  # nobody's state changed through someone else's topic
    assert ing.nodes[NODE_B].last_seen == 99.0


def test_command_response_is_decoded_for_the_command_client() -> None:
    ing = make_ingest()
    resp = wire.CommandResponse(node=NODE, ok=True, result={"pong": 1})
    out = ing.handle(wire.Topics(NODE).cmd_res, wire.encode(resp), 100.0)
    assert out.response == resp and ing.take() == ([], [])


def test_liveness_reset_gives_a_full_grace_period() -> None:
    lv = Liveness(reconnect_grace_s=0.0)
    lv.alive("a", 10.0, 0.0)
    lv.alive("b", 20.0, 0.0)
    # central was deaf from t=5 to t=100: at reconnect, nobody is timed out for that silence
    lv.reset(100.0, [("a", 10.0), ("b", 20.0)])
    assert lv.tick(114.0) == []
    assert lv.tick(115.0) == ["a"]
    assert lv.tick(130.0) == ["b"]
    assert len(lv) == 0
    # with the reconnect window, the longer of the two holds
    lv = Liveness(reconnect_grace_s=25.0)
    lv.reset(100.0, [("a", 10.0), ("b", 20.0)])
    assert lv.tick(124.9) == []
    assert lv.tick(125.0) == ["a"]
    assert lv.tick(130.0) == ["b"]


def test_liveness_heap_stays_bounded() -> None:
    lv = Liveness()
    for i in range(100_000):
        lv.alive("a", 1.0, float(i))
    assert len(lv._heap) < 3000
    assert lv.next_deadline() == 99_999 + 1.5


def test_log_limiter_once_per_key_per_window() -> None:
    lim = LogLimiter(60.0)
    assert lim.allow(("n", "schema"), 0.0)
    assert not lim.allow(("n", "schema"), 59.0)
    assert lim.allow(("n", "oversize"), 59.0)
    assert lim.allow(("n", "schema"), 60.0)


def test_after_a_reconnect_nodes_are_held_for_their_whole_reconnect_window() -> None:
    """A broker outage longer than a minute: a node may wait its whole backoff cap before it
    reconnects, so central holds it (and its retained will) for the reconnect window, not for
    1.5 x its interval; its own new birth ends the hold, and a death after it applies at once."""
    from wire.limits import RECONNECT_CAP_S, RECONNECT_GRACE_S

    assert RECONNECT_GRACE_S >= RECONNECT_CAP_S + 1.5 * 10.0  # cap, jitter inside it, connect
    ing = make_ingest()
    ing.handle(*state(birth=1, interval=10.0), 100.0)
    ing.handle(*state(node=NODE_B, birth=1, interval=10.0), 100.0)
    ing.take()
    ing.handle(*state(st="offline", birth=1, reason="will"), 200.0)  # broker shutting down
    ing.handle(*state(node=NODE_B, st="offline", birth=1, reason="will"), 200.0)
    ing.liveness.reset(320.0, ing.online_nodes())  # back after 120 s
    ing.handle(*state(st="offline", birth=1, reason="will"), 320.1)  # retained wills again
    ing.handle(*state(node=NODE_B, st="offline", birth=1, reason="will"), 320.1)
    assert ing.expire(320.0 + RECONNECT_GRACE_S - 0.1) == []
    ing.handle(*state(birth=2, interval=10.0), 320.0 + RECONNECT_CAP_S)  # NODE, after the cap
    assert ing.nodes[NODE].state == ONLINE_STATE
    ing.handle(*health(interval=10.0), 320.0 + RECONNECT_GRACE_S - 5)
    assert ing.expire(320.0 + RECONNECT_GRACE_S) == [NODE_B]  # never came back: really dead
    assert ing.nodes[NODE_B].state_reason == "will"
    # NODE's own death after its new birth is not held by the grace
    t = 320.0 + RECONNECT_CAP_S + 1
    ing.handle(*state(st="offline", birth=2, reason="will"), t)
    assert ing.expire(t + WILL_CONFIRM_S) == [NODE]


def test_health_after_a_reconnect_does_not_cut_the_hold_short() -> None:
    """Health queued before the outage and delivered after central's reconnect is no birth: the
    node keeps the reconnect window."""
    from wire.limits import RECONNECT_GRACE_S

    ing = make_ingest()
    ing.handle(*state(birth=1, interval=10.0), 100.0)
    ing.liveness.reset(200.0, ing.online_nodes())
    ing.handle(*health(interval=10.0), 200.5)
    assert ing.expire(200.0 + RECONNECT_GRACE_S - 0.1) == []
    assert ing.expire(200.0 + RECONNECT_GRACE_S) == [NODE]
    assert ing.nodes[NODE].state_reason == "health_timeout"


def test_a_replaced_box_comes_online_and_old_deaths_stay_ignored() -> None:
    """New SD card, lost outbox, re-enrolment: birth_seq starts again at 1 under a new boot_id.
    A birth with a new boot_id is a new life; the old box's will or stop is stale."""
    ing = make_ingest()
    ing.handle(*state(birth=57), 100.0)
    ing.handle(*state(st="offline", birth=57, reason="stopped"), 101.0)
    ing.take()
    assert ing.nodes[NODE].state == "offline"
    out = ing.handle(*state(birth=1, boot=BOOT2), 200.0)
    assert out.ignored is None
    assert ing.nodes[NODE].state == ONLINE_STATE and ing.nodes[NODE].boot_id == BOOT2
    assert ing.take()[1] == [(NODE, True)]
    # the old box's will and stop, redelivered or late, do not touch the new life
    for reason in ("will", "stopped"):
        out = ing.handle(*state(st="offline", birth=57, reason=reason), 201.0)
        assert out.ignored == "stale_state"
    assert ing.expire(201.0 + WILL_CONFIRM_S) == []
    assert ing.nodes[NODE].state == ONLINE_STATE
    ing.handle(*health(boot=BOOT2), 210.0)  # the new box's health keeps it alive
    assert ing.liveness.deadline(NODE) == 210.0 + 1.5 * 30.0
    # the new box's own death applies
    ing.handle(*state(st="offline", birth=1, boot=BOOT2, reason="stopped"), 220.0)
    assert ing.nodes[NODE].state == "offline" and ing.nodes[NODE].state_reason == "stopped"


def test_health_of_another_boot_does_not_move_the_deadline() -> None:
    """A stray health (another boot_id, shorter interval) must not take a live node offline."""
    ing = make_ingest()
    ing.handle(*state(birth=3, interval=30.0), 100.0)
    ing.handle(*health(interval=30.0), 110.0)
    assert ing.liveness.deadline(NODE) == 110.0 + 45.0
    ing.handle(*health(boot=BOOT2, interval=1.0), 111.0)
    assert ing.liveness.deadline(NODE) == 110.0 + 45.0
    assert ing.nodes[NODE].health_interval_s == 30.0
    assert ing.expire(120.0) == []
    assert ing.nodes[NODE].state == ONLINE_STATE


def test_offline_transitions_carry_the_api_reason() -> None:
    """One reason, one name: what the metric counts is what the API shows."""
    ing = make_ingest()
    for node in (NODE, NODE_B):
        ing.handle(*state(node=node, birth=1, interval=10.0), 100.0)
    ing.take()
    ing.handle(*state(st="offline", birth=1, reason="will"), 101.0)
    ing.expire(101.0 + WILL_CONFIRM_S)
    ing.expire(116.0)
    assert sorted(ing.take_offline()) == [(NODE, "will"), (NODE_B, "health_timeout")]
    assert ing.take_offline() == []
    ing.handle(*state(birth=2), 120.0)
    ing.handle(*state(st="offline", birth=2, reason="stopped"), 121.0)
    assert ing.take_offline() == [(NODE, "stopped")]
    assert {ing.nodes[NODE].state_reason, ing.nodes[NODE_B].state_reason} == {
        "stopped",
        "health_timeout",
    }


ONLINE_STATE = "online"


def test_more_open_gaps_than_kept_loses_no_event() -> None:
    """A node's device events overtake its information history by more than MAX_OPEN_GAPS
    (a day of backlog): every held-back event must still be stored when it arrives. Past the
    bound, neighbouring gaps are merged (the store's unique key drops any repeat), never
    forgotten: a forgotten gap would turn its events into silent 'duplicates'."""
    from central.ingest import MAX_OPEN_GAPS

    ing = make_ingest()
    n = MAX_OPEN_GAPS + 500
    odds = [2 * i + 1 for i in range(n + 1)]  # every other seq overtakes: one gap each
    assert all(ing.handle(*event(s), 100.0).ignored is None for s in odds)
    assert len(ing.seqs[(NODE, BOOT)].gaps) <= MAX_OPEN_GAPS
    evens = [2 * i for i in range(1, n + 1)]
    assert [s for s in evens if ing.handle(*event(s), 101.0).ignored is not None] == []
    writes, _ = ing.take()
    stored = {w.seq for w in writes if isinstance(w, EventRow)}
    assert set(odds) | set(evens) <= stored
