"""The interface between the agent and what produces events (cameras, alarm board, conference
terminal in later issues; the local socket and health in this one)."""

from __future__ import annotations

from typing import Any, Protocol

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
