"""The API's JSON of the device index (docs/api.md): a unit's ``video`` object in the coverage
answer, one device of ``GET /api/v1/devices``, and the effective state of a node detail's
devices."""

from __future__ import annotations

from typing import Any

from central.devices import DeviceIndex, DeviceView, UnitDevices
from wire.devices import CAMERA, CONFERENCE_TERMINAL, INFO_SYSTEM


def unit_json(index: DeviceIndex, code: str) -> dict[str, Any]:
    """The ``video`` object of a unit in the coverage API (docs/api.md)."""
    s = index.summary(code)
    out: dict[str, Any] = {
        "fully_connected": s.fully_connected,
        "fully_connected_ratio": s.ratio,
        "networks": dict(s.networks),
        "cameras": _kind_json(s, CAMERA),
        "terminals": _kind_json(s, CONFERENCE_TERMINAL),
        "info_system": _kind_json(s, INFO_SYSTEM),
    }
    if len(code) == 12:
        n = index.networks(code)
        out["village"] = {
            "video_network": n.video_network,
            "public_video": n.public_video,
            "info_system": n.info_system,
            "terminal": n.terminal,
            "fully_connected": n.fully_connected,
        }
    return out


def _kind_json(s: UnitDevices, kind: str) -> dict[str, Any]:
    states = s.states[kind]
    return {"total": sum(states.values()), "state": dict(states), "health": dict(s.healths[kind])}


def suppress(devices: list[dict[str, Any]], node_online: bool) -> None:
    """Mark a node detail's device rows (central.views) with their effective state: while the
    node is offline every device is ``unknown`` (``suppressed``), what it last said kept as
    ``reported_state``."""
    for d in devices:
        d["reported_state"] = d["state"]
        d["suppressed"] = not node_online
        if not node_online:
            d["state"] = "unknown"


def device_json(v: DeviceView) -> dict[str, Any]:
    """One device in the API: effective ``state``/``health`` and what the node last reported."""
    d = v.device
    return {
        "node_id": d.node_id,
        "device_id": d.device_id,
        "village": d.village,
        "kind": d.kind,
        "name": d.name,
        "state": v.state,
        "health": v.health,
        "suppressed": v.suppressed,
        "reported_state": d.state,
        "reported_health": d.health,
        "reason": d.reason,
        "since": d.since,
        "model": d.model,
        "firmware": d.firmware,
        "ts": d.ts,
    }
