"""The durable outbox on real SQLite files: order, bound, restart, dead letters, group commit."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge.outbox import Outbox, OutboxFull, Pending
from wire import Event, LocalWireError, Priority, decode

NODE = "450102001001-a"
BOOT_1 = "1" * 32
BOOT_2 = "2" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


async def _open(path: Path, boot: str = BOOT_1, max_events: int = 1000) -> Outbox:
    return await Outbox.open(
        path / "outbox.sqlite3", node_id=NODE, boot_id=boot, max_events=max_events, clock=Clock()
    )


def _events(pending: list[Pending]) -> list[Event]:
    return [decode(Event, p.payload) for p in pending]


async def test_accept_assigns_gap_free_seq_and_peek_orders_by_priority(tmp_path: Path) -> None:
    ob = await _open(tmp_path)
    async with ob.running():
        kinds = [("info", "i1"), ("alarm", "a1"), ("device", "d1"), ("info", "i2"), ("alarm", "a2")]
        accepted = [await ob.accept(p, k) for p, k in kinds]
        assert [e.seq for e in accepted] == [1, 2, 3, 4, 5]
        assert all(e.boot_id == BOOT_1 and e.node == NODE for e in accepted)
        assert ob.depth == 5
        peeked = await ob.peek(10)
        assert [e.kind for e in _events(peeked)] == ["a1", "a2", "d1", "i1", "i2"]
        assert [e.kind for e in _events(await ob.peek(2))] == ["a1", "a2"]
        rest = await ob.peek(10, exclude=[p.id for p in peeked[:3]])
        assert [e.kind for e in _events(rest)] == ["i1", "i2"]
        await ob.ack([peeked[0].id, peeked[3].id, 999_999])
        assert ob.depth == 3
        assert [e.kind for e in _events(await ob.peek(10))] == ["a2", "d1", "i2"]


async def test_invalid_events_are_refused_before_storage(tmp_path: Path) -> None:
    ob = await _open(tmp_path)
    async with ob.running():
        with pytest.raises(ValidationError):
            await ob.accept("urgent", "x")
        with pytest.raises(ValidationError):
            await ob.accept("info", "Not A Name")
        with pytest.raises(LocalWireError):
            await ob.accept("info", "big", data={"blob": "x" * 70_000})
        assert ob.depth == 0
        assert (await ob.accept("info", "ok")).seq == 1  # no seq was burnt


async def test_restart_resumes_unacked_in_order_with_new_boot(tmp_path: Path) -> None:
    ob = await _open(tmp_path)
    async with ob.running():
        for i in range(5):
            await ob.accept("info", "e", data={"i": i})
        first = await ob.peek(2)
        await ob.ack([p.id for p in first])
        assert await ob.next_birth_seq() == 1
        assert await ob.next_birth_seq() == 2
    ob = await _open(tmp_path, boot=BOOT_2)
    async with ob.running():
        assert ob.depth == 3
        assert ob.birth_seq == 2
        assert await ob.next_birth_seq() == 3  # monotonic across restarts
        new = await ob.accept("info", "after")
        assert (new.boot_id, new.seq) == (BOOT_2, 1)
        evs = _events(await ob.peek(10))
        assert [(e.boot_id, e.seq) for e in evs] == [
            (BOOT_1, 3),
            (BOOT_1, 4),
            (BOOT_1, 5),
            (BOOT_2, 1),
        ]


async def test_bound_evicts_oldest_lowest_priority_never_alarms(tmp_path: Path) -> None:
    drops: list[Priority] = []
    ob = await Outbox.open(
        tmp_path / "o.sqlite3",
        node_id=NODE,
        boot_id=BOOT_1,
        max_events=4,
        clock=Clock(),
        on_drop=drops.append,
    )
    async with ob.running():
        await ob.accept("info", "i1")
        await ob.accept("device", "d1")
        await ob.accept("info", "i2")
        await ob.accept("alarm", "a1")
        await ob.accept("alarm", "a2")  # full: evicts i1
        await ob.accept("device", "d2")  # evicts i2
        assert [e.kind for e in _events(await ob.peek(10))] == ["a1", "a2", "d1", "d2"]
        with pytest.raises(OutboxFull):
            await ob.accept("info", "i3")  # nothing at or below info to give room
        await ob.accept("alarm", "a3")  # evicts d1
        await ob.accept("alarm", "a4")  # evicts d2
        await ob.accept("alarm", "a5")  # nothing evictable: over the bound
        assert [e.kind for e in _events(await ob.peek(10))] == ["a1", "a2", "a3", "a4", "a5"]
        assert drops == [
            Priority.INFO,
            Priority.INFO,
            Priority.INFO,
            Priority.DEVICE,
            Priority.DEVICE,
        ]
        assert ob.evicted_total == 5
        with pytest.raises(OutboxFull):
            await ob.accept("device", "d3")
    ob2 = await Outbox.open(
        tmp_path / "o.sqlite3", node_id=NODE, boot_id=BOOT_2, max_events=4, clock=Clock()
    )
    async with ob2.running():
        assert ob2.evicted_total == 6  # persisted counter
        assert ob2.depth == 5


async def test_dead_letters_are_kept_and_counted(tmp_path: Path) -> None:
    ob = await _open(tmp_path)
    async with ob.running():
        await ob.accept("alarm", "denied", data={"zone": 1})
        await ob.accept("info", "fine")
        p = (await ob.peek(1))[0]
        await ob.dead_letter(p.id, 135)
        assert ob.depth == 1 and ob.dead_total == 1
        dead = await ob.dead_letters()
        assert [(r, json.loads(pl)["kind"]) for _, r, pl in dead] == [(135, "denied")]
    ob = await _open(tmp_path, boot=BOOT_2)
    async with ob.running():
        assert ob.dead_total == 1
        assert len(await ob.dead_letters()) == 1


async def test_concurrent_accepts_share_commits_and_stay_gap_free(tmp_path: Path) -> None:
    ob = await _open(tmp_path, max_events=10_000)
    async with ob.running():
        evs = await asyncio.gather(*(ob.accept("info", "burst", data={"i": i}) for i in range(500)))
        assert sorted(e.seq for e in evs) == list(range(1, 501))
        assert ob.depth == 500
    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        seqs = [
            json.loads(r[0])["seq"] for r in db.execute("SELECT payload FROM events ORDER BY id")
        ]
        assert seqs == list(range(1, 501))  # acceptance order is seq order
    finally:
        db.close()


async def test_a_queued_alarm_is_committed_before_queued_pictures(tmp_path: Path) -> None:
    """An alarm accepted while snapshot pictures (large info events), an ack and a read are
    already queued is committed in a transaction of its own before them: it does not wait for
    the pictures' write."""
    ob = await _open(tmp_path)
    async with ob.running():
        await ob.accept("info", "warm")  # the writer has run once
        picture = {"jpeg_b64": "A" * 60_000}
        queued: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(ob.accept("info", "snapshot", "cam-1", picture)),
            asyncio.ensure_future(ob.accept("info", "snapshot", "cam-2", picture)),
            asyncio.ensure_future(ob.peek(10)),
        ]
        alarm = asyncio.ensure_future(ob.accept("alarm", "zone_alarm", data={"zone": 1}))
        done, _ = await asyncio.wait([alarm, *queued], return_when=asyncio.FIRST_COMPLETED)
        assert done == {alarm}
        await asyncio.gather(*queued)
        # the alarm went first, and the order among the others is kept
        seqs = [alarm.result().seq, queued[0].result().seq, queued[1].result().seq]
        assert seqs == [2, 3, 4]
        assert [e.kind for e in _events(await ob.peek(10))] == [
            "zone_alarm", "warm", "snapshot", "snapshot"
        ]  # fmt: skip


async def test_a_peek_after_an_unawaited_ack_sees_it_applied(tmp_path: Path) -> None:
    """The sender does not wait for a deletion before asking for the next events: a peek
    queued after ``ack_nowait`` never returns the acknowledged events again."""
    ob = await _open(tmp_path)
    async with ob.running():
        for k in ("i1", "i2", "i3"):
            await ob.accept("info", k)
        first = await ob.peek(2)
        acked = ob.ack_nowait([p.id for p in first])
        after = await ob.peek(10)
        assert [e.kind for e in _events(after)] == ["i3"]
        assert acked.done() and acked.exception() is None
        assert ob.depth == 1
