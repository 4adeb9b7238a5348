"""Stored-acknowledgements (docs/protocol.md): what central tells a node it has committed, from
the ingest's dedupe state. Pure: messages in, acknowledgements out."""

from __future__ import annotations

from central.acks import ACK_MAX_RANGES, StoredAcks
from central.store import SeqState
from tests.test_central_ingest import BOOT, BOOT2, NODE, NODE_B, alarm, event, feed, make_ingest
from wire import Topics, decode
from wire.messages import StoredAck


def acks_after(ing: object, book: StoredAcks) -> dict[str, StoredAck]:
    from central.ingest import Ingest

    assert isinstance(ing, Ingest)
    ing.take()
    book.committed(ing.take_acks(), ing.seqs)
    out = {}
    for topic, payload in book.take(now=5.0):
        ack = decode(StoredAck, payload)
        assert topic == Topics(ack.node).ack
        out[ack.node] = ack
    return out


def test_one_acknowledgement_per_node_covers_what_is_stored_and_not_the_gaps() -> None:
    ing, book = make_ingest(), StoredAcks()
    for seq in (1, 2, 3, 6):
        feed(ing, event(seq))
    feed(ing, alarm(9))  # the alarm lane overtook 7 and 8
    feed(ing, event(1, node=NODE_B))
    acks = acks_after(ing, book)
    assert set(acks) == {NODE, NODE_B}
    (mine,) = acks[NODE].boots
    assert mine.boot_id == BOOT and mine.upto == 9
    assert [s for s in range(1, 11) if mine.covers(s)] == [1, 2, 3, 6, 9]
    assert book.take(now=6.0) == []  # nothing new: nothing sent


def test_a_duplicate_is_acknowledged_again_and_only_its_boot() -> None:
    """A node re-sending after a lost acknowledgement hears again that the event is stored."""
    ing, book = make_ingest(), StoredAcks()
    feed(ing, event(1, boot=BOOT2))
    feed(ing, event(1))
    acks_after(ing, book)
    assert feed(ing, event(1)).ignored == "duplicate"  # type: ignore[attr-defined]
    (again,) = acks_after(ing, book)[NODE].boots
    assert again.boot_id == BOOT and again.covers(1)


def test_past_the_missing_bound_it_says_less_than_is_stored_never_more() -> None:
    state = SeqState(high=10 * ACK_MAX_RANGES)
    state.gaps = [(2 * i + 1, 2 * i + 1, 0.0) for i in range(ACK_MAX_RANGES + 5)]
    book = StoredAcks()
    book.committed([(NODE, BOOT)], {(NODE, BOOT): state})
    ((_, payload),) = book.take(now=1.0)
    (b,) = decode(StoredAck, payload).boots
    assert len(b.missing) == ACK_MAX_RANGES
    assert b.upto == 2 * ACK_MAX_RANGES  # just below the first gap left out
    assert not any(b.covers(first) for first, _, _ in state.gaps)
