"""The outbox sender: publishes ``peek()``ed events at QoS 1 with a bounded in-flight window.
On its PUBACK an event is marked sent, and deleted when central's stored-acknowledgement covers
it (the session hands those to the outbox); with an older central, which sends none, it is
deleted on its PUBACK (docs/protocol.md, stored-acknowledgement).

Within a priority, events go on the wire in acceptance order (one connection, QoS 1, in-order
delivery). Alarm-priority events go on the node's alarm topic (``event/alarm``), the rest on
``event``: central takes alarms on a session of its own, so they do not queue behind any node's
history in the broker (docs/protocol.md, the alarm lane). On a disconnect nothing is deleted:
everything not yet acknowledged by central is sent again, in order, after the reconnect, and
events central has not acknowledged within :data:`ACK_TIMEOUT_S` of their PUBACK are sent again
on the same connection, the wait doubling up to :data:`ACK_TIMEOUT_CAP_S` while central stays
silent (the duplicates this makes are dropped by central's dedupe). A publish the broker refuses
(PUBACK reason >= 0x80) is moved to the dead-letter table, counted, never retried.
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

#: Seconds after its PUBACK before an event central has not acknowledged is sent again. Central
#: acknowledges within ~0.2 s of its commit; a connected central that is this late lost the
#: message (a broker crash, or central's subscription not restored yet).
ACK_TIMEOUT_S = 15.0
#: The longest wait between such re-sends while central stays silent (a central down for hours
#: must not make every node re-send its backlog every 15 s when it returns).
ACK_TIMEOUT_CAP_S = 300.0

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
        self._ack_timeout = ACK_TIMEOUT_S
        self._next_check = clock() + ACK_TIMEOUT_S
        self._confirmed_seen = outbox.confirmed_total

    async def run(self) -> None:
        while True:
            link = await self.session.wait_link()
            with contextlib.suppress(LinkError):
                await self._pump(link)

    async def _pump(self, link: Link) -> None:
        inflight: dict[int, tuple[Pending, asyncio.Future[int]]] = {}
        topic_for = self.session.topics.event_for
        # What was sent on an earlier connection and never acknowledged by central may have
        # died with the broker: it goes again, first, in order.
        await self.outbox.resend()
        self._next_check = self._clock() + self._ack_timeout
        closed = asyncio.ensure_future(link.closed.wait())
        try:
            while True:
                if self._clock() >= self._next_check:
                    await self._resend_late()
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
                    await asyncio.wait(
                        waits,
                        timeout=max(0.0, self._next_check - self._clock()),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    if new is not None:
                        new.cancel()
                await self._settle(inflight)
                if closed.done():
                    raise LinkError("link closed")
        finally:
            closed.cancel()

    async def _resend_late(self) -> None:
        """Send again what central has not acknowledged in time; back off while it stays
        silent, start again from :data:`ACK_TIMEOUT_S` once it acknowledges something."""
        now = self._clock()
        if self.outbox.confirmed_total != self._confirmed_seen:
            self._confirmed_seen = self.outbox.confirmed_total
            self._ack_timeout = ACK_TIMEOUT_S
        if self.outbox.central_acks:
            n = await self.outbox.resend(now - self._ack_timeout)
            if n:
                self.metrics.resent.inc(n)
                log.warning(
                    "node %s: central has not acknowledged %d events %.0f s after their PUBACK: "
                    "sending them again",
                    self.session.topics.node_id,
                    n,
                    self._ack_timeout,
                )
                self._ack_timeout = min(ACK_TIMEOUT_CAP_S, self._ack_timeout * 2)
        self._next_check = now + self._ack_timeout

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
            if self.outbox.central_acks:
                await self.outbox.mark_sent(acked)  # deleted on central's acknowledgement
            else:
                await self.outbox.ack(acked)
        self.metrics.outbox_depth.set(self.outbox.depth)
