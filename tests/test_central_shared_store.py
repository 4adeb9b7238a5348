"""The parts of several ingest processes that need no broker: the leader's rule (pure), the
configuration, and two :class:`SharedStore` connections writing one boot's events in turns
and at once on a real PostgreSQL (gaps recomputed from the events table, node state under
per-node locks, conditional offline)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from central.config import CentralConfig
from central.shared_liveness import OnlineNode, overdue
from central.store import EventRow, NodeRow
from central.store_shared import SharedStore
from tests.postgres import scratch_database

NODE = "450102001003-a"
BOOT = "b1"


def event(seq: int) -> EventRow:
    return EventRow(NODE, NODE[:12], BOOT, seq, 1.0, 1.0, "info", "test", None, "{}")


def node(state: str = "online", birth_seq: int = 1) -> NodeRow:
    return NodeRow(NODE, NODE[:12], NODE[:6], state, 1.0, "connect", BOOT, birth_seq, 2.0, "t",
                   1.0, 1.0)  # fmt: skip


def write(store: SharedStore, seqs: list[int], now: float = 5.0) -> None:
    store.begin_batch([])
    store.stage_shared([event(s) for s in seqs], {(NODE, BOOT): min(seqs)}, now)
    store.commit()


def gaps(store: SharedStore) -> list[tuple[int, int]]:
    rows = store.conn.execute(
        "SELECT first_seq, last_seq FROM gaps WHERE node_id=%s ORDER BY first_seq", (NODE,)
    ).fetchall()
    return [(a, b) for a, b in rows]


@pytest.fixture
def stores() -> Iterator[tuple[SharedStore, SharedStore]]:
    with scratch_database() as url:
        a, b = SharedStore(url), SharedStore(url)
        try:
            yield a, b
        finally:
            a.close()
            b.close()


@pytest.mark.slow  # a migrated scratch database each
def test_gaps_follow_the_events_whichever_store_writes(
    stores: tuple[SharedStore, SharedStore],
) -> None:
    a, b = stores
    write(a, [1, 2, 5])
    assert gaps(a) == [(3, 4)]
    write(b, [8, 3])
    assert gaps(a) == [(4, 4), (6, 7)]
    write(a, [4, 7, 6])
    assert gaps(a) == []
    seqs = a.load_seqs([(NODE, BOOT)])[(NODE, BOOT)]
    assert (seqs.high, seqs.gaps) == (8, [])


@pytest.mark.slow  # a migrated scratch database each
def test_concurrent_batches_leave_the_gaps_of_both(
    stores: tuple[SharedStore, SharedStore],
) -> None:
    """b's batch waits for a's gap lock: its recompute then sees a's committed events."""
    a, b = stores
    write(a, [1])
    a.begin_batch([])
    a.stage_shared([event(10)], {(NODE, BOOT): 10}, 5.0)  # holds the gap lock, uncommitted
    done = threading.Event()

    def other() -> None:
        write(b, [5])
        done.set()

    t = threading.Thread(target=other)
    t.start()
    assert not done.wait(0.5)  # blocked on a's lock (a bound, not a timing of the work)
    a.commit()
    t.join(30)
    assert done.is_set()
    assert gaps(a) == [(2, 4), (6, 9)]


@pytest.mark.slow  # a migrated scratch database each
def test_state_under_node_locks_and_conditional_offline(
    stores: tuple[SharedStore, SharedStore],
) -> None:
    a, b = stores
    assert a.begin_batch([NODE]) == {}
    a.stage_shared([node()], {}, 5.0)
    a.commit()
    rows = b.begin_batch([NODE])
    assert rows[NODE].state == "online"
    b.stage_shared([node(birth_seq=2)], {}, 6.0)
    b.commit()
    # A timeout judged on the first birth no longer applies; one on the current one does.
    assert not a.take_offline(NODE, BOOT, 1, "health_timeout", 7.0)
    assert a.take_offline(NODE, BOOT, 2, "will", 7.0)
    assert a.begin_batch([NODE])[NODE].state_reason == "will"
    a.commit()


def test_overdue_after_the_grace_and_never_within_the_hold() -> None:
    n = OnlineNode(NODE, BOOT, 1, 2.0, heard=100.0)
    assert overdue([n], 102.9, hold_until=0.0) == []
    assert overdue([n], 103.1, hold_until=0.0) == [n]
    assert overdue([n], 103.1, hold_until=110.0) == []


def test_shared_group_is_validated() -> None:
    assert CentralConfig.model_validate({"ingest": {"shared_group": "ingest"}}).ingest.members == 2
    for bad in ({"shared_group": "a/b"}, {"shared_group": "a+"}, {"members": 0}):
        with pytest.raises(ValidationError):
            CentralConfig.model_validate({"ingest": bad})
