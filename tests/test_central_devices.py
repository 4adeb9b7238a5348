"""The device index (central.devices) and the device alert rule (central.alerts) as pure
objects: a seeded scenario against figures computed from scratch, changes applied one by one,
and child suppression."""

from __future__ import annotations

import random

from central.alerts import AlertRule, Evaluator, observe_devices
from central.device_feed import MAX_VILLAGES_PER_BATCH, device_messages
from central.devices import NODE_OFFLINE, DeviceIndex, parse_device
from central.live import visible
from central.store import DeviceRow
from tests.video_scenario import NANNING, Scenario, SimDevice
from wire.devices import CameraHealth

VILLAGE = next(u.code for u in NANNING.villages() if u.code.startswith("450102"))


def _row(node_id: str, d: SimDevice, removed: int = 0) -> DeviceRow:
    s = d.state(node_id, 1000.0)
    detail = s.model_dump_json(include={"detail"})[len('{"detail":') : -1]
    return DeviceRow(node_id, d.device_id, s.kind, s.state, s.name, s.ts, detail, removed)


def _load(scn: Scenario) -> DeviceIndex:
    index = DeviceIndex(NANNING)
    rows = [_row(n.node_id, d) for n in scn.nodes for d in n.devices]
    index.apply(rows, [(n.node_id, n.online) for n in scn.nodes])
    return index


def _figures(index: DeviceIndex, code: str) -> dict[str, object]:
    s = index.summary(code)
    return {
        "villages": s.villages,
        "fully_connected": s.fully_connected,
        "ratio": s.ratio,
        "networks": dict(s.networks),
        "states": {k: dict(v) for k, v in s.states.items()},
    }


def test_seeded_scenario_equals_the_truth_at_every_level() -> None:
    scn = Scenario.seeded()
    index = _load(scn)
    assert 0 < scn.truth("4501")["fully_connected"] < len({n.node_id[:12] for n in scn.nodes})
    for code in scn.units():
        assert _figures(index, code) == scn.truth(code), code
    for v in {n.node_id[:12] for n in scn.nodes}:
        n = index.networks(v)
        flags = scn.village_flags(v)
        assert (n.video_network, n.public_video, n.info_system, n.terminal) == (
            flags["video_network"],
            flags["public_video"],
            flags["info_system"],
            flags["terminal"],
        )
        assert n.fully_connected == flags["fully_connected"]


def test_changes_one_by_one_keep_every_figure_true() -> None:
    scn = Scenario.seeded(11)
    index = _load(scn)
    rng = random.Random(3)
    for _ in range(300):
        n = rng.choice(scn.nodes)
        what = rng.random()
        if what < 0.3:
            n.online = not n.online
            index.apply([], [(n.node_id, n.online)])
        elif what < 0.8 and n.devices:
            d = rng.choice(n.devices)
            d.health = rng.choice(list(CameraHealth)) if d.kind == "camera" else d.health
            index.apply([_row(n.node_id, d)], [])
        elif what < 0.9 and n.devices:
            d = n.devices.pop(rng.randrange(len(n.devices)))
            index.apply([_row(n.node_id, d, removed=1)], [])
        else:
            d = SimDevice(f"cam{rng.randint(10, 99)}", "camera", "ok")
            if all(x.device_id != d.device_id for x in n.devices):
                n.devices.append(d)
                index.apply([_row(n.node_id, d)], [])
        v = n.node_id[:12]
        for code in ("4501", v[:6], v[:9], v):
            assert _figures(index, code) == scn.truth(code), code


