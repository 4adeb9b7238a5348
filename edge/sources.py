"""The interface between the agent and what produces events (the alarm board, the SIA receiver,
the local socket and health; cameras and the conference terminal later), and the emit a source
uses when it keeps an event until the outbox has room for it."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from edge.outbox import DISK_FULL_RETRY_S, OutboxDiskFull
from wire import Event, Priority


class EventSink(Protocol):
    """What a source may do with the agent."""

    async def emit(
        self,
        priority: Priority | str,
        kind: str,
        device: str | None = None,
        data: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        key_ttl_s: float | None = None,
    ) -> Event:
        """Durably accept an event (in the outbox on disk when this returns). With ``key``
        (the event's identity at its source), idempotent: the same key again within
        ``key_ttl_s`` stores nothing and returns the first event (edge/outbox.py)."""
        ...

    async def set_device(
        self,
        device_id: str,
        kind: str,
        state: str,
        name: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Publish a device's retained state; remembered and re-published on reconnect."""
        ...

    async def remove_device(self, device_id: str) -> None:
        """Publish an empty retained payload for the device (it is gone)."""
        ...


class EventSource(Protocol):
    """A long-running producer, supervised by the agent's task group."""

    name: str

    async def run(self, sink: EventSink) -> None: ...


async def emit_waiting_for_room(
    sink: EventSink,
    priority: str,
    kind: str,
    device: str | None,
    data: dict[str, Any],
    key: str | None,
) -> None:
    """Emit; while the outbox disk is full, try again every second (the sink counts each
    refusal) instead of failing. For a source that holds the event itself until it is stored:
    the alarm board is acknowledged only after this returns, so it keeps the event (and
    everything after it) meanwhile; the zones decided the alarm before the emit, so failing here
    would lose it. Sending stored events deletes them and makes the room."""
    while True:
        try:
            await sink.emit(priority, kind, device, data, key=key)
            return
        except OutboxDiskFull:
            await asyncio.sleep(DISK_FULL_RETRY_S)
