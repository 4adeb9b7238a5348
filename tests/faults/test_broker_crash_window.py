"""A broker crash after its PUBACK and before it saved or delivered (docs/faults.md, broker
crash): with central's stored-acknowledgements the node still holds the events and sends them
again, so central gets every one. A broker with a long autosave interval makes the window
deterministic: nothing it acknowledges after its last save survives a kill -9.

Real processes on loopback: mosquitto, central, the edge agent. The test reads central's SQLite
database and the agent's outbox file (read-only).
"""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from shilian.broker import Mosquitto
from tests.processes import Central, Edge, wait_for

NODE = "450102001003-a"
#: Longer than the test: the broker saves only when stopped cleanly.
NO_AUTOSAVE = "autosave_interval 36000\n"


def stored(central: Central) -> list[int]:
    """Seqs central stored for the node, in arrival order."""
    with sqlite3.connect(f"file:{central.db}?mode=ro", uri=True, timeout=5) as c:
        rows = c.execute("SELECT seq FROM events WHERE node_id = ? ORDER BY id", (NODE,))
        return [int(r[0]) for r in rows]


def outbox(edge: Edge, sql: str) -> int:
    db = edge.workdir / "outbox.sqlite3"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
        row = c.execute(sql).fetchone()
        return int(row[0]) if row and row[0] is not None else 0


def waits_for_central(edge: Edge) -> bool:
    """The agent has central's capabilities: it keeps events until central acknowledges them."""
    return outbox(edge, "SELECT value FROM meta WHERE key = 'central_acks'") == 1


def unpubacked(edge: Edge) -> int:
    """Events the broker has not acknowledged yet (sent ones are kept, marked)."""
    return outbox(edge, "SELECT count(*) FROM events WHERE sent IS NULL")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    (tmp_path / "broker").mkdir()
    b = Mosquitto(tmp_path / "broker", extra_conf=NO_AUTOSAVE)
    b.start()
    try:
        yield b
    finally:
        b.close()


def test_events_the_broker_acknowledged_survive_its_crash_before_it_saved(
    broker: Mosquitto, tmp_path: Path
) -> None:
    central = Central(tmp_path / "central", broker.port)
    edge = Edge(tmp_path / "edge", NODE, broker.port, keepalive_s=5)
    try:
        central.start()
        edge.start()
        first = edge.emit(5)
        wait_for(lambda: stored(central) == first, what="first events at central")
        wait_for(lambda: waits_for_central(edge), what="the agent heard central's capabilities")
        # A clean stop saves central's session (in service it is days old and long saved).
        broker.restart()
        central.signal(signal.SIGKILL)  # from now on the broker queues events for central
        at_risk = edge.emit(20)
        wait_for(lambda: unpubacked(edge) == 0, what="every event PUBACKed by the broker")
        # held after their PUBACK (the first ones too, if central's acknowledgement of them
        # was still on its way when the broker restarted)
        assert outbox(edge, "SELECT count(*) FROM events") >= len(at_risk)
        broker.stop(signal.SIGKILL)  # acknowledged, queued, never saved: the crash window
        broker.start()
        central.start()
        wait_for(lambda: stored(central) == first + at_risk, what="every event at central")
        # Once acknowledged by central, nothing stays behind in the outbox.
        wait_for(lambda: outbox(edge, "SELECT count(*) FROM events") == 0, what="outbox empty")
    finally:
        edge.close()
        central.close()


def test_events_the_broker_dropped_for_want_of_central_arrive_after_a_probe(
    tmp_path: Path,
) -> None:
    """Central's session was lost (a broker crash before it was saved): the broker PUBACKs
    events and drops them, the node's connection stays up. After 15 s of silence the node sends
    its oldest event again; central's acknowledgement of it shows the rest lost, and they go
    again too."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from central.acks import caps_payload

    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker")  # central's capabilities retained from before
    broker.start()
    edge = Edge(tmp_path / "edge", NODE, broker.port, keepalive_s=5)
    central = Central(tmp_path / "central", broker.port)
    try:
        pub = paho.Client(CallbackAPIVersion.VERSION2, "caps-from-before")
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        pub.publish(
            "shilian/v1/central/caps", caps_payload(1.0), qos=1, retain=True
        ).wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()
        edge.start()
        wait_for(lambda: waits_for_central(edge), what="the agent heard central's capabilities")
        sent = edge.emit(10)
        wait_for(lambda: unpubacked(edge) == 0, what="every event PUBACKed (and dropped)")
        central.start()  # a new session: the dropped events are nowhere but at the node
        wait_for(lambda: sorted(stored(central)) == sent, what="every event at central")
        wait_for(lambda: outbox(edge, "SELECT count(*) FROM events") == 0, what="outbox empty")
    finally:
        edge.close()
        central.close()
        broker.close()


def test_without_central_capabilities_events_go_on_the_brokers_puback(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """An older central publishes no capabilities: the agent deletes on PUBACK, as before, so
    its outbox does not grow while such a central never acknowledges anything."""
    edge = Edge(tmp_path / "edge", NODE, broker.port, keepalive_s=5)
    try:
        edge.start()
        edge.emit(10)
        wait_for(lambda: outbox(edge, "SELECT count(*) FROM events") == 0, what="outbox empty")
        assert not waits_for_central(edge)
    finally:
        edge.close()
