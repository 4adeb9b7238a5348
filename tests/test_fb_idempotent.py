"""Idempotent emit: an edge crash between the outbox commit and the board's ACK makes
the board retransmit after the restart; the alarm must still be stored once.

First the outbox's keyed store on real SQLite files (duplicates, restart, expiry, migration of
an outbox file written before keys existed); then the whole path: board simulator on a pty →
``shilian edge run`` subprocess killed with SIGKILL right after the commit (the agent's
documented fault injection) → restarted → real mosquitto → ``shilian central run`` shows the
alarm exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.agent import FAULT_KILL_AFTER_COMMIT
from edge.outbox import SCHEMA_VERSION, Outbox, OutboxError
from firmware_bridge.simulator import simulate_board
from shilian.broker import Mosquitto
from tests.processes import Central, Edge, wait_for
from wire import Event, Priority, decode

NODE = "450102001003-a"
BOOT_1 = "1" * 32
BOOT_2 = "2" * 32


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _open(path: Path, boot: str, clock: Clock) -> Outbox:
    return await Outbox.open(path / "outbox.sqlite3", node_id=NODE, boot_id=boot, clock=clock)


async def test_same_key_returns_the_first_event_and_stores_nothing(tmp_path: Path) -> None:
    clock = Clock()
    ob = await _open(tmp_path, BOOT_1, clock)
    async with ob.running():
        first = await ob.store("alarm", "panic", "alarm_board", {"zone": 1}, key="board:x:1")
        assert not first.duplicate and first.event.seq == 1
        other = await ob.store("alarm", "panic", "alarm_board", {"zone": 2}, key="board:x:2")
        again = await ob.store("alarm", "panic", "alarm_board", {"zone": 1}, key="board:x:1")
        assert again.duplicate and again.event == first.event
        assert other.event.seq == 2 and ob.depth == 2 and ob.duplicates_total == 1
        # unkeyed events are never deduplicated
        a = await ob.accept("info", "note")
        b = await ob.accept("info", "note")
        assert (a.seq, b.seq, ob.depth) == (3, 4, 4)
        with pytest.raises(ValueError):
            await ob.store("alarm", "panic", key="k" * 201)


async def test_key_outlives_the_send_and_a_restart_and_expires(tmp_path: Path) -> None:
    clock = Clock()
    ob = await _open(tmp_path, BOOT_1, clock)
    async with ob.running():
        first = (await ob.store("alarm", "fire", "p", {"n": 1}, key="sia:1", key_ttl_s=60)).event
        await ob.ack([p.id for p in await ob.peek(10)])  # sent: the row is gone
        assert ob.depth == 0
    # the agent restarts (new boot id); the peer retransmits
    ob = await _open(tmp_path, BOOT_2, clock)
    async with ob.running():
        clock.now += 30
        again = await ob.store("alarm", "fire", "p", {"n": 1}, key="sia:1", key_ttl_s=60)
        assert again.duplicate and again.event == first and again.event.boot_id == BOOT_1
        assert ob.depth == 0 and ob.duplicates_total == 1
        clock.now += 31  # past its time to live: the same key is a new event
        late = await ob.store("alarm", "fire", "p", {"n": 1}, key="sia:1", key_ttl_s=60)
        assert not late.duplicate and late.event.boot_id == BOOT_2 and ob.depth == 1


async def test_two_accepts_of_one_key_in_one_batch_store_one_event(tmp_path: Path) -> None:
    ob = await _open(tmp_path, BOOT_1, Clock())
    async with ob.running():
        a, b = await asyncio.gather(
            ob.store("alarm", "panic", key="same"), ob.store("alarm", "panic", key="same")
        )
        assert (a.duplicate, b.duplicate) == (False, True) and a.event == b.event
        assert ob.depth == 1


_V0_SCHEMA = """
CREATE TABLE events(
    id INTEGER PRIMARY KEY, prio INTEGER NOT NULL, accepted REAL NOT NULL, payload BLOB NOT NULL);
