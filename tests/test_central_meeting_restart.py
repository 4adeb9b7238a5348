"""Call records across central restarts, with ``shilian central run`` as a real process, a
private mosquitto and scripted nodes (real MQTT 5 clients). What operators rely on: no meeting
stays "in progress" forever in a village's history. Stopped (SIGTERM), central hangs every
call up and records ``central_stopped``; killed (SIGKILL), the next start asks each node about
its call: one still in it is taken up again (and can be hung up from the page), one that no
longer knows it is ended ``central_restarted``, as is an offer never answered."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from shilian.broker import Mosquitto
from tests.processes import Central, wait_for
from tests.test_central_meetings import VillageNode
from tests.test_central_service import NODE, NODE2
from tests.test_wire_meeting import SDP
from wire.meeting import MeetingReply, MeetingRequest

pytestmark = pytest.mark.slow


class Remembering:
    """A node's line: answers offers, knows its session until hung up (or told to forget)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.session: str | None = None

    def __call__(self, req: MeetingRequest) -> MeetingReply | None:
        now = time.time()
        if req.op == "offer":
            self.session = req.session
            return MeetingReply(
                node=self.node_id, session=req.session, op="answer", ts=now, sdp=SDP,
                camera="cam-gate",
            )  # fmt: skip
        if req.op == "hangup" and req.session == self.session:
            self.session = None
        if req.op == "status":
            return MeetingReply(
                node=self.node_id, session=req.session, op="status", ts=now,
                active=req.session == self.session,
            )  # fmt: skip
        return None


def _record(db: Path, session: str) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.row_factory = sqlite3.Row
        row = c.execute("SELECT * FROM meetings WHERE session = ?", (session,)).fetchone()
    return dict(row)


async def _online(central: Central, *nodes: str) -> None:
    for n in nodes:
        await asyncio.to_thread(
            wait_for, lambda n=n: central.node(n)["state"] == "online", what=f"{n} online"
        )


async def _call(central: Central, node: str) -> str:
    got = await asyncio.to_thread(
        central.call, "POST", "/api/v1/meetings", {"node_id": node, "sdp": SDP}
    )
    return str(got["session"])


async def test_sigterm_ends_calls_central_stopped_and_hangs_up_the_node(
    broker: Mosquitto, tmp_path: Path
) -> None:
    central = Central(tmp_path / "central", broker.port)
    node = VillageNode(broker, Remembering(NODE))
    await asyncio.to_thread(central.start)
    try:
        await node.start()
        await _online(central, NODE)
        session = await _call(central, NODE)
        assert await asyncio.to_thread(central.signal, signal.SIGTERM) == 0
        await asyncio.to_thread(wait_for, lambda: node.ops() == ["offer", "hangup"], what="bye")
        rec = _record(central.db, session)
        assert rec["end_reason"] == "central_stopped" and rec["ended"] is not None
        # a later start finds nothing to settle: the record stays as it was
        await asyncio.to_thread(central.start)
        got = await asyncio.to_thread(central.get, f"/api/v1/meetings/{session}")
        assert got["state"] == "ended" and got["end_reason"] == "central_stopped"
        assert node.ops() == ["offer", "hangup"]
    finally:
        await node.stop()
        central.close()


async def test_after_sigkill_a_call_still_going_is_taken_up_and_the_others_are_ended(
    broker: Mosquitto, tmp_path: Path
) -> None:
    central = Central(tmp_path / "central", broker.port)
    keeps, forgets = Remembering(NODE), Remembering(NODE2)
    a, b = VillageNode(broker, keeps, NODE), VillageNode(broker, forgets, NODE2)
    await asyncio.to_thread(central.start)
    try:
        await a.start()
        await b.start()
        await _online(central, NODE, NODE2)
        kept, lost = await _call(central, NODE), await _call(central, NODE2)
        # The answer reaches the page before its record is written (a worker thread): kill
        # central only once both records say answered.
        await asyncio.to_thread(
            wait_for,
            lambda: all(_record(central.db, s)["answered"] is not None for s in (kept, lost)),
            what="answers recorded",
        )
        assert await asyncio.to_thread(central.signal, signal.SIGKILL) == -signal.SIGKILL
        assert _record(central.db, kept)["ended"] is None
        forgets.session = None  # the node ended the call while central was down
        await asyncio.to_thread(central.start)

        def settled() -> bool:
            return _record(central.db, lost)["ended"] is not None and "status" in a.ops()

        await asyncio.to_thread(wait_for, settled, what="records settled")
        rec = _record(central.db, lost)
        assert rec["end_reason"] == "central_restarted"
        assert "no longer in this call" in rec["detail"] and "已不在" in rec["detail"]
        assert b.ops() == ["offer", "status", "hangup"]
        assert (await asyncio.to_thread(central.get, f"/api/v1/meetings/{kept}"))["state"] == (
            "active"
        )
        # the call taken up again is hung up from the page as any other
        ended = await asyncio.to_thread(central.call, "DELETE", f"/api/v1/meetings/{kept}")
        assert ended["end_reason"] == "hangup_local"
        await asyncio.to_thread(
            wait_for, lambda: a.ops() == ["offer", "status", "hangup"], what="hang-up sent"
        )
    finally:
        await a.stop()
        await b.stop()
        central.close()
