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


async def test_peek_with_an_alarm_window_gives_each_lane_its_own_share(tmp_path: Path) -> None:
    # The sender's two windows: history can never take an alarm's slot nor alarms history's.
    ob = await _open(tmp_path)
    async with ob.running():
        for p, k in [("info", "i1"), ("device", "d1"), ("alarm", "a1"), ("info", "i2")]:
            await ob.accept(p, k)
        await ob.accept("alarm", "a2")
        both = await ob.peek(2, alarms=1)
        assert [e.kind for e in _events(both)] == ["a1", "d1", "i1"]
        only_alarms = await ob.peek(0, exclude=[p.id for p in both], alarms=8)
        assert [e.kind for e in _events(only_alarms)] == ["a2"]
        assert [e.kind for e in _events(await ob.peek(8, alarms=0))] == ["d1", "i1", "i2"]


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


# -- central's stored-acknowledgements (docs/protocol.md) -------------------------------------


async def test_sent_events_stay_until_central_acknowledges_them(tmp_path: Path) -> None:
    """With central acknowledging: a PUBACK only marks an event sent (not offered again); the
    acknowledgement deletes exactly what it covers, gaps and other boots excepted."""
    from wire.messages import BootStored

    ob = await _open(tmp_path)
    async with ob.running():
        await ob.set_central_acks(True)
        for i in range(6):
            await ob.accept("info", "e", data={"i": i})
        first = await ob.peek(10)
        await ob.mark_sent([p.id for p in first[:5]])
        assert ob.depth == 6
        assert [e.seq for e in _events(await ob.peek(10))] == [6]
        other = BootStored(boot_id=BOOT_2, upto=10)
        mine = BootStored(boot_id=BOOT_1, upto=5, missing=[(2, 3)])
        assert (await ob.confirm([other, mine])).deleted == 3
        assert ob.depth == 3 and ob.confirmed_total == 3
        # 2 and 3 were sent with 4 and 5 (one PUBACK batch): not known lost yet
        assert [e.seq for e in _events(await ob.peek(10))] == [6]
        assert await ob.resend() == 2  # a new connection: the sent ones central lacks go again
        assert [e.seq for e in _events(await ob.peek(10))] == [2, 3, 6]
        assert (await ob.confirm([BootStored(boot_id=BOOT_1, upto=6)])).deleted == 3
        assert ob.depth == 0 and ob.empty.is_set()
    ob = await _open(tmp_path, boot=BOOT_2)
    async with ob.running():
        assert ob.central_acks  # remembered across a restart


async def test_events_a_later_acknowledgement_skips_are_sent_again_per_lane(
    tmp_path: Path,
) -> None:
    """A lane is delivered in order: central storing an event of it sent later means one sent
    earlier was lost; the other lane is not affected. A probe re-sends one event only."""
    from wire.messages import BootStored

    now = [100.0]
    ob = await Outbox.open(
        tmp_path / "outbox.sqlite3",
        node_id=NODE,
        boot_id=BOOT_1,
        clock=lambda: now[0],
        mono=lambda: now[0],
    )
    async with ob.running():
        await ob.set_central_acks(True)
        for prio in ("info", "info", "alarm", "info"):
            await ob.accept(prio, "e")
        by_seq = {decode(Event, p.payload).seq: p.id for p in await ob.peek(10)}
        for seq in (1, 2, 3, 4):  # one PUBACK each, in this order, at 101, 102, ...
            now[0] += 1.0
            await ob.mark_sent([by_seq[seq]])
        assert await ob.peek(10) == []
        # central stored 3 (alarm lane) and 4 (event lane), not 1 and 2
        done = await ob.confirm([BootStored(boot_id=BOOT_1, upto=4, missing=[(1, 2)])])
        assert (done.deleted, done.resent) == (2, 2)
        assert [e.seq for e in _events(await ob.peek(10))] == [1, 2]
        await ob.mark_sent(list(by_seq[s] for s in (1, 2)))
        assert await ob.probe(True, now[0] + 10) == 0  # nothing sent on the alarm lane
        assert await ob.probe(False, now[0] + 10) == 1  # the newest: 2 (same PUBACK, later id)
        assert [e.seq for e in _events(await ob.peek(10))] == [2]


