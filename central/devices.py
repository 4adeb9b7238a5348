"""Cameras, conference terminals and the information-system link per unit, and the stricter
coverage figure they give: a pure, in-memory, incremental index (no I/O).

Definitions (docs/central.md, "Fully connected villages"):
- a device's *effective* health is the health its node reported (``detail.health``, contract in
  wire/devices.py), except while its node is offline: then it is ``node_offline`` and its state
  ``unknown`` (child suppression: the node's silence is one fault, not sixteen camera faults);
- 三网融合, per village: 综治视联网 (``video_network``) when a node of the village is online,
  公共视频监控 (``public_video``) when at least one camera of an online node is ``ok``, 综治信息系统
  (``info_system``) when an ``info_system`` device of an online node is ``ok``;
- a village is *fully connected* (村级视联网完全接通) when a node is online, at least one camera
  is ok and a conference terminal is ok. With several nodes in a village, any online node's
  devices count (the village has one meeting room; whichever box watches its terminal); a
  village with no terminal reported is not fully connected.

Each change recomputes the one village it touches (a village has tens of devices) and applies
the difference of that village's counts to its units (≤ 5 ancestors), so a query is O(1) per
unit whatever the size of the registry. Nothing here survives a restart: central rebuilds the
index from its ``devices`` and ``nodes`` tables at start-up.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from central.store import DeviceRow
from registry import VILLAGE_LEVEL, Registry
from wire.devices import CAMERA, CONFERENCE_TERMINAL, INFO_SYSTEM, device_state

#: Device kinds this index counts (the ones with a health vocabulary in wire/devices.py).
KINDS = (CAMERA, CONFERENCE_TERMINAL, INFO_SYSTEM)
#: Effective health of a device whose node is offline.
NODE_OFFLINE = "node_offline"
OK = "ok"
#: The three networks of 三网融合, in display order.
NETWORKS = ("video_network", "public_video", "info_system")
#: Longest ``reason`` / ``model`` / ``firmware`` kept from a node (operators read a line, not a
#: page; a misbehaving node cannot grow central's memory through them).
MAX_TEXT = 200

_FULL = "fully_connected"
_TERMINAL = "terminal_ok"


@dataclass(frozen=True, slots=True)
class Device:
    """One device as its node last reported it."""

    node_id: str
    device_id: str
    kind: str
    state: str  # as reported: up, degraded, down, unknown
    health: str  # detail.health, or derived from state for a node without the vocabulary
    name: str | None = None
    reason: str = ""
    since: float | None = None
    model: str = ""
    firmware: str = ""
    ts: float = 0.0

    @property
    def village(self) -> str:
        return self.node_id[:12]


@dataclass(frozen=True, slots=True)
class DeviceView:
    """A device as central shows it: effective state and health, and whether its node's being
    offline hides what it last reported (``suppressed``)."""

    device: Device
    state: str
    health: str
    suppressed: bool

    @property
    def ok(self) -> bool:
        return self.health == OK


@dataclass(frozen=True, slots=True)
class Networks:
    """三网融合 of one village, and whether it is fully connected."""

    video_network: bool
    public_video: bool
    info_system: bool
    terminal: bool

    @property
    def fully_connected(self) -> bool:
        return self.video_network and self.public_video and self.terminal


@dataclass(frozen=True, slots=True)
class UnitDevices:
    """Counts of one unit: villages per network and fully connected, devices by kind, state and
    health (effective: devices of offline nodes count as ``unknown`` / ``node_offline``)."""

    code: str
    villages: int
    fully_connected: int
    networks: Mapping[str, int]
    states: Mapping[str, Mapping[str, int]]  # kind -> state -> count
    healths: Mapping[str, Mapping[str, int]]  # kind -> health -> count

    @property
    def ratio(self) -> float:
        """Fully connected share of the unit's villages; 0.0 for a unit without villages."""
        return self.fully_connected / self.villages if self.villages else 0.0


