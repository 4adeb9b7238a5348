"""When is a silent node offline? Pure: the caller passes ``now``.

A node is offline when its last will arrives (handled by ingest) or when no health came for
``HEALTH_GRACE_FACTOR`` x its announced interval, whichever comes first.

No false collapse (docs/central.md): the caller calls :meth:`Liveness.reset` each time central's
MQTT connection comes up (first connect, reconnect after a broker restart or a network cut, and
therefore also after central restarts) and does not call :meth:`tick` while the connection is
down. Every node believed online is then held at its last known state until the later of a full
grace period and ``reconnect_grace_s`` (``wire.limits.RECONNECT_GRACE_S``: the nodes' whole
reconnect window, backoff cap included) after the moment central can hear it again, unless its
own new birth, will or clean stop is seen first. So a node is never timed out for silence that was
central's own deafness, nor for the minute it may wait, by design, before reconnecting to a broker
that was away.

Last wills get the same treatment. mosquitto publishes the will of every connected node when it
shuts down, a moment before it closes central's own connection, and keeps them as the retained
state that central receives when it resubscribes after the restart. So a will does not take a
node offline at once: :meth:`Liveness.dying` moves its deadline to ``now + WILL_CONFIRM_S``, but
never before the hold that followed the last (re)connect; a newer birth cancels it; a health
report does not (the connection that sent it is dead). A node's new birth after the reconnect
ends its hold: a will after that birth is a death of this broker's life and applies a second
later.

A county's nodes reach central through their county broker's bridge (docs/scale.md). While that
bridge is down the ingest core does not expire them (their silence is the bridge's); when it is
back, :meth:`Liveness.restart` gives each a full grace period from the reconnect.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from wire.limits import HEALTH_GRACE_FACTOR, RECONNECT_GRACE_S

#: Heap entries are invalidated lazily; rebuild when stale ones outnumber live ones this much,
#: so memory stays proportional to the number of nodes, not to the number of health messages.
_COMPACT_FACTOR = 4
_COMPACT_MIN = 1024

#: How long a will waits before it takes its node offline while central stays connected. The
#: wills mosquitto sends while shutting down reach central milliseconds before central sees the
#: broker go; a second is ample on a loaded box and adds little to will detection (1.5 x the
#: node's keepalive).
WILL_CONFIRM_S = 1.0


class Liveness:
    """Health deadlines of the nodes central believes online."""

    def __init__(
        self,
        grace_factor: float = HEALTH_GRACE_FACTOR,
        reconnect_grace_s: float = RECONNECT_GRACE_S,
    ) -> None:
        self.grace_factor = grace_factor
        self.reconnect_grace_s = reconnect_grace_s
        self._deadline: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        # End of the hold given at the last reset, for nodes not born again since.
        self._floor: dict[str, float] = {}
        self._dying: set[str] = set()

    def __len__(self) -> int:
        return len(self._deadline)

    def deadline(self, node_id: str) -> float | None:
        return self._deadline.get(node_id)

    def alive(self, node_id: str, interval_s: float, now: float) -> None:
        """The node reported health at ``now`` (ignored once its will arrived; never earlier than
        the hold after a reconnect: health queued before an outage is no sign of a new life)."""
        if node_id not in self._dying:
            floor = self._floor.get(node_id, 0.0)
            self._set(node_id, max(now + self.grace_factor * interval_s, floor))

    def born(self, node_id: str, interval_s: float, now: float) -> None:
        """The node announced a new birth: alive, whatever will came before; its hold ends."""
        self._dying.discard(node_id)
        self._floor.pop(node_id, None)
        self._set(node_id, now + self.grace_factor * interval_s)

    def dying(self, node_id: str, now: float) -> None:
        """The node's will arrived: offline after :data:`WILL_CONFIRM_S` (see module doc)."""
        self._dying.add(node_id)
        self._set(node_id, max(now + WILL_CONFIRM_S, self._floor.get(node_id, 0.0)))

    def is_dying(self, node_id: str) -> bool:
        return node_id in self._dying

    def _set(self, node_id: str, d: float) -> None:
        self._deadline[node_id] = d
        heapq.heappush(self._heap, (d, node_id))
        if len(self._heap) > _COMPACT_MIN + _COMPACT_FACTOR * len(self._deadline):
            self._heap = [(d, n) for n, d in self._deadline.items()]
            heapq.heapify(self._heap)

    def forget(self, node_id: str) -> None:
        """The node is offline (clean stop, or timed out): no deadline."""
        self._deadline.pop(node_id, None)
        self._dying.discard(node_id)
        self._floor.pop(node_id, None)

    def reset(self, now: float, nodes: Iterable[tuple[str, float]]) -> None:
        """Central's connection just came up: every node in ``nodes`` ((id, interval) of the nodes
        believed online) is held until the later of a full grace period and the reconnect
        window from ``now``."""
        self._deadline.clear()
        self._heap.clear()
        self._dying.clear()
        self._floor.clear()
        for node_id, interval_s in nodes:
            self._hold(node_id, now + max(self.grace_factor * interval_s, self.reconnect_grace_s))

    def restart(self, node_id: str, interval_s: float, now: float) -> None:
        """Central can hear the node again from ``now`` (its county's bridge is back; the node
        itself stayed connected): a full grace period from ``now``, whatever came before."""
        self._hold(node_id, now + self.grace_factor * interval_s)

    def _hold(self, node_id: str, until: float) -> None:
        self._floor[node_id] = until
        self._set(node_id, until)

    def next_deadline(self) -> float | None:
        while self._heap and self._deadline.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def tick(self, now: float) -> list[str]:
        """Nodes whose deadline passed; the caller marks them offline (reason ``will`` if
        :meth:`is_dying`, else ``health_timeout``) and then calls :meth:`forget`."""
        expired = []
        while self._heap and self._heap[0][0] <= now:
            d, node_id = heapq.heappop(self._heap)
            if self._deadline.get(node_id) == d:
                del self._deadline[node_id]
                expired.append(node_id)
        return expired
