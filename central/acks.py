"""Stored-acknowledgements to nodes: which of a node's events central has committed. Pure (no
I/O): the service tells it what a committed batch touched, and publishes what :meth:`take`
returns (docs/protocol.md, stored-acknowledgement).

The acknowledgement of one (node, boot) is its dedupe state as committed: every seq up to the
highest stored, minus the open gaps. It is read right after the commit of the batch that
touched it (the service holds its write lock from ingest to commit, so the state read then is
exactly what is on disk) and kept until the next flush; a later batch only replaces it with a
newer one. Duplicates mark their (node, boot) too: a node re-sending after a lost
acknowledgement hears again that the events are stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from central.store import SeqState
from wire import Topics, encode
from wire.messages import MAX_ACK_BOOTS, BootStored, CentralCaps, StoredAck

#: Seconds between flushes: every node with newly stored events gets at most one
#: acknowledgement per interval, whatever the number of events (a draining node sends
#: thousands per second; its outbox keeps them on disk meanwhile, so only this much more
#: re-sending after a fault).
ACK_INTERVAL_S = 0.2
#: Missing ranges sent per boot (the contract allows 1,000). A node draining device events
#: ahead of older information events leaves a gap between every two: 100 keep an
#: acknowledgement near 1 KB (at 5 a second per node during a drain) while still covering
#: hundreds of events; the rest is acknowledged as the gaps close from below.
ACK_MAX_RANGES = 100


def boot_stored(boot_id: str, high: int, gaps: list[tuple[int, int]]) -> BootStored:
    """The acknowledgement of one boot's dedupe state. Past :data:`ACK_MAX_RANGES` gaps it
    stops below the first gap left out: it says less than is stored, never more (the node
    keeps those events a little longer)."""
    upto = high
    if len(gaps) > ACK_MAX_RANGES:
        upto = gaps[ACK_MAX_RANGES][0] - 1
        gaps = gaps[:ACK_MAX_RANGES]
    return BootStored(boot_id=boot_id, upto=upto, missing=gaps)


class StoredAcks:
    """Pending acknowledgements, per node and boot, until the next flush."""

    def __init__(self) -> None:
        #: node -> boot -> (highest seq stored, the first open gaps): the state at the commit,
        #: made into a message only at the flush (a busy node is touched by many batches).
        self._pending: dict[str, dict[str, tuple[int, list[tuple[int, int]]]]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def committed(
        self, keys: Iterable[tuple[str, str]], seqs: Mapping[tuple[str, str], SeqState]
    ) -> None:
        """A batch touching ``keys`` (node, boot) is committed; ``seqs`` is the dedupe state
        now. Call it before anything else changes ``seqs``."""
        for node_id, boot_id in keys:
            state = seqs.get((node_id, boot_id))
            if state is not None:
                gaps = [(a, b) for a, b, _ in state.gaps[: ACK_MAX_RANGES + 1]]
                self._pending.setdefault(node_id, {})[boot_id] = (state.high, gaps)

    def take(self, now: float) -> list[tuple[str, bytes]]:
        """(topic, payload) of one acknowledgement per node with pending boots; those boots are
        no longer pending. A node with more than :data:`MAX_ACK_BOOTS` keeps the rest."""
        out = []
        pending, self._pending = self._pending, {}
        for node_id, boots in pending.items():
            items = list(boots.items())
            if len(items) > MAX_ACK_BOOTS:
                self._pending[node_id] = dict(items[MAX_ACK_BOOTS:])
                items = items[:MAX_ACK_BOOTS]
            stored = [boot_stored(boot, high, gaps) for boot, (high, gaps) in items]
            ack = StoredAck(node=node_id, ts=now, boots=stored)
            out.append((Topics(node_id).ack, encode(ack)))
        return out


def caps_payload(now: float) -> bytes:
    """Central's retained capabilities: it acknowledges stored events."""
    return encode(CentralCaps(ts=now, stored_acks=True))
