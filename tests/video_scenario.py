"""A seeded scenario of a few dozen villages with nodes, cameras, conference terminals and the
information-system link, and the figures it should give, computed from scratch by the plainest
code (independent of central.devices' incremental index): the truth the index, the API, the
metrics and the dashboard are compared against."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import wire
from registry import Registry
from wire.devices import CameraHealth, LinkHealth, TerminalHealth, device_state

NANNING = Registry.from_package("4501")
#: Two counties, so that township, county and city figures all aggregate something.
COUNTIES = ("450102", "450103")
VILLAGES_PER_COUNTY = 18


@dataclass
class SimDevice:
    device_id: str
    kind: str
    health: str
    model: str = ""
    age_s: float = 3600.0  # how long ago this health began

    def state(self, node_id: str, ts: float) -> wire.DeviceState:
        detail: dict[str, Any] = {
            "health": self.health,
            "reason": f"{self.health} / {self.health}",
            "since": ts - self.age_s,
        }
        if self.model:
            detail["model"] = self.model
        return wire.DeviceState(
            node=node_id,
            ts=ts,
            kind=self.kind,
            state=device_state(self.health),
            name=self.device_id,
            detail=detail,
        )


@dataclass
class SimNode:
    node_id: str
    online: bool
    devices: list[SimDevice] = field(default_factory=list)


@dataclass
class Scenario:
    nodes: list[SimNode]

    @classmethod
    def seeded(cls, seed: int = 7) -> Scenario:
        rng = random.Random(seed)
        cam = list(CameraHealth)
        nodes: list[SimNode] = []
        for county in COUNTIES:
            villages = [u.code for u in NANNING.villages() if u.code.startswith(county)]
            for village in villages[:VILLAGES_PER_COUNTY]:
                for name in ("a", "b")[: 1 + (rng.random() < 0.2)]:
                    n = SimNode(f"{village}-{name}", rng.random() < 0.75)
                    for i in range(rng.randint(0, 4)):
                        health = CameraHealth.OK if rng.random() < 0.6 else rng.choice(cam)
                        age = rng.uniform(60, 7 * 86400)
                        n.devices.append(SimDevice(f"cam{i + 1}", "camera", health, "DS-2CD", age))
                    if rng.random() < 0.7:
                        th = (
                            TerminalHealth.OK
                            if rng.random() < 0.7
                            else rng.choice(
                                [TerminalHealth.UNAVAILABLE, TerminalHealth.UNREACHABLE]
                            )
                        )
                        n.devices.append(SimDevice("terminal", "conference_terminal", th))
                    if rng.random() < 0.6:
                        lh = LinkHealth.OK if rng.random() < 0.7 else LinkHealth.DOWN
                        n.devices.append(SimDevice("infosys", "info_system", lh))
                    nodes.append(n)
        return cls(nodes)

    def publish_all(self, publish: Any) -> None:
        """``publish(topic, payload, retain)`` every device state (retained), as agents do."""
        now = time.time()
        for n in self.nodes:
            for d in n.devices:
                publish(
                    wire.Topics(n.node_id).device(d.device_id),
                    wire.encode(d.state(n.node_id, now)),
                    True,
                )

    # -- the truth ----------------------------------------------------------------------------

    def villages_under(self, code: str) -> int:
        if len(code) == 12:
            return 1
        return sum(1 for u in NANNING.villages() if u.code.startswith(code))

    def village_flags(self, village: str) -> dict[str, bool]:
        online = [n for n in self.nodes if n.node_id[:12] == village and n.online]
        ok = {d.kind for n in online for d in n.devices if d.health == "ok"}
        flags = {
            "video_network": bool(online),
            "public_video": "camera" in ok,
            "info_system": "info_system" in ok,
            "terminal": "conference_terminal" in ok,
        }
        flags["fully_connected"] = (
            flags["video_network"] and flags["public_video"] and flags["terminal"]
        )
        return flags

    def truth(self, code: str) -> dict[str, Any]:
        villages = sorted({n.node_id[:12] for n in self.nodes if n.node_id.startswith(code)})
        flags = [self.village_flags(v) for v in villages]
        states: dict[str, dict[str, int]] = {
            "camera": {},
            "conference_terminal": {},
            "info_system": {},
        }
        for n in self.nodes:
            if not n.node_id.startswith(code):
                continue
            for d in n.devices:
                st = device_state(d.health) if n.online else "unknown"
                states[d.kind][st] = states[d.kind].get(st, 0) + 1
        total = self.villages_under(code)
        full = sum(f["fully_connected"] for f in flags)
        return {
            "villages": total,
            "fully_connected": full,
            "ratio": full / total,
            "networks": {
                k: sum(f[k] for f in flags)
                for k in ("video_network", "public_video", "info_system")
            },
            "states": states,
        }

    def units(self) -> list[str]:
        """Every unit the scenario touches, from the city down to its villages."""
        out = {"4501"}
        for n in self.nodes:
            v = n.node_id[:12]
            out.update((v[:6], v[:9], v))
        return sorted(out, key=lambda c: (len(c), c))