async def test_a_file_from_before_acknowledgements_is_migrated(tmp_path: Path) -> None:
    """Events stored by the previous version keep their order and can be acknowledged."""
    from edge.outbox_db import _MIGRATIONS, _SCHEMA
    from wire import encode
    from wire.messages import BootStored

    path = tmp_path / "outbox.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(_SCHEMA + _MIGRATIONS[0] + "PRAGMA user_version = 1;")
    for seq in (1, 2, 3):
        ev = Event(node=NODE, boot_id=BOOT_1, seq=seq, ts=1.0, priority=Priority.INFO, kind="old")
        conn.execute(
            "INSERT INTO events(prio, accepted, payload) VALUES (0, 1.0, ?)", (encode(ev),)
        )
    conn.close()
    ob = await _open(tmp_path, boot=BOOT_2)
    async with ob.running():
        assert ob.depth == 3 and not ob.central_acks
        assert [e.seq for e in _events(await ob.peek(10))] == [1, 2, 3]
        assert (await ob.confirm([BootStored(boot_id=BOOT_1, upto=2)])).deleted == 2
        assert [e.seq for e in _events(await ob.peek(10))] == [3]


def test_an_acknowledgement_covers_exactly_what_central_says_it_stored() -> None:
    """Property: the runs deleted are exactly the seqs ``covers`` accepts."""
    import random

    from edge.outbox_db import stored_runs
    from wire.messages import BootStored

    rng = random.Random(7)
    for _ in range(300):
        upto = rng.randrange(0, 60)
        missing = []
        for _ in range(rng.randrange(0, 6)):
            a = rng.randrange(1, 70)
            missing.append((a, a + rng.randrange(0, 8)))
        boot = BootStored(boot_id=BOOT_1, upto=upto, missing=missing)
        runs = stored_runs(boot)
        by_runs = {s for a, b in runs for s in range(a, b + 1)}
        assert by_runs == {s for s in range(1, 80) if boot.covers(s)}, (upto, missing, runs)


def test_subtracting_runs_keeps_exactly_the_seqs_not_covered_before() -> None:
    import random

    from edge.outbox_db import subtract_runs

    def runs_of(seqs: set[int]) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for s in sorted(seqs):
            if out and out[-1][1] == s - 1:
                out[-1] = (out[-1][0], s)
            else:
                out.append((s, s))
        return out

    rng = random.Random(11)
    for _ in range(500):
        a = {s for s in range(1, 60) if rng.random() < 0.5}
        b = {s for s in range(1, 60) if rng.random() < 0.5}
        assert runs_of(a - b) == subtract_runs(runs_of(a), runs_of(b)), (a, b)


async def test_events_beyond_what_an_acknowledgement_describes_are_not_taken_as_lost(
    tmp_path: Path,
) -> None:
    """Central's acknowledgement may stop early (more gaps than it sends): an event above its
    ``upto`` is not known lost, however early it was sent, and is not sent again."""
    from wire.messages import BootStored

    now = [100.0]
    ob = await Outbox.open(
        tmp_path / "outbox.sqlite3",
        node_id=NODE,
        boot_id=BOOT_1,
        clock=lambda: now[0],
        mono=lambda: now[0],
    )
    async with ob.running():
        await ob.set_central_acks(True)
        for prio in ("device", "info", "device", "info"):  # device first: 1, 3, then 2, 4
            await ob.accept(prio, "e")
        for p in await ob.peek(10):
            now[0] += 1.0
            await ob.mark_sent([p.id])
        # stored 1, 3, 2; the acknowledgement describes only up to 2
        done = await ob.confirm([BootStored(boot_id=BOOT_1, upto=2)])
        assert (done.deleted, done.resent) == (2, 0)
        assert await ob.peek(10) == []  # 3 (sent before 2) is beyond upto: not lost
        done = await ob.confirm([BootStored(boot_id=BOOT_1, upto=4, missing=[(3, 3)])])
        assert (done.deleted, done.resent) == (1, 1)  # 4 stored after 3 was sent: 3 lost
        assert [e.seq for e in _events(await ob.peek(10))] == [3]
