"""Zones core (firmware_bridge.zones): board input changes → debounced alarms and restores, and
the rule that every board event is acknowledged exactly once, after its alarm."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.alarms import Alarm, AlarmKind, AlarmSource
from firmware_bridge.zones import Debounce, Decision, Zone, Zones

# Trailing-edge zones: every change waits out its debounce (tests/test_fb_debounce.py has the
# default, leading-edge zones).
T = Debounce.TRAILING
PANIC = Zone(1, AlarmKind.PANIC, "村委会紧急按钮", debounce_ms=50, debounce=T)
DOOR = Zone(
    2,
    AlarmKind.INTRUSION,
    "东门",
    normally_closed=True,
    debounce_ms=100,
    always_armed=False,
    debounce=T,
)
FIRE0 = Zone(3, AlarmKind.FIRE, "烟感", debounce_ms=0)


def kinds(ds: list[Decision]) -> list[tuple[str | None, int | None]]:
    return [
        (str(d.alarm.kind), d.alarm.zone) if isinstance(d.alarm, Alarm) else (None, None)
        for d in ds
    ]


def acked(ds: list[Decision]) -> list[object]:
    return [k for d in ds for k in d.acks]


def test_a_press_held_past_the_debounce_is_one_alarm_then_a_restore() -> None:
    z: Zones[str] = Zones([PANIC])
    z.input_changed("k1", 1, True, board_ms=1000, now=10.0)
    assert z.decisions() == []  # not yet: the debounce has not passed
    assert z.next_deadline() == pytest.approx(10.05)
    z.on_timer(10.049)
    assert z.decisions() == []
    z.on_timer(10.05)
    [d] = z.decisions()
    assert d.acks == ("k1",)
    assert d.alarm == Alarm(
        AlarmKind.PANIC,
        1,
        AlarmSource.BOARD,
        "alarm_board",
        detail={"input": 1, "name": "村委会紧急按钮", "board_ms": 1000},
    )
    assert d.alarm is not None and d.alarm.priority.value == "alarm"
    z.input_changed("k2", 1, False, board_ms=1500, now=10.5)
    z.on_timer(10.55)
    [r] = z.decisions()
    assert isinstance(r.alarm, Alarm) and r.alarm.kind is AlarmKind.RESTORE
    assert r.alarm.restores is AlarmKind.PANIC and r.acks == ("k2",)
    assert r.alarm.priority.value == "device"
    assert z.next_deadline() is None


def test_a_bounce_shorter_than_the_debounce_is_noise_but_still_acked() -> None:
    z: Zones[str] = Zones([PANIC])
    z.input_changed("k1", 1, True, board_ms=1000, now=10.0)
    z.input_changed("k2", 1, False, board_ms=1020, now=10.02)
    [d] = z.decisions()
    assert d.alarm is None and d.acks == ("k1", "k2")
    z.on_timer(20.0)
    assert z.decisions() == []


def test_the_debounce_is_measured_on_the_board_clock_not_arrival() -> None:
    """Both changes arrive together (e.g. after a retransmit): board time decides."""
    z: Zones[str] = Zones([PANIC])
    z.input_changed("k1", 1, True, board_ms=1000, now=50.0)
    z.input_changed("k2", 1, False, board_ms=1200, now=50.0)
    z.on_timer(50.05)
    ds = z.decisions()
    assert kinds(ds) == [("panic", 1), ("restore", 1)]
    assert acked(ds) == ["k1", "k2"]


def test_normally_closed_zone_alarms_on_open_and_disarmed_zone_is_silent_but_acked() -> None:
    z: Zones[str] = Zones([DOOR], armed=True)
    z.input_changed("a", 2, False, board_ms=0, now=1.0)  # NC contact opens: intrusion
    z.on_timer(1.1)
    assert kinds(z.decisions()) == [("intrusion", 2)]
    z.armed = False
    z.input_changed("b", 2, True, board_ms=500, now=1.5)
    z.on_timer(1.6)
    [d] = z.decisions()
    assert d.alarm is None and d.acks == ("b",)


def test_zero_debounce_is_immediate_and_unconfigured_inputs_are_acked() -> None:
    z: Zones[str] = Zones([FIRE0])
    z.input_changed("x", 9, True, board_ms=5, now=0.0)
    z.input_changed("y", 3, True, board_ms=5, now=0.0)
    ds = z.decisions()
    assert kinds(ds) == [(None, None), ("fire", 3)]
    assert acked(ds) == ["x", "y"]
    assert z.ignored == {"unconfigured_input": 1}


def test_panel_messages_go_through_the_parser_and_bad_ones_are_acked() -> None:
    def parse(device: str, raw: str) -> Alarm:
        if raw != "1234181130010159":
            raise ValueError("bad checksum")
        return Alarm(AlarmKind.INTRUSION, 15, AlarmSource.CONTACT_ID, device)

    z: Zones[str] = Zones([], panel_parser=parse)
    z.panel_message("p1", "1234181130010159")
    z.panel_message("p2", "1234181130010150")
    ds = z.decisions()
    assert kinds(ds) == [("intrusion", 15), (None, None)] and acked(ds) == ["p1", "p2"]
    assert z.ignored == {"bad_contact_id": 1}
    nop: Zones[str] = Zones([])
    nop.panel_message("p3", "1234181130010159")
    assert acked(nop.decisions()) == ["p3"]


def test_bad_zone_configs_are_refused() -> None:
    with pytest.raises(ValueError):
        Zone(0, AlarmKind.PANIC)
    with pytest.raises(ValueError):
        Zone(1, AlarmKind.RESTORE)
    with pytest.raises(ValueError):
        Zone(1, AlarmKind.PANIC, debounce_ms=-1)
    with pytest.raises(ValueError):
        Zones([PANIC, PANIC])


@given(
    st.lists(
        st.tuples(st.sampled_from([1, 2, 3, 4]), st.booleans(), st.integers(0, 300)),
        max_size=60,
    )
)
def test_every_event_is_acked_once_and_alarms_alternate_per_zone(
    changes: list[tuple[int, bool, int]],
) -> None:
    z: Zones[int] = Zones([PANIC, DOOR, FIRE0])
    board_ms, now = 0, 100.0
    keys = []
    out: list[Decision] = []
    for i, (inp, active, dt) in enumerate(changes):
        board_ms += dt
        now += dt / 1000
        z.on_timer(now)
        z.input_changed(i, inp, active, board_ms, now)
        keys.append(i)
        out += z.decisions()
    z.on_timer(now + 11)
    out += z.decisions()
    assert z.next_deadline() is None
    assert sorted(acked(out), key=int) == keys  # type: ignore[arg-type]
    for zone in (1, 2, 3):
        seq = [d.alarm.kind for d in out if isinstance(d.alarm, Alarm) and d.alarm.zone == zone]
        # alarm, restore, alarm, ... : never two alarms without a restore in between
        assert all((k is AlarmKind.RESTORE) == (i % 2 == 1) for i, k in enumerate(seq))


def test_board_clock_wrap_and_a_reboot_between_two_changes() -> None:
    z: Zones[str] = Zones([PANIC])
    z.input_changed("k1", 1, True, board_ms=2**32 - 10, now=5.0, boot=7)
    z.input_changed("k2", 1, False, board_ms=20, now=5.03, boot=7)  # 30 ms later, wrapped
    [d] = z.decisions()
    assert d.alarm is None and d.acks == ("k1", "k2")
    z.input_changed("k3", 1, True, board_ms=900_000, now=6.0, boot=7)
    # the board reboots; its clock restarts: the change of the old boot did last
    z.input_changed("k4", 1, False, board_ms=5, now=6.01, boot=8)
    assert kinds(z.decisions()) == [("panic", 1)]
    z.on_timer(6.06)
    assert kinds(z.decisions()) == [("restore", 1)]


def test_a_late_retransmitted_event_does_not_move_the_board_clock() -> None:
    z: Zones[str] = Zones([PANIC, FIRE0])
    z.observe_clock(1, 10_000, now=100.0)
    z.input_changed("old", 3, True, board_ms=9_000, now=100.5, boot=1)  # sent 1 s ago
    z.input_changed("k", 1, True, board_ms=10_500, now=100.5, boot=1)
    assert z.next_deadline() == pytest.approx(100.55)


def test_relayed_contact_id_through_the_real_parser() -> None:
    from firmware_bridge import contact_id

    def parse(device: str, raw: str) -> Alarm | contact_id.PanelEvent:
        return contact_id.to_event(contact_id.parse(raw), device)

    z: Zones[str] = Zones([], panel_parser=parse)
    good = contact_id.build("1234", 1, "130", 1, 15)
    z.panel_message("a", good)
    z.panel_message("b", good[:-1] + ("0" if good[-1] != "0" else "1"))
    z.panel_message("c", "12")
    ds = z.decisions()
    assert [k for d in ds for k in d.acks] == ["a", "b", "c"]
    assert ds[0].alarm is not None and str(ds[0].alarm.kind) == "intrusion"
    assert ds[1].alarm is None and ds[2].alarm is None
    assert z.ignored == {"bad_contact_id": 2}
