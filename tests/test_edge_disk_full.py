"""Disk full under the edge outbox: the failed emit gets a clear error, the failure is counted,
the agent keeps running and sending, and once sending has freed room events are stored again.

"Full" is a real SQLITE_FULL from SQLite: ``PRAGMA max_page_count`` caps the outbox file at its
current size (the same error SQLite returns when the disk has no room for another page).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge import outbox as outbox_mod
from edge.outbox import Outbox, OutboxDiskFull
from shilian.broker import Mosquitto
from tests.test_edge_agent import NODE, WAIT_S, Observer, Running, make_config, wait_for
from wire import Event, Health, decode

#: Big enough that a few events need a new page each.
PAD = "x" * 3000


async def cap_at_current_size(outbox: Outbox, pages: int | None = None) -> int:
    """Set the outbox connection's ``max_page_count`` (None: the file's current size, so the
    next event needing a new page fails with SQLITE_FULL); returns the cap in force."""

    def cap() -> int:
        conn = outbox._conn
        n = 1 if pages is None else pages  # SQLite clamps to the current page count
        return int(conn.execute(f"PRAGMA max_page_count = {n}").fetchone()[0])

    return await asyncio.get_running_loop().run_in_executor(outbox_mod._EXECUTOR, cap)


async def fill(emit: Any, limit: int = 5000) -> tuple[list[int], Any]:
    """Emit padded events until one fails; returns the accepted seqs and the failure."""
    seqs: list[int] = []
    for i in range(limit):
        try:
            seqs.append(await emit(i))
        except OutboxDiskFull as e:
            return seqs, e
    raise AssertionError(f"outbox never filled after {limit} events")


async def test_outbox_disk_full_refuses_new_events_but_acks_still_free_room(
    tmp_path: Path,
) -> None:
    ob = await Outbox.open(
        tmp_path / "o.sqlite3", node_id=NODE, boot_id="b" * 32, clock=lambda: 1.0
    )
    async with ob.running():
        for i in range(20):
            await ob.accept("info", "warm", data={"i": i, "pad": PAD})
        await cap_at_current_size(ob)

        async def emit(i: int) -> int:
            return (await ob.accept("info", "fill", data={"i": i, "pad": PAD})).seq

        accepted, err = await fill(emit)
        assert "磁盘已满" in str(err) and "disk full" in str(err)
        depth = ob.depth
        assert depth == 20 + len(accepted)

        # An ack queued in the same batch as (after) a refused event is still applied.
        first = await ob.peek(5)
        batch = await asyncio.gather(
            ob.accept("info", "more", data={"pad": PAD}),
            ob.ack([p.id for p in first]),
            return_exceptions=True,
        )
        assert isinstance(batch[0], OutboxDiskFull) and batch[1] is None
        assert ob.depth == depth - 5

        # Nothing accepted was lost: every seq but the five acknowledged is still stored.
        rest = await ob.peek(10_000)
        assert [decode(Event, p.payload).seq for p in rest] == list(range(6, depth + 1))

        # Sending everything frees the pages: events are stored again, within the same cap.
        await ob.ack([p.id for p in rest])
        assert ob.depth == 0
        again = await ob.accept("alarm", "after", data={"pad": PAD})
        assert again.seq == depth + 1  # refused events took no seq: no gap at central
        assert [decode(Event, p.payload) for p in await ob.peek(10)] == [again]


async def request(sock: Path, req: dict[str, Any]) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(sock)
    try:
        writer.write(json.dumps(req).encode() + b"\n")
        await writer.drain()
        reply: dict[str, Any] = json.loads(await asyncio.wait_for(reader.readline(), WAIT_S))
        return reply
    finally:
        writer.close()
        await writer.wait_closed()


async def test_agent_survives_a_full_disk_and_loses_nothing(
    broker: Mosquitto, tmp_path: Path
) -> None:
    obs = Observer(broker.port)
    obs_task = asyncio.create_task(obs.run())
    await asyncio.wait_for(obs.connected.wait(), WAIT_S)
    cfg = make_config(tmp_path, broker.port)
    sock = cfg.local_socket.path
    run = Running(cfg, serve_metrics=False)
    try:
        async with run as agent:
            assert agent.outbox is not None
            outbox = agent.outbox
            await wait_for(lambda: agent.connected, "connected")
            # Broker away: nothing is sent, so the outbox grows until the disk is full.
            broker.stop()
            await wait_for(lambda: not agent.connected, "agent sees the broker gone")
            await cap_at_current_size(outbox)

            async def emit(i: int) -> int:
                rep = await request(
                    sock,
                    {"op": "emit", "priority": "info", "kind": "fill", "data": {"i": i, "p": PAD}},
                )
                if not rep["ok"]:
                    assert rep["code"] == "disk_full", rep
                    raise OutboxDiskFull(rep["error"])
                seq: int = rep["seq"]
                return seq

            accepted, err = await fill(emit)
            assert accepted, "some events fit before the disk was full"
            assert "发件箱所在磁盘已满" in str(err) and "outbox disk full" in str(err)
            with pytest.raises(OutboxDiskFull):  # the in-process sink says the same
                await agent.sink.emit("alarm", "panic", data={"pad": PAD})

            errors = agent.registry.get_sample_value(
                "shilian_edge_outbox_write_errors_total", {"reason": "disk_full"}
            )
            assert errors == 2
            assert run.task is not None and not run.task.done()
            status = await request(sock, {"op": "status"})
            assert status["ok"] and status["outbox_disk_full_since"] is not None
            assert status["outbox_depth"] == len(accepted)

            # Broker back: the agent reconnects while still full, reports it in health, sends
            # (and deletes) the stored events, which frees the room for new ones.
            broker.start()
            await wait_for(lambda: agent.connected, "reconnected while the disk is full")
            await wait_for(
                lambda: any(
                    decode(Health, p).outbox_disk_full_since is not None
                    for t, p, _ in obs.msgs
                    if t == agent.topics.health
                ),
                "health reports the full disk",
            )
            await wait_for(lambda: outbox.depth == 0, "stored events sent and deleted")
            rep = await request(sock, {"op": "emit", "priority": "alarm", "kind": "after"})
            assert rep["ok"], rep
            status = await request(sock, {"op": "status"})
            assert status["outbox_disk_full_since"] is None
            want = {*accepted, rep["seq"]}
            await wait_for(
                lambda: want <= {e.seq for e in obs.events()}, "every accepted event delivered"
            )
            assert errors == agent.registry.get_sample_value(
                "shilian_edge_outbox_write_errors_total", {"reason": "disk_full"}
            )
    finally:
        obs_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await obs_task


async def test_board_alarm_not_acknowledged_while_full_then_delivered(
    broker: Mosquitto, tmp_path: Path
) -> None:
    from firmware_bridge.simulator import simulate_board

    obs = Observer(broker.port)
    obs_task = asyncio.create_task(obs.run())
    await asyncio.wait_for(obs.connected.wait(), WAIT_S)
    try:
        async with simulate_board(seed=3, n_inputs=4) as sim:
            board = {
                "device": sim.slave_path,
                "zones": [{"input": 1, "kind": "panic", "name": "村委会紧急按钮"}],
            }
            cfg = make_config(tmp_path, broker.port, alarm_board=board)
            run = Running(cfg, serve_metrics=False, serve_local_socket=False)
            async with run as agent:
                assert agent.outbox is not None
                outbox = agent.outbox
                await wait_for(lambda: agent.connected, "connected")
                await wait_for(lambda: agent.status()["alarm_board"]["state"] == "up", "board up")
                broker.stop()
                await wait_for(lambda: not agent.connected, "agent sees the broker gone")
                await cap_at_current_size(outbox)

                async def emit(i: int) -> int:
                    ev = await agent.sink.emit("info", "fill", data={"i": i, "p": PAD})
                    return ev.seq

                accepted, _ = await fill(emit)

                async def emit_small(i: int) -> int:  # the room left in part-used pages
                    ev = await agent.sink.emit("info", "f", key=f"fill:{i:06d}:{PAD[:60]}")
                    return ev.seq

                accepted += (await fill(emit_small))[0]
                before = agent.registry.get_sample_value(
                    "shilian_edge_outbox_write_errors_total", {"reason": "disk_full"}
                )
                assert before is not None

                # The board's alarm cannot be stored: the board is not acknowledged and keeps
                # it; the failure is counted; the agent (and its board source) keep running.
                # A panic can still fit in a part-used B-tree page (its keys sort apart from the
                # fill's), so press again until one is refused: each stored press uses room.
                def refused() -> bool:
                    n = agent.registry.get_sample_value(
                        "shilian_edge_outbox_write_errors_total", {"reason": "disk_full"}
                    )
                    return (n or 0) > before

                presses = 0
                while not refused():
                    assert presses < 50, "the outbox never refused a board alarm"
                    sim.press(1, hold_s=0.3)
                    presses += 1
                    with contextlib.suppress(AssertionError):
                        await wait_for(refused, "the board's alarm refused", within=3.0)
                assert sim.core.queue, "the board still holds the unacknowledged press"
                assert run.task is not None and not run.task.done()

                broker.start()  # sending frees the room; the board's retransmission fits
                await wait_for(lambda: agent.connected, "reconnected")
                await wait_for(lambda: not sim.core.queue, "board queue acknowledged")

                def kinds() -> list[str]:
                    return [e.kind for e in obs.events() if e.device == "alarm_board"]

                await wait_for(
                    lambda: kinds().count("restore") >= presses, "alarms and restores delivered"
                )
                assert kinds().count("panic") == presses  # each press once, none lost
                assert set(accepted) <= {e.seq for e in obs.events()}
    finally:
        obs_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await obs_task


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a disk that really fills (ENOSPC under SQLite's WAL)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_real_full_disk_pauses_acks_until_room_is_freed(small_disk: Path) -> None:
    ballast = small_disk / "other-files"  # what an operator would delete to make room
    ballast.write_bytes(b"\0" * 256 * 1024)
    ob = await Outbox.open(
        small_disk / "o.sqlite3", node_id=NODE, boot_id="c" * 32, clock=lambda: 1.0
    )
    async with ob.running():

        async def emit(i: int) -> int:
            return (await ob.accept("info", "fill", data={"i": i, "pad": PAD})).seq

        accepted, err = await fill(emit)
        assert accepted and "outbox disk full" in str(err)
        # On a really full disk even deleting needs room (WAL): the ack waits instead of
        # failing, so a sender is paused, not ended, and the event is not lost or resent.
        sent = await ob.peek(10)
        ack = asyncio.ensure_future(ob.ack([p.id for p in sent]))
        birth = asyncio.ensure_future(ob.next_birth_seq())
        await asyncio.sleep(0.3)  # let a few tries be refused
        assert not ack.done() and not birth.done() and ob.depth == len(accepted)

        ballast.unlink()  # room again
        await asyncio.wait_for(ack, WAIT_S)
        assert await asyncio.wait_for(birth, WAIT_S) == 1
        assert ob.depth == len(accepted) - len(sent)
        after = await ob.accept("alarm", "after")
        assert after.seq == len(accepted) + 1
        rest = [decode(Event, p.payload).seq for p in await ob.peek(10_000)]
        assert rest == [after.seq, *accepted[len(sent) :]]
