"""The outbox sender: publishes ``peek()``ed events at QoS 1 with a bounded in-flight window
and deletes each only after its PUBACK.

Within a priority, events go on the wire in acceptance order (one connection, QoS 1, in-order
delivery). Alarm-priority events go on the node's alarm topic (``event/alarm``), the rest on
``event``: central takes alarms on a session of its own, so they do not queue behind any node's
history in the broker (docs/protocol.md, the alarm lane). On a disconnect nothing is deleted:
everything unacknowledged is sent again, in order, after the reconnect (the only duplicates at
the wire level; central deduplicates). A publish the broker refuses (PUBACK reason >= 0x80) is
moved to the dead-letter table, counted, never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from edge.metrics import EdgeMetrics
from edge.mqtt_link import REASON_FAILURE, Link, LinkError
from edge.outbox import Outbox, Pending
from edge.session import NodeSession

#: Events in flight (published, PUBACK pending). Enough to fill a 4G round trip at a few
#: hundred events/s; small enough that a disconnect resends little.
WINDOW = 32

log = logging.getLogger("shilian.edge.sender")


class Sender:
    def __init__(
        self,
        session: NodeSession,
        outbox: Outbox,
        metrics: EdgeMetrics,
        clock: Callable[[], float],
    ) -> None:
        self.session = session
        self.outbox = outbox
        self.metrics = metrics
        self._clock = clock
        #: Clock time of the last successful PUBACK of anything we sent (health reports it).
        self.last_puback: float | None = None

    async def run(self) -> None:
        while True:
            link = await self.session.wait_link()
            with contextlib.suppress(LinkError):
                await self._pump(link)

    async def _pump(self, link: Link) -> None:
        inflight: dict[int, tuple[Pending, asyncio.Future[int]]] = {}
        topic_for = self.session.topics.event_for
        closed = asyncio.ensure_future(link.closed.wait())
        try:
            while True:
                self.outbox.new_events.clear()
                if len(inflight) < WINDOW:
                    for p in await self.outbox.peek(WINDOW - len(inflight), inflight.keys()):
                        inflight[p.id] = (p, link.publish_nowait(topic_for(p.priority), p.payload))
                waits: set[asyncio.Future[Any]] = {f for _, f in inflight.values()}
                waits.add(closed)
                new = None
                if len(inflight) < WINDOW:
                    new = asyncio.ensure_future(self.outbox.new_events.wait())
                    waits.add(new)
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if new is not None:
                        new.cancel()
                await self._settle(inflight)
                if closed.done():
                    raise LinkError("link closed")
        finally:
            closed.cancel()

    async def _settle(self, inflight: dict[int, tuple[Pending, asyncio.Future[int]]]) -> None:
        acked: list[int] = []
        now = self._clock()
        for row_id, (p, fut) in list(inflight.items()):
            if not fut.done():
                continue
            del inflight[row_id]
            if fut.exception() is not None:
                continue  # link lost: stays in the outbox, resent after the reconnect
            reason = fut.result()
            self.last_puback = now
            if reason >= REASON_FAILURE:
                self.metrics.rejected.labels(str(reason)).inc()
                log.error(
                    "node %s: broker refused event %d (reason %d): kept as dead letter",
                    self.session.topics.node_id,
                    row_id,
                    reason,
                )
                await self.outbox.dead_letter(row_id, reason)
                continue
            acked.append(row_id)
            self.metrics.sent.labels(p.priority.value).inc()
            self.metrics.latency.observe(max(0.0, now - p.accepted))
        if acked:
            # Not awaited: the next peek is queued behind this deletion on the outbox's writer
            # and sees it applied, so a new alarm is peeked and sent without waiting for this
            # commit first (the two usually share one transaction). A failed deletion only
            # means those events are sent again (central deduplicates).
            self.outbox.ack_nowait(acked).add_done_callback(self._acked)
        self.metrics.outbox_depth.set(self.outbox.depth)

    def _acked(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and (e := fut.exception()) is not None:
            log.info("node %s: sent events not deleted (%s)", self.session.topics.node_id, e)
        self.metrics.outbox_depth.set(self.outbox.depth)
