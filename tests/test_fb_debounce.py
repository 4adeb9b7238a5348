"""Leading-edge debouncing (the default): an alarm is reported at its first transition, chatter
is suppressed, the restore waits until the input is stable; trailing-edge zones filter glitches.
Board time and host time are passed in (no sleeps)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge.board_source import BoardSource
from edge.config import parse_config
from firmware_bridge.alarms import Alarm, AlarmKind
from firmware_bridge.zones import DEFAULT_DEBOUNCE_MS, Debounce, Decision, Zone, Zones

PANIC = Zone(1, AlarmKind.PANIC, "紧急按钮")  # defaults: leading edge, 50 ms
DOOR_NC = Zone(2, AlarmKind.INTRUSION, "东门", normally_closed=True, debounce_ms=100)
SHOCK = Zone(3, AlarmKind.INTRUSION, "震动", debounce_ms=100, debounce=Debounce.TRAILING)


def kinds(ds: list[Decision[str]]) -> list[str | None]:
    return [str(d.alarm.kind) if isinstance(d.alarm, Alarm) else None for d in ds]


def test_default_zone_is_leading_edge_with_a_50ms_window() -> None:
    assert (PANIC.debounce, PANIC.debounce_ms) == (Debounce.LEADING, DEFAULT_DEBOUNCE_MS)


def test_the_first_transition_is_reported_at_once() -> None:
    z: Zones[str] = Zones([PANIC])
    z.input_changed("k1", 1, True, board_ms=1000, now=10.0)
    [d] = z.decisions()  # no waiting for the debounce, no timer needed
    assert isinstance(d.alarm, Alarm) and d.alarm.kind is AlarmKind.PANIC
    assert d.acks == ("k1",) and d.alarm.detail["board_ms"] == 1000
    assert z.next_deadline() is None  # nothing pending: the alarm is out


def test_chatter_after_the_press_is_suppressed_and_acked() -> None:
    z: Zones[str] = Zones([PANIC])
    z.input_changed("k1", 1, True, board_ms=1000, now=10.0)
    # the contact bounces for 12 ms after closing: open/close/open/close
    z.input_changed("k2", 1, False, board_ms=1003, now=10.003)
    z.input_changed("k3", 1, True, board_ms=1005, now=10.005)
    z.input_changed("k4", 1, False, board_ms=1009, now=10.009)
    z.input_changed("k5", 1, True, board_ms=1012, now=10.012)
    ds = z.decisions()
    assert kinds(ds) == ["panic", None, None]  # one alarm; two cancelled restores
    assert [k for d in ds for k in d.acks] == ["k1", "k2", "k3", "k4", "k5"]
    assert z.next_deadline() is None
    z.on_timer(20.0)
    assert z.decisions() == []  # still held: no restore


def test_restore_only_after_the_input_is_stable_for_the_window() -> None:
    z: Zones[str] = Zones([PANIC])
    z.input_changed("k1", 1, True, board_ms=1000, now=10.0)
    z.input_changed("k2", 1, False, board_ms=1500, now=10.5)  # released
    assert kinds(z.decisions()) == ["panic"]
    assert z.next_deadline() is not None
    z.on_timer(10.549)
    assert z.decisions() == []  # released for 49 ms: not yet
    z.on_timer(10.55)
    [r] = z.decisions()
    assert isinstance(r.alarm, Alarm) and r.alarm.kind is AlarmKind.RESTORE
    assert r.alarm.restores is AlarmKind.PANIC and r.acks == ("k2",)
    # pressed again later: a new alarm at once
    z.input_changed("k3", 1, True, board_ms=3000, now=12.0)
    assert kinds(z.decisions()) == ["panic"]


def test_release_chatter_gives_one_restore_timed_from_the_last_release() -> None:
    z: Zones[str] = Zones([PANIC])
    z.input_changed("k1", 1, True, board_ms=1000, now=10.0)
    z.input_changed("k2", 1, False, board_ms=2000, now=11.0)
    z.input_changed("k3", 1, True, board_ms=2010, now=11.01)  # bounce back within 50 ms
    z.input_changed("k4", 1, False, board_ms=2020, now=11.02)
    z.on_timer(11.06)
    assert z.decisions()[-1].alarm is None  # 40 ms after the last release: not yet
    z.on_timer(11.07)
    ds = z.decisions()
    assert kinds(ds) == ["restore"] and ds[0].acks == ("k4",)


def test_a_glitch_is_an_alarm_on_a_leading_zone_but_noise_on_a_trailing_one() -> None:
    z: Zones[str] = Zones([PANIC, SHOCK])
    for inp, k in ((1, "a"), (3, "b")):  # a 5 ms pulse on each
        z.input_changed(k + "1", inp, True, board_ms=1000, now=10.0)
        z.input_changed(k + "2", inp, False, board_ms=1005, now=10.005)
    z.on_timer(11.0)
    ds = z.decisions()
    alarms = [(d.alarm.zone, str(d.alarm.kind)) for d in ds if isinstance(d.alarm, Alarm)]
    assert alarms == [(1, "panic"), (1, "restore")]  # the shock sensor's glitch: nothing
    assert sorted(k for d in ds for k in d.acks) == ["a1", "a2", "b1", "b2"]


def test_trailing_zone_waits_out_the_window_before_its_alarm() -> None:
    z: Zones[str] = Zones([SHOCK])
    z.input_changed("k1", 3, True, board_ms=1000, now=10.0)
    assert z.decisions() == []
    z.on_timer(10.1)
    assert kinds(z.decisions()) == ["intrusion"]


def test_normally_closed_leading_zone_alarms_on_open() -> None:
    z: Zones[str] = Zones([DOOR_NC])
    z.input_changed("k1", 2, False, board_ms=1000, now=10.0)  # contact opens: alarm at once
    assert kinds(z.decisions()) == ["intrusion"]
    z.input_changed("k2", 2, True, board_ms=1400, now=10.4)
    z.on_timer(10.5)
    assert kinds(z.decisions()) == ["restore"]


def test_alarm_learned_late_after_a_long_release_is_restore_then_alarm_in_order() -> None:
    z: Zones[str] = Zones([PANIC])
    z.input_changed("k1", 1, True, board_ms=1000, now=10.0)
    z.input_changed("k2", 1, False, board_ms=1100, now=10.1)
    # the link was down: the next press arrives late, its board time long after the release
    z.input_changed("k3", 1, True, board_ms=9000, now=10.12)
    assert kinds(z.decisions()) == ["panic", "restore", "panic"]


@given(
    st.lists(
        st.tuples(st.sampled_from([1, 2, 3]), st.booleans(), st.integers(0, 300)),
        max_size=60,
    )
)
def test_every_event_acked_once_and_alarm_restore_alternate(
    changes: list[tuple[int, bool, int]],
) -> None:
    z: Zones[int] = Zones([PANIC, DOOR_NC, SHOCK])
    board_ms, now = 0, 100.0
    out: list[Decision[int]] = []
    for i, (inp, active, dt) in enumerate(changes):
        board_ms += dt
        now += dt / 1000
        z.on_timer(now)
        z.input_changed(i, inp, active, board_ms, now)
        out += z.decisions()
    z.on_timer(now + 11)
    out += z.decisions()
    assert z.next_deadline() is None
    assert sorted(k for d in out for k in d.acks) == list(range(len(changes)))
    for zone in (1, 2, 3):
        seq = [d.alarm.kind for d in out if isinstance(d.alarm, Alarm) and d.alarm.zone == zone]
        assert all((k is AlarmKind.RESTORE) == (i % 2 == 1) for i, k in enumerate(seq))


def test_debounce_mode_in_the_edge_config() -> None:
    cfg = parse_config(
        {
            "node_id": "450102001003-a",
            "alarm_board": {
                "device": "/dev/ttyS1",
                "zones": [
                    {"input": 1, "kind": "panic"},
                    {"input": 2, "kind": "intrusion", "debounce": "trailing", "debounce_ms": 200},
                ],
            },
        }
    )
    assert cfg.alarm_board is not None
    zones = BoardSource.from_config(cfg.alarm_board).zones.zones
    assert [(z.debounce, z.debounce_ms) for z in zones] == [
        (Debounce.LEADING, 50),
        (Debounce.TRAILING, 200),
    ]
