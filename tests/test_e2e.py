"""End to end: real mosquitto, real ``shilian central run`` and
``shilian edge run`` processes, observed through central's HTTP API."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from registry import Registry
from shilian.broker import Mosquitto
from tests.processes import Central, Edge, wait_for

#: Starts an edge agent process for a node (default: the test village's node).
MakeEdge = Callable[..., Edge]

pytestmark = pytest.mark.slow

NANNING = Registry.from_package("4501")
COUNTY = "450102"  # 兴宁区
VILLAGE = next(u.code for u in NANNING.villages() if u.code.startswith(COUNTY))
NODE = f"{VILLAGE}-a"


@pytest.fixture
def central(broker: Mosquitto, tmp_path: Path) -> Iterator[Central]:
    c = Central(tmp_path / "central", broker.port)
    c.start()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def make_edge(broker: Mosquitto, tmp_path: Path) -> Iterator[MakeEdge]:
    made: list[Edge] = []

    def make(node_id: str = NODE, **kw: object) -> Edge:
        e = Edge(tmp_path / f"edge-{node_id}", node_id, broker.port, **kw)  # type: ignore[arg-type]
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()


def _cov(central: Central, code: str) -> dict[str, int]:
    u = central.get(f"/api/v1/coverage/{code}")["unit"]
    return {k: u[k] for k in ("villages", "provisioned", "covered")}


def _state(central: Central, node: str) -> str | None:
    try:
        return str(central.node(node)["state"])
    except OSError:  # 404 before the node is known
        return None


def test_node_up_covers_its_village_and_moves_ratios_by_exactly_one(
    central: Central, make_edge: MakeEdge
) -> None:
    before = {c: _cov(central, c) for c in ("4501", COUNTY, VILLAGE)}
    assert before[VILLAGE] == {"villages": 1, "provisioned": 0, "covered": 0}
    edge = make_edge()
    edge.start()
    wait_for(lambda: _state(central, NODE) == "online", what="node online")
    for code in ("4501", COUNTY, VILLAGE):
        after = _cov(central, code)
        assert after["villages"] == before[code]["villages"]
        assert after["covered"] == before[code]["covered"] + 1
        assert after["provisioned"] == before[code]["provisioned"] + 1
        ratio = central.get(f"/api/v1/coverage/{code}")["unit"]["ratio"]
        assert ratio == pytest.approx(after["covered"] / after["villages"])
    assert _cov(central, "4501")["villages"] == 1856


def test_kill_9_goes_offline_by_will_and_sigterm_by_clean_stop(
    central: Central, make_edge: MakeEdge
) -> None:
    # Health every 10 min: an offline seen here can only come from the will or the clean stop.
    edge = make_edge(keepalive_s=5)
    edge.start()
    wait_for(lambda: _state(central, NODE) == "online", what="online")
    edge.kill()
    wait_for(lambda: _state(central, NODE) == "offline", what="offline after kill -9")
    assert central.node(NODE)["state_reason"] == "will"
    assert _cov(central, VILLAGE)["covered"] == 0

    edge.start()
    wait_for(lambda: _state(central, NODE) == "online", what="online again")
    assert edge.signal(signal.SIGTERM) == 0
    wait_for(lambda: _state(central, NODE) == "offline", what="offline after SIGTERM")
    assert central.node(NODE)["state_reason"] == "stopped"


def _assert_exactly_once_in_order(central: Central, n: int) -> None:
    events = sorted(central.events(NODE), key=lambda e: e["id"])  # arrival order at central
    seqs = [e["seq"] for e in events]
    assert len({e["boot_id"] for e in events}) == 1
    assert seqs == list(range(1, n + 1))


def test_broker_restart_while_emitting_1000_events(
    broker: Mosquitto, central: Central, make_edge: MakeEdge
) -> None:
    edge = make_edge()
    edge.start()
    wait_for(lambda: _state(central, NODE) == "online", what="online")
    restarted = threading.Event()

    def restart_midway() -> None:
        wait_for(lambda: len(central.events(NODE)) >= 200, what="200 events at central")
        broker.restart()
        restarted.set()

    t = threading.Thread(target=restart_midway)
    t.start()
    seqs = edge.emit(1000)
    t.join()
    assert restarted.is_set()
    assert seqs == list(range(1, 1001))
    wait_for(lambda: len(central.events(NODE)) >= 1000, what="1000 events at central")
    _assert_exactly_once_in_order(central, 1000)
    assert _state(central, NODE) == "online"


def test_edge_killed_with_pending_events_while_broker_down(
    broker: Mosquitto, central: Central, make_edge: MakeEdge
) -> None:
    edge = make_edge()
    edge.start()
    wait_for(lambda: _state(central, NODE) == "online", what="online")
    broker.stop()
    edge.emit(300)  # accepted = on disk, nothing can be sent
    edge.kill()
    broker.start()
    edge.start()
    wait_for(lambda: len(central.events(NODE)) >= 300, what="300 events after restarts")
    _assert_exactly_once_in_order(central, 300)


def test_central_restart_restores_state_without_duplicates_or_false_offline(
    central: Central, make_edge: MakeEdge
) -> None:
    edge = make_edge(health_interval_s=2.0)
    edge.start()
    wait_for(lambda: _state(central, NODE) == "online", what="online")
    edge.emit(50)
    wait_for(lambda: len(central.events(NODE)) >= 50, what="first 50 events")
    assert central.signal(signal.SIGTERM) == 0
    edge.emit(50)  # queued by the broker for central's persistent session
    central.start()
    assert _state(central, NODE) == "online"  # restored at once, not re-learned
    wait_for(lambda: len(central.events(NODE)) >= 100, what="100 events after restart")
    _assert_exactly_once_in_order(central, 100)
    history = central.node(NODE)["state_history"]
    assert [h["state"] for h in history] == ["online"], history


def test_central_kill_9_loses_nothing(central: Central, make_edge: MakeEdge) -> None:
    edge = make_edge()
    edge.start()
    wait_for(lambda: _state(central, NODE) == "online", what="online")
    edge.emit(100)
    central.signal(signal.SIGKILL)
    edge.emit(100)
    central.start()
    wait_for(lambda: len(central.events(NODE)) >= 200, what="200 events after crash")
    _assert_exactly_once_in_order(central, 200)
