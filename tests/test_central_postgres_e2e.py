"""End to end on PostgreSQL: a real mosquitto, a real ``shilian central run`` whose ``[store]
url`` names a fresh PostgreSQL database, nodes publishing over MQTT 5, and central's API
answering from that database: coverage, the node list, alarm acknowledgement and the audit
log."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import wire
from central import migrate
from registry import Registry
from shilian.broker import Mosquitto
from tests.postgres import end_sessions
from tests.processes import ADMIN, Central, wait_for
from tests.test_central_service import Node

pytestmark = pytest.mark.slow

NANNING = Registry.from_package("4501")
COUNTY = "450102"  # 兴宁区
VILLAGES = [u.code for u in NANNING.villages() if u.code.startswith(COUNTY)][:3]
NODES = [f"{v}-a" for v in VILLAGES]
#: The nodes' health interval: none times out while the test runs, even on a loaded machine.
HEALTH_INTERVAL_S = 600.0


@pytest.fixture
def central(broker: Mosquitto, tmp_path: Path, pg_url: str) -> Iterator[Central]:
    c = Central(tmp_path / "central", broker.port, url=pg_url)
    c.start()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
async def nodes(broker: Mosquitto) -> AsyncIterator[list[Node]]:
    made = [Node(broker, n, interval=HEALTH_INTERVAL_S) for n in NODES]
    try:
        yield made
    finally:
        for n in made:
            await n.close()


async def _until(cond: Callable[[], Any], what: str) -> Any:
    """Poll ``cond`` off the loop (the API client blocks), so the nodes' sessions run on."""
    return await asyncio.to_thread(wait_for, cond, what=what)


def _cov(central: Central, code: str) -> tuple[int, int]:
    u = central.get(f"/api/v1/coverage/{code}")["unit"]
    return int(u["provisioned"]), int(u["covered"])


async def test_central_runs_on_postgresql_end_to_end(
    central: Central, nodes: list[Node], pg_url: str
) -> None:
    assert _cov(central, COUNTY) == (0, 0)
    for n in nodes:
        await n.connect()
        await n.health()
    await _until(lambda: _cov(central, COUNTY) == (3, 3), "three villages covered")
    listed = central.get(f"/api/v1/nodes?county={COUNTY}")
    assert listed["total"] == 3
    assert [(n["node_id"], n["state"]) for n in listed["nodes"]] == [(n, "online") for n in NODES]

    # a node stops: it says so, and coverage follows
    last = nodes[2]
    await last.publish(last.topics.state, last.state("offline", "stopped"), retain=True)
    await last.close()
    await _until(lambda: _cov(central, COUNTY) == (3, 2), "the third village uncovered")
    offline = central.get(f"/api/v1/nodes?state=offline&county={COUNTY}")["nodes"]
    assert [(n["node_id"], n["state_reason"]) for n in offline] == [(NODES[2], "stopped")]

    # an alarm, acknowledged once, and the acknowledgement in the audit log
    first = nodes[0]
    alarm = wire.Event(
        node=first.node_id, boot_id=first.boot, seq=1, ts=time.time(),
        priority=wire.Priority.ALARM, kind="panic", data={"zone": 1},
    )  # fmt: skip
    await first.publish(first.topics.event_for(wire.Priority.ALARM), wire.encode(alarm))
    listed = await _until(
        lambda: (a := central.get("/api/v1/alarms"))["total"] == 1 and a, "the alarm listed"
    )
    (open_alarm,) = listed["alarms"]
    assert (open_alarm["node_id"], open_alarm["kind"], open_alarm["state"]) == (
        first.node_id, "panic", "open",
    )  # fmt: skip
    event_id = open_alarm["id"]
    acked = central.call("POST", f"/api/v1/alarms/{event_id}/ack", {"note": "已派人"})
    assert acked["state"] == "acked" and acked["ack"]["by"] == ADMIN
    with pytest.raises(urllib.error.HTTPError) as again:
        central.call("POST", f"/api/v1/alarms/{event_id}/ack", {"note": "again"})
    assert again.value.code == 409
    assert json.load(again.value)["error"]["code"] == "already_acked"
    assert central.get("/api/v1/alarms")["total"] == 0  # nothing open any more
    log = central.get("/api/v1/audit?action=alarm_ack")["entries"]
    assert [(e["user"], e["target"], e["outcome"]) for e in log] == [
        (ADMIN, str(event_id), "already_acked"),
        (ADMIN, str(event_id), "ok"),
    ]

    # all of it is in PostgreSQL (migrated by central at start), and no SQLite file was made
    assert migrate.status(pg_url).up_to_date
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM nodes").fetchone() == (3,)
        assert conn.execute(
            "SELECT acked_by, note FROM alarm_acks WHERE event_id = %s", (event_id,)
        ).fetchone() == (ADMIN, "已派人")
    assert not central.db.exists() and not list(central.db.parent.glob("*.sqlite3*"))


async def test_central_comes_through_its_database_ending_every_session(
    central: Central, nodes: list[Node], pg_url: str
) -> None:
    """What a PostgreSQL restart does to central: every connection it holds (ingest's store,
    accounts, the readers) ended by the server. Central keeps running; the API answers again
    and what the nodes send afterwards is stored."""
    for n in nodes:
        await n.connect()
        await n.health()
    await _until(lambda: _cov(central, COUNTY) == (3, 3), "three villages covered")
    assert end_sessions(pg_url) >= 2
    # the node list and coverage answer again (a request or two may be refused meanwhile)
    await _until(lambda: _answers(central, f"/api/v1/nodes?county={COUNTY}"), "the API back")
    # what a node sends now is stored
    last = nodes[2]
    await last.publish(last.topics.state, last.state("offline", "stopped"), retain=True)
    await last.close()
    await _until(lambda: _cov(central, COUNTY) == (3, 2), "the third village uncovered")
    assert central.p is not None and central.p.poll() is None  # it kept running


def _answers(central: Central, path: str) -> bool:
    try:
        central.get(path)
    except urllib.error.HTTPError as e:
        assert e.code == 503, e.read()
        assert json.load(e)["error"]["code"] == "database_unavailable"
        return False
    return True