def parse_device(
    node_id: str, device_id: str, kind: str, state: str, name: str | None, ts: float, detail: str
) -> Device:
    """A ``devices`` row (``detail`` as stored: JSON text) as a :class:`Device`. Total: a
    detail that is not what the contract says gives empty fields, never an error."""
    try:
        d = json.loads(detail)
    except (ValueError, RecursionError):
        d = {}
    if not isinstance(d, dict):
        d = {}
    health = d.get("health")
    if not isinstance(health, str) or not health:
        health = OK if state == "up" else state
    since = d.get("since")
    return Device(
        node_id=node_id,
        device_id=device_id,
        kind=kind,
        state=device_state(health) if isinstance(d.get("health"), str) else state,
        health=health[:MAX_TEXT],
        name=name,
        reason=_text(d.get("reason")),
        since=float(since) if isinstance(since, int | float) and since >= 0 else None,
        model=_text(d.get("model")),
        firmware=_text(d.get("firmware")),
        ts=ts,
    )


def _text(v: Any) -> str:
    return v[:MAX_TEXT] if isinstance(v, str) else ""


@dataclass(slots=True)
class _Village:
    nodes: dict[str, bool] = field(default_factory=dict)  # node_id -> online
    devices: dict[tuple[str, str], Device] = field(default_factory=dict)
    counts: dict[tuple[str, ...], int] = field(default_factory=dict)


