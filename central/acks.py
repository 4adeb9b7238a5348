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
from wire.messages import MAX_ACK_BOOTS, MAX_ACK_MISSING, BootStored, CentralCaps, StoredAck

#: Seconds between flushes: every node with newly stored events gets at most one
#: acknowledgement per interval, whatever the number of events (a draining node sends
#: thousands per second; its outbox keeps them on disk meanwhile, so only this much more
#: re-sending after a fault).
ACK_INTERVAL_S = 0.2


def boot_stored(boot_id: str, state: SeqState) -> BootStored:
    """The acknowledgement of one boot's dedupe state. Past :data:`MAX_ACK_MISSING` gaps the
    acknowledgement stops below the first gap left out: it says less than is stored, never
    more (the node keeps those events a little longer and re-sends them)."""
    gaps = state.gaps
    upto = state.high
    if len(gaps) > MAX_ACK_MISSING:
        upto = gaps[MAX_ACK_MISSING][0] - 1
        gaps = gaps[:MAX_ACK_MISSING]
    return BootStored(boot_id=boot_id, upto=upto, missing=[(a, b) for a, b, _ in gaps])


class StoredAcks:
    """Pending acknowledgements, per node and boot, until the next flush."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[str, BootStored]] = {}

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
                self._pending.setdefault(node_id, {})[boot_id] = boot_stored(boot_id, state)

    def take(self, now: float) -> list[tuple[str, bytes]]:
        """(topic, payload) of one acknowledgement per node with pending boots; those boots are
        no longer pending. A node with more than :data:`MAX_ACK_BOOTS` keeps the rest."""
        out = []
        pending, self._pending = self._pending, {}
        for node_id, boots in pending.items():
            items = list(boots.values())
            if len(items) > MAX_ACK_BOOTS:
                self._pending[node_id] = {b.boot_id: b for b in items[MAX_ACK_BOOTS:]}
                items = items[:MAX_ACK_BOOTS]
            ack = StoredAck(node=node_id, ts=now, boots=items)
            out.append((Topics(node_id).ack, encode(ack)))
        return out


def caps_payload(now: float) -> bytes:
    """Central's retained capabilities: it acknowledges stored events."""
    return encode(CentralCaps(ts=now, stored_acks=True))