def test_devices_of_an_offline_node_are_unknown_and_come_back_as_they_were() -> None:
    node = f"{VILLAGE}-a"
    cams = [SimDevice(f"cam{i}", "camera", "ok" if i else "black") for i in range(16)]
    term = SimDevice("terminal", "conference_terminal", "ok")
    index = DeviceIndex(NANNING)
    index.apply([_row(node, d) for d in [*cams, term]], [(node, True)])
    village = index.summary(node[:12])
    assert village.fully_connected == 1
    assert village.states["camera"] == {"up": 15, "degraded": 1}

    assert index.apply([], [(node, False)]) == {node[:12]}
    off = index.summary(node[:12])
    assert off.fully_connected == 0
    assert off.states["camera"] == {"unknown": 16}
    assert off.healths["camera"] == {NODE_OFFLINE: 16}
    views = list(index.devices(node[:12]))
    assert {(v.state, v.health, v.suppressed) for v in views} == {("unknown", NODE_OFFLINE, True)}
    assert {v.device.health for v in views if v.device.kind == "camera"} == {"ok", "black"}

    # The node comes back and re-publishes its retained states, unchanged: one change (its own).
    assert index.apply([_row(node, d) for d in [*cams, term]], [(node, True)]) == {node[:12]}
    assert index.apply([_row(node, d) for d in [*cams, term]], []) == set()
    back = index.summary(node[:12])
    assert (back.fully_connected, back.states["camera"]) == (1, {"up": 15, "degraded": 1})


def test_a_village_without_a_terminal_or_with_it_on_an_offline_node_is_not_fully_connected() -> (
    None
):
    index = DeviceIndex(NANNING)
    a, b = f"{VILLAGE}-a", f"{VILLAGE}-b"
    index.apply([_row(a, SimDevice("cam1", "camera", "ok"))], [(a, True)])
    assert not index.networks(a[:12]).fully_connected
    index.apply([_row(b, SimDevice("terminal", "conference_terminal", "ok"))], [(b, False)])
    assert not index.networks(a[:12]).fully_connected
    index.apply([], [(b, True)])  # the terminal on the village's other node counts
    assert index.networks(a[:12]).fully_connected
    assert index.summary("450102").fully_connected == 1


def test_a_detail_outside_the_contract_still_counts() -> None:
    d = parse_device(f"{VILLAGE}-a", "cam1", "camera", "down", None, 5.0, "[1, 2]")
    assert (d.health, d.state, d.reason, d.since) == ("down", "down", "", None)
    d = parse_device(f"{VILLAGE}-a", "cam1", "camera", "up", None, 5.0, "{")
    assert (d.health, d.state) == ("ok", "up")
    d = parse_device(f"{VILLAGE}-a", "cam1", "camera", "up", None, 5.0, '{"health": "melted"}')
    assert (d.health, d.state) == ("melted", "down")  # a newer node's health: counted as down


def test_held_device_conditions_neither_fire_nor_resolve() -> None:
    rule = AlertRule(id="cams", kind="device_down", minutes=1)
    ev = Evaluator()
    ev.set_rules([rule])
    names = {VILLAGE: "某村"}
    down = [(f"{VILLAGE}-a", f"cam{i}", "camera", "black", 0.0, False) for i in range(2)]
    fired = ev.step({"cams": observe_devices(rule, down, names, 100.0)}, 100.0)
    assert [t.status for t in fired] == ["firing", "firing"]
    # The node goes offline: 16 cameras now reported down, all held. Nothing fires or resolves.
    held = [(f"{VILLAGE}-a", f"cam{i}", "camera", "unreachable", 0.0, True) for i in range(16)]
    assert ev.step({"cams": observe_devices(rule, held, names, 200.0)}, 200.0) == []
    assert len(ev.firing) == 2
    # Back online, the cameras fine again: the two old alerts resolve, nothing else happens.
    assert [t.status for t in ev.step({"cams": []}, 300.0)] == ["resolved", "resolved"]


def test_live_devices_messages_are_per_village_scoped_and_capped() -> None:
    msgs = device_messages({VILLAGE, "450103001001"})
    assert [m.data["village"] for m in msgs] == sorted({VILLAGE, "450103001001"})
    assert [visible(m, "450102") for m in msgs] == [True, False]  # a 兴宁区 user sees 兴宁区's
    many = {f"450102{i:06d}" for i in range(MAX_VILLAGES_PER_BATCH + 1)}
    assert [m.kind for m in device_messages(many)] == ["resync"]