class DeviceIndex:
    """Incremental device counters over one :class:`Registry`. Use from one thread (central's
    event loop)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._villages: dict[str, _Village] = {}
        self._units: dict[str, dict[tuple[str, ...], int]] = {}
        self._ancestors: dict[str, tuple[str, ...]] = {}
        self._villages_under: dict[str, int] = {}

    # -- updates ------------------------------------------------------------------------------

    def set_node(self, node_id: str, online: bool) -> bool:
        """A node is known and online or not. True if a figure changed."""
        return self._refreshed(self._put_node(node_id, online))

    def set_device(self, device: Device) -> bool:
        """Add or replace a device (other kinds than :data:`KINDS` are ignored)."""
        return self._refreshed(self._put_device(device))

    def remove_device(self, node_id: str, device_id: str) -> bool:
        return self._refreshed(self._drop_device(node_id, device_id))

    def apply(
        self,
        rows: Iterable[object],
        changes: Iterable[tuple[str, bool]],
        devices: Iterable[Device] = (),
    ) -> set[str]:
        """A committed batch: its ``DeviceRow`` writes (other writes are skipped), node changes
        and (at load) parsed ``devices``; each touched village is recounted once. Returns the
        villages whose figures or device list changed."""
        touched: set[str] = set()
        for r in rows:
            if not isinstance(r, DeviceRow):
                continue
            if r.removed:
                village = self._drop_device(r.node_id, r.device_id)
            else:
                village = self._put_device(
                    parse_device(r.node_id, r.device_id, r.kind, r.state, r.name, r.ts, r.detail)
                )
            if village is not None:
                touched.add(village)
        for d in devices:
            if (village := self._put_device(d)) is not None:
                touched.add(village)
        for node_id, online in changes:
            if (village := self._put_node(node_id, online)) is not None:
                touched.add(village)
        for village in touched:
            self._refresh(village, self._villages[village])
        return touched

    def _put_node(self, node_id: str, online: bool) -> str | None:
        """Record a node's state; its village if that changed anything (not yet recounted)."""
        v = self._village(node_id[:12])
        if v is None or v.nodes.get(node_id) == online:
            return None
        v.nodes[node_id] = online
        return node_id[:12]

    def _put_device(self, device: Device) -> str | None:
        if device.kind not in KINDS:
            return self._drop_device(device.node_id, device.device_id)
        v = self._village(device.village)
        if v is None:
            return None
        key = (device.node_id, device.device_id)
        v.nodes.setdefault(device.node_id, False)
        if v.devices.get(key) == device:
            return None
        v.devices[key] = device
        return device.village

    def _drop_device(self, node_id: str, device_id: str) -> str | None:
        v = self._villages.get(node_id[:12])
        if v is None or v.devices.pop((node_id, device_id), None) is None:
            return None
        return node_id[:12]

    def _refreshed(self, village: str | None) -> bool:
        if village is None:
            return False
        self._refresh(village, self._villages[village])
        return True

    # -- queries ------------------------------------------------------------------------------

    def summary(self, code: str) -> UnitDevices:
        """Counts of one unit. KeyError if ``code`` is not a unit of the registry."""
        unit = self._registry.unit(code)
        if unit is None:
            raise KeyError(code)
        counts = self._units.get(code, {})
        states: dict[str, dict[str, int]] = {k: {} for k in KINDS}
        healths: dict[str, dict[str, int]] = {k: {} for k in KINDS}
        for key, n in counts.items():
            if len(key) == 3:
                (states if key[1] == "state" else healths)[key[0]][key[2]] = n
        return UnitDevices(
            code=code,
            villages=1 if unit.level == VILLAGE_LEVEL else self._count_villages(code),
            fully_connected=counts.get((_FULL,), 0),
            networks={n: counts.get((n,), 0) for n in NETWORKS},
            states=states,
            healths=healths,
        )

    def networks(self, village: str) -> Networks:
        """三网融合 of one village (all False for a village without nodes)."""
        c = self._villages[village].counts if village in self._villages else {}
        return Networks(
            video_network=bool(c.get(("video_network",))),
            public_video=bool(c.get(("public_video",))),
            info_system=bool(c.get(("info_system",))),
            terminal=bool(c.get((_TERMINAL,))),
        )

    def devices(self, code: str) -> Iterator[DeviceView]:
        """Devices of the villages under ``code`` (a code prefix), by village, node, device."""
        for village in sorted(v for v in self._villages if v.startswith(code)):
            v = self._villages[village]
            for key in sorted(v.devices):
                yield self._view(v, v.devices[key])

    def view(self, node_id: str, device_id: str) -> DeviceView | None:
        v = self._villages.get(node_id[:12])
        d = None if v is None else v.devices.get((node_id, device_id))
        return None if v is None or d is None else self._view(v, d)

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _view(v: _Village, d: Device) -> DeviceView:
        if v.nodes.get(d.node_id):
            return DeviceView(d, d.state, d.health, False)
        return DeviceView(d, "unknown", NODE_OFFLINE, True)

    def _village(self, village: str) -> _Village | None:
        v = self._villages.get(village)
        if v is None:
            if not self._registry.has_village(village):
                return None
            chain = [village]
            parent = self._registry.parent_code(village)
            while parent is not None:
                chain.append(parent)
                parent = self._registry.parent_code(parent)
            self._ancestors[village] = tuple(chain)
            v = self._villages[village] = _Village()
        return v

    def _refresh(self, village: str, v: _Village) -> None:
        """Recount ``village`` and move the difference up its chain of units."""
        new = self._count(v)
        old = v.counts
        if new == old:
            return  # the device list changed (a name, a reason), the counts did not
        delta = {k: new.get(k, 0) - old.get(k, 0) for k in new.keys() | old.keys()}
        v.counts = new
        for unit in self._ancestors[village]:
            counts = self._units.setdefault(unit, {})
            for k, d in delta.items():
                if d:
                    n = counts.get(k, 0) + d
                    if n:
                        counts[k] = n
                    else:
                        del counts[k]
            if not counts:
                del self._units[unit]

    def _count(self, v: _Village) -> dict[tuple[str, ...], int]:
        c: dict[tuple[str, ...], int] = {}
        ok: set[str] = set()
        for d in v.devices.values():
            view = self._view(v, d)
            for key in ((d.kind, "state", view.state), (d.kind, "health", view.health)):
                c[key] = c.get(key, 0) + 1
            if view.ok:
                ok.add(d.kind)
        flags = {
            "video_network": any(v.nodes.values()),
            "public_video": CAMERA in ok,
            "info_system": INFO_SYSTEM in ok,
            _TERMINAL: CONFERENCE_TERMINAL in ok,
        }
        flags[_FULL] = flags["video_network"] and flags["public_video"] and flags[_TERMINAL]
        for name, on in flags.items():
            if on:
                c[(name,)] = 1
        return c

    def _count_villages(self, code: str) -> int:
        n = self._villages_under.get(code)
        if n is None:
            n = 0
            stack = [code]
            while stack:
                for child in self._registry.child_codes(stack.pop()):
                    if len(child) == 12:
                        n += 1
                    else:
                        stack.append(child)
            self._villages_under[code] = n
        return n