CREATE INDEX events_send_order ON events(prio DESC, id);
CREATE TABLE dead(
    id INTEGER PRIMARY KEY, prio INTEGER NOT NULL, accepted REAL NOT NULL, rejected REAL NOT NULL,
    reason INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


async def test_an_outbox_file_from_before_keys_is_migrated_with_its_events(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite3"
    old = Event(node=NODE, boot_id=BOOT_1, seq=7, ts=999.0, priority=Priority.ALARM, kind="panic")
    with sqlite3.connect(path) as c:  # as the previous release wrote it (user_version 0)
        c.executescript(_V0_SCHEMA)
        c.execute(
            "INSERT INTO events(prio, accepted, payload) VALUES (2, 999.0, ?)",
            (old.model_dump_json().encode(),),
        )
        c.execute("INSERT INTO meta VALUES ('birth_seq', 5)")
    c.close()
    ob = await _open(tmp_path, BOOT_2, Clock())
    async with ob.running():
        assert ob.depth == 1 and ob.birth_seq == 5
        [p] = await ob.peek(10)
        assert decode(Event, p.payload) == old  # the pending alarm survived the migration
        s1 = await ob.store("alarm", "panic", key="board:1")
        s2 = await ob.store("alarm", "panic", key="board:1")
        assert s2.duplicate and s2.event == s1.event
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    c.close()
    # a file from a newer release is refused with a clear (zh/en) error, not misread
    with sqlite3.connect(path) as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    c.close()
    with pytest.raises(OutboxError, match="请升级 shilian"):
        await _open(tmp_path, BOOT_2, Clock())


# -- end to end: kill -9 between the commit and the board ACK --------------------------------


def _alarm_edge(workdir: Path, broker_port: int, tty: str) -> Edge:
    edge = Edge(workdir, NODE, broker_port, keepalive_s=5)
    conf = workdir / "edge.toml"
    conf.write_text(
        conf.read_text(encoding="utf-8")
        + f'[alarm_board]\ndevice = "{tty}"\n'
        + '[[alarm_board.zones]]\ninput = 1\nkind = "panic"\nname = "村委会紧急按钮"\n',
        encoding="utf-8",
    )
    return edge


@pytest.mark.slow
async def test_edge_killed_after_commit_before_ack_stores_the_alarm_once(
    broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    central = Central(tmp_path / "central", broker.port)
    await asyncio.to_thread(central.start)
    edge: Edge | None = None
    try:
        async with simulate_board(seed=9, n_inputs=4) as sim:
            edge = _alarm_edge(tmp_path / "edge", broker.port, sim.slave_path)
            monkeypatch.setenv(FAULT_KILL_AFTER_COMMIT, "1")
            await asyncio.to_thread(edge.start)
            monkeypatch.delenv(FAULT_KILL_AFTER_COMMIT)
            sim.press(1, hold_s=0.3)
            assert edge.p is not None
            rc = await asyncio.to_thread(edge.p.wait, 60)
            assert rc == -9  # killed itself right after committing the alarm
            edge.p = None
            with sqlite3.connect(tmp_path / "edge" / "outbox.sqlite3") as c:  # committed
                [(key,)] = c.execute("SELECT key FROM idem").fetchall()
            c.close()
            assert key.startswith("board:alarm_board:SIM-0001:")
            assert sim.core.queue, "the board still holds the unacknowledged press"

            await asyncio.to_thread(edge.start)  # restarted, without the fault

            def stored() -> list[dict[str, Any]] | None:
                evs = [e for e in central.events(NODE) if e.get("device") == "alarm_board"]
                return evs if any(e["kind"] == "restore" for e in evs) else None

            # the restore follows the press on the board: once it is at central, the
            # retransmitted press has been handled too
            events = await asyncio.to_thread(wait_for, stored, 90.0, "restore at central")
            await asyncio.to_thread(
                wait_for, lambda: not sim.core.queue, 30.0, "board queue acknowledged"
            )
            assert [e["kind"] for e in sorted(events, key=lambda e: e["ts"])] == [
                "panic",
                "restore",
            ]
            alarms = await asyncio.to_thread(central.get, "/api/v1/alarms?state=all")
            assert alarms["total"] == 1
            [alarm] = alarms["alarms"]
            assert alarm["kind"] == "panic" and alarm["village"] == NODE[:12]
            log = (tmp_path / "edge" / "edge.log").read_text(encoding="utf-8", errors="replace")
            assert "stored before" in log
    finally:
        if edge is not None:
            edge.close()
        central.close()


def test_agent_refuses_an_outbox_file_from_a_newer_release(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    with sqlite3.connect(db) as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    c.close()
    conf = tmp_path / "edge.toml"
    conf.write_text(
        f'node_id = "{NODE}"\n[outbox]\npath = "{db}"\n[metrics]\nenabled = false\n'
        f'[local_socket]\npath = "{tmp_path / "edge.sock"}"\n',
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, "-m", "edge.runner", "--config", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "请升级 shilian" in out.stderr and "upgrade shilian" in out.stderr
    assert "Traceback" not in out.stderr
