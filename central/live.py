"""Live changes for the dashboard: a small in-process publish/subscribe of what central just
committed (node state changes, the coverage of the units they touch, new events).

Fed by the service after each committed batch (:meth:`LiveHub.committed`), read by the
server-sent events route (central.dashboard). Pure apart from waking waiters: no I/O, the time
is passed in. Each subscriber has a bounded queue; a subscriber that falls behind (a stalled
browser tab) is not allowed to grow memory: its queue is replaced by one ``resync`` message and
the page reloads its figures from the API. Nothing here survives a restart (a page reconnects and
reloads; the store has the truth).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from central.coverage import CoverageIndex
from central.freshness import LinkStatus
from central.store import EventRow, Write

#: Messages queued per subscriber: a burst of a few hundred node changes (a county's uplink
#: failing) fits; past that a page is better off reloading everything once (``resync``).
MAX_QUEUE = 512
#: Events forwarded per committed batch: the page shows the last few; at ingest rates of
#: thousands per second the rest would only cost CPU on central and on every open page.
MAX_EVENTS_PER_BATCH = 20
#: Subscribers at once: a governance centre has a few wall screens and desks; the cap keeps a
#: misbehaving script from holding thousands of streams.
MAX_SUBSCRIBERS = 200
#: Streams one user may hold at once: a video wall and a few operator screens, not the whole
#: pool (one user's tabs or a script could otherwise take all :data:`MAX_SUBSCRIBERS`).
MAX_STREAMS_PER_USER = 8


@dataclass(frozen=True, slots=True)
class Message:
    """One server-sent event: its type (``node``, ``coverage``, ``event``, ``resync``, ``link``,
    ``alert``, ``admin``) and data."""

    kind: str
    data: dict[str, Any]


def visible(message: Message, scope: str, admin: bool = False) -> bool:
    """Whether a user whose scope is ``scope`` (a division-code prefix) may see ``message``:
    node, event and devices messages by their village, coverage by its unit (units above the
    scope are not shown: their figures include other counties); ``admin`` (a rule, webhook or
    user changed) to admins only; hello and resync go to everyone."""
    if message.kind == "admin":
        return admin
    if message.kind in ("node", "event", "devices"):
        return str(message.data.get("village", "")).startswith(scope)
    if message.kind == "coverage":
        return str(message.data.get("code", "")).startswith(scope)
    return True


class TooManySubscribers(Exception):
    """Central already serves :data:`MAX_SUBSCRIBERS` live streams."""


class TooManyForUser(Exception):
    """This user already holds :data:`MAX_STREAMS_PER_USER` live streams."""


@dataclass(eq=False)
class Subscription:
    """A subscriber's queue; :meth:`LiveHub.unsubscribe` when done."""

    queue: deque[Message] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    dropped: int = 0  # messages replaced by a resync
    user: str = ""  # who holds it ("" : not counted per user)

    def take(self) -> list[Message]:
        """Everything queued, oldest first; clears the wake-up flag."""
        out = list(self.queue)
        self.queue.clear()
        self.wake.clear()
        return out


class LiveHub:
    """Fan-out of committed changes to the live subscribers. Use on the event loop's thread."""

    def __init__(
        self,
        coverage: CoverageIndex,
        ancestors: Callable[[str], Iterable[str]],
        clock: Callable[[], float],
    ) -> None:
        """``ancestors(village)``: codes of the units above a village, up to the scope's root."""
        self._coverage = coverage
        self._ancestors = ancestors
        self._clock = clock
        self._subs: set[Subscription] = set()
        self.published = 0
        #: Central's broker connection and last node traffic (central.freshness), sent with
        #: ``hello``, on every change and with every keepalive.
        self.link = LinkStatus()

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(self, user: str = "") -> Subscription:
        """A new stream for ``user``; :class:`TooManySubscribers` when central is full,
        :class:`TooManyForUser` when ``user`` holds :data:`MAX_STREAMS_PER_USER` already."""
        if user and sum(1 for s in self._subs if s.user == user) >= MAX_STREAMS_PER_USER:
            raise TooManyForUser()
        if len(self._subs) >= MAX_SUBSCRIBERS:
            raise TooManySubscribers()
        sub = Subscription(user=user)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def close(self) -> None:
        """End every stream (central is shutting down)."""
        for sub in self._subs:
            sub.closed = True
            sub.wake.set()
        self._subs.clear()

    def link_changed(self, connected: bool) -> None:
        """Central's broker connection went up or down: every page hears it at once."""
        if self.link.change(connected, self._clock()):
            self.publish([self.link_message()])

    def link_message(self) -> Message:
        return Message("link", self.link.as_json())

    def committed(self, writes: Iterable[Write], changes: Iterable[tuple[str, bool]]) -> None:
        """Publish what one committed batch changed. Cheap when nobody listens."""
        if not self._subs:
            return
        now = self._clock()
        messages: list[Message] = []
        touched: set[str] = set()
        for node_id, online in changes:
            village = node_id[:12]
            messages.append(
                Message(
                    "node",
                    {
                        "node_id": node_id,
                        "village": village,
                        "state": "online" if online else "offline",
                        "at": now,
                    },
                )
            )
            touched.add(village)
        units: set[str] = set()
        for village in touched:
            units.add(village)
            units.update(self._ancestors(village))
        for code in sorted(units, key=lambda c: (len(c), c)):
            try:
                c = self._coverage.summary(code)
            except KeyError:
                continue
            messages.append(
                Message(
                    "coverage",
                    {
                        "code": c.code,
                        "villages": c.villages,
                        "provisioned": c.provisioned,
                        "covered": c.covered,
                        "ratio": c.ratio,
                    },
                )
            )
        events = [w for w in writes if isinstance(w, EventRow)]
        for e in events[-MAX_EVENTS_PER_BATCH:]:
            messages.append(
                Message(
                    "event",
                    {
                        "node_id": e.node_id,
                        "village": e.village,
                        "seq": e.seq,
                        "ts": e.ts,
                        "priority": e.priority,
                        "kind": e.kind,
                        "device": e.device,
                    },
                )
            )
        if messages:
            self.publish(messages)

    def publish(self, messages: list[Message]) -> None:
        for sub in self._subs:
            if len(sub.queue) + len(messages) > MAX_QUEUE:
                sub.dropped += len(sub.queue) + len(messages)
                sub.queue.clear()
                sub.queue.append(Message("resync", {"at": self._clock()}))
            else:
                sub.queue.extend(messages)
            sub.wake.set()
        self.published += len(messages)
