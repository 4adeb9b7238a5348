"""How fresh central's figures are: whether central is connected to its MQTT broker (through
which every node reaches it), since when, and when it last received anything from a node.

The dashboard shows this on every view (central.dashboard: the overview answer and the live
stream's ``link`` messages): with the broker gone the figures central serves are only what it
knew when the connection dropped, and the page must say so instead of looking live.

Pure: the service reports what happened with the time (``now``) passed in; nothing here reads a
clock or does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class LinkStatus:
    """Central's view of its broker connection. ``since`` is when the current state began
    (None before the first connection attempt ended); ``last_traffic`` when the last message
    from a node was committed (None since start-up until one is)."""

    connected: bool = False
    since: float | None = None
    last_traffic: float | None = None

    def change(self, connected: bool, now: float) -> bool:
        """Record the connection going up or down; whether that is a change."""
        if connected == self.connected and self.since is not None:
            return False
        self.connected = connected
        self.since = now
        return True

    def heard(self, now: float) -> None:
        """A batch of node messages was committed at ``now``."""
        self.last_traffic = now

    def as_json(self) -> dict[str, Any]:
        return {
            "broker_connected": self.connected,
            "since": self.since,
            "last_traffic": self.last_traffic,
        }
