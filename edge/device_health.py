"""One device's health as the node publishes it (docs/protocol.md, "Cameras, conference
terminals and the information-system link").

:class:`DeviceHealth` holds a device's ``health``, ``reason`` and ``since`` and its extra
detail (a camera's model, firmware, clock drift, zones). :meth:`DeviceHealth.publish` puts the
retained device state (``state`` from :func:`wire.devices.device_state`) and, only when the
health changed, a ``device_health`` event with the new detail into the outbox. A health event
that cannot be stored (disk full, agent stopping) is logged and dropped: the retained state
still says the same, and the next change is reported again.
"""

from __future__ import annotations

import logging
from typing import Any

from edge.outbox import OutboxError
from edge.sources import EventSink
from wire.devices import device_state

log = logging.getLogger("shilian.edge.device_health")

EVENT_KIND = "device_health"


class DeviceHealth:
    def __init__(
        self, node: str, device_id: str, kind: str, name: str, extra: dict[str, Any] | None = None
    ) -> None:
        self.node = node
        self.device_id = device_id
        self.kind = kind
        self.name = name
        self.extra: dict[str, Any] = dict(extra or {})
        self.health: str | None = None
        self.reason = ""
        self.since = 0.0
        self._dirty = False
        self._changed = False
        #: Health changes since start (each one a ``device_health`` event), for metrics.
        self.changes = 0

    def set(self, health: str, reason: str, wall: float) -> bool:
        """Record the health (``wall``: Unix time, the ``since`` of a new health); True if it
        changed. A new reason for the same health updates the state without an event."""
        if health == self.health:
            if reason != self.reason:
                self.reason, self._dirty = reason, True
            return False
        prev = self.health
        self.health, self.reason, self.since = health, reason, wall
        self._dirty = self._changed = True
        self.changes += 1
        level = logging.INFO if health == "ok" else logging.WARNING
        log.log(
            level,
            "node %s device %s: %s -> %s (%s)",
            self.node,
            self.device_id,
            prev,
            health,
            reason,
        )
        return True

    def update_extra(self, **values: Any) -> None:
        for k, v in values.items():
            if self.extra.get(k) != v:
                self.extra[k] = v
                self._dirty = True

    def detail(self) -> dict[str, Any]:
        return {
            "health": self.health,
            "reason": self.reason,
            "since": self.since,
            **{k: v for k, v in self.extra.items() if v is not None},
        }

    async def publish(self, sink: EventSink) -> None:
        """Publish what changed since the last call (nothing before the first health)."""
        if self.health is None or not self._dirty:
            return
        detail = self.detail()
        changed, self._dirty, self._changed = self._changed, False, False
        if changed:
            try:
                await sink.emit("device", EVENT_KIND, self.device_id, detail)
            except OutboxError as e:
                log.warning(
                    "node %s device %s: health event not stored (%s)", self.node, self.device_id, e
                )
        await sink.set_device(
            self.device_id, self.kind, device_state(self.health), self.name or None, detail
        )
