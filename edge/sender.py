"""The outbox sender: publishes ``peek()``ed events at QoS 1 with bounded in-flight windows, one
for alarms and one for the rest (a fresh alarm never waits for a PUBACK of history: during a
drain the history window is always full).
On its PUBACK an event is marked sent, and deleted when central's stored-acknowledgement covers
it (the session hands those to the outbox); with an older central, which sends none, it is
deleted on its PUBACK (docs/protocol.md, stored-acknowledgement).

Within a priority, events go on the wire in acceptance order (one connection, QoS 1, in-order
delivery). Alarm-priority events go on the node's alarm topic (``event/alarm``), the rest on
``event``: central takes alarms on a session of its own, so they do not queue behind any node's
history in the broker (docs/protocol.md, the alarm lane). On a disconnect nothing is deleted:
everything not yet acknowledged by central is sent again, in order, after the reconnect. On one
connection an event is sent again when it turns out lost: central acknowledged a later event of
its lane (the outbox sees that), or the lane has had no acknowledgement for
:data:`ACK_TIMEOUT_S` — then only its newest event goes again, as a probe, the wait doubling up
to :data:`ACK_TIMEOUT_CAP_S` while central stays silent, so a central away for hours costs one
duplicate per lane every few minutes, not the backlog. Central drops the duplicates. A publish
the broker refuses (PUBACK reason >= 0x80) is moved to the dead-letter table, counted, never
retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from edge.metrics import EdgeMetrics
from edge.mqtt_link import REASON_FAILURE, Link, LinkError
from edge.outbox import Outbox, Pending
from edge.session import NodeSession
from wire import Priority

#: Events other than alarms in flight (published, PUBACK pending). Enough to fill a 4G round
#: trip at a few hundred events/s; small enough that a disconnect resends little.
WINDOW = 32
#: Alarms in flight, beside that window: a fresh alarm never waits for a PUBACK of history
#: (during a drain the history window is always full), only for its own commit and one read.
ALARM_WINDOW = 8

#: Seconds without any acknowledgement on a lane, with events of it sent and unacknowledged for
#: as long, before the newest of those is sent again as a probe. Central acknowledges within
#: ~0.2 s of its commit; behind a long backlog at the broker it is busy with our older events, and
#: their acknowledgements are progress, so this only fires when nothing comes back at all.
ACK_TIMEOUT_S = 15.0
#: The longest wait between probes while central stays silent.
ACK_TIMEOUT_CAP_S = 300.0
#: The lanes, by whether they are the alarm lane (edge.outbox_db).
LANES = (True, False)

log = logging.getLogger("shilian.edge.sender")


class Sender:
    def __init__(
        self,
        session: NodeSession,
        outbox: Outbox,
        metrics: EdgeMetrics,
        clock: Callable[[], float],
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock``: wall time (event latency from acceptance); ``mono``: the timeouts' clock,
        the one :class:`~edge.outbox.Outbox` stamps sends and acknowledgements with, so a step
        of the wall clock neither fires nor stalls a probe."""
        self.session = session
        self.outbox = outbox
        self.metrics = metrics
        self._clock = clock
        self._mono = mono
        #: Monotonic time of the last successful PUBACK of anything we sent (health reports it).
        self.last_puback: float | None = None
        #: Per lane: the current silence before a probe, and since when we count silence.
        self._ack_timeout = dict.fromkeys(LANES, ACK_TIMEOUT_S)
        self._quiet_since = dict.fromkeys(LANES, mono())
        self._next_check = mono() + ACK_TIMEOUT_S

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
        now = self._mono()
        self._quiet_since = dict.fromkeys(LANES, now)
        self._next_check = now + min(self._ack_timeout.values())
        closed = asyncio.ensure_future(link.closed.wait())
        try:
            while True:
                if self.outbox.depth and self._mono() >= self._next_check:
                    await self._resend_late()
                self.outbox.new_events.clear()
                alarms = sum(1 for p, _ in inflight.values() if p.priority is Priority.ALARM)
                room, alarm_room = WINDOW - (len(inflight) - alarms), ALARM_WINDOW - alarms
                if room > 0 or alarm_room > 0:
                    due = await self.outbox.peek(room, inflight.keys(), alarms=alarm_room)
                    for p in due:
                        inflight[p.id] = (p, link.publish_nowait(topic_for(p.priority), p.payload))
                waits: set[asyncio.Future[Any]] = {f for _, f in inflight.values()}
                waits.add(closed)
                # Woken by a new event even with the history window full: it may be an alarm.
                new = asyncio.ensure_future(self.outbox.new_events.wait())
                waits.add(new)
                try:
                    # An empty outbox has nothing to probe for: an idle node sleeps until an
                    # event or a PUBACK (a process may run ~1,800 agents).
                    timeout = max(0.0, self._next_check - self._mono())
                    await asyncio.wait(
                        waits,
                        timeout=timeout if self.outbox.depth else None,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    new.cancel()
                await self._settle(inflight)
                if closed.done():
                    raise LinkError("link closed")
        finally:
            closed.cancel()

    async def _resend_late(self) -> None:
        """Probe each lane central has been silent on for its timeout: its newest sent event
        goes again (once central stores it, those sent before it and missing go too). The
        timeout doubles per probe and starts again from :data:`ACK_TIMEOUT_S` once an
        acknowledgement deletes something on the lane."""
        now = self._mono()
        if self.outbox.central_acks:
            for lane in LANES:
                await self._check_lane(lane, now)
        self._next_check = min(self._quiet_since[k] + self._ack_timeout[k] for k in LANES)
        self._next_check = max(self._next_check, now + 1.0)  # at most one check a second

    async def _check_lane(self, lane: bool, now: float) -> None:
        progress = self.outbox.lane_progress.get(lane)
        if progress is not None and progress > self._quiet_since[lane]:
            self._quiet_since[lane] = progress
            self._ack_timeout[lane] = ACK_TIMEOUT_S
        timeout = self._ack_timeout[lane]
        if now - self._quiet_since[lane] < timeout:
            return
        if await self.outbox.probe(lane, now - timeout):
            self.metrics.resent.inc()
            log_at = logging.WARNING if timeout == ACK_TIMEOUT_S else logging.DEBUG
            log.log(
                log_at,
                "node %s: no stored-acknowledgement from central for %.0f s (%s lane): "
                "sending the newest unacknowledged event again",
                self.session.topics.node_id,
                now - self._quiet_since[lane],
                "alarm" if lane else "event",
            )
            self._ack_timeout[lane] = min(ACK_TIMEOUT_CAP_S, timeout * 2)
        self._quiet_since[lane] = now

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
            self.last_puback = self._mono()
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
                # Not awaited: the next peek is queued behind this deletion on the outbox's
                # writer and sees it applied, so a new alarm is peeked and sent without waiting
                # for this commit first. A failed deletion only means those events are sent
                # again (central deduplicates).
                self.outbox.ack_nowait(acked).add_done_callback(self._acked)
        self.metrics.outbox_depth.set(self.outbox.depth)

    def _acked(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and (e := fut.exception()) is not None:
            log.info("node %s: sent events not deleted (%s)", self.session.topics.node_id, e)
        self.metrics.outbox_depth.set(self.outbox.depth)
