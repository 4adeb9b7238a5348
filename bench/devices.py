"""Cost of the device index (central/devices.py) at Nanning's scale, against recounting.

    python bench/devices.py [--changes 20000]

Nanning's registry (1,856 villages), one node per village (76.88% online), 16 cameras, a
conference terminal and an information-system link per node (33,408 devices). Measures: building
the index, one camera's health change applied (and the city's figure read after it), one node
going offline or online (18 devices suppressed or restored at once), and, as the baseline in the
same process, recounting the city's fully-connected figure from every device (what a
non-incremental implementation pays per change). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from central.devices import Device, DeviceIndex
from registry import Registry

ONLINE_SHARE = 0.7688
CAMERAS = 16
HEALTHS = ("ok", "ok", "ok", "black", "stalled", "unreachable")


def _quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _devices(node: str, rng: random.Random) -> list[Device]:
    out = [Device(node, f"cam{i}", "camera", "up", rng.choice(HEALTHS)) for i in range(CAMERAS)]
    out.append(Device(node, "terminal", "conference_terminal", "up", "ok"))
    out.append(Device(node, "infosys", "info_system", "up", "ok"))
    return out


def _recount(devices: dict[str, list[Device]], online: dict[str, bool]) -> int:
    """The city's fully-connected villages from scratch (the baseline)."""
    full = 0
    for node, devs in devices.items():
        if not online[node]:
            continue
        ok = {d.kind for d in devs if d.health == "ok"}
        full += "camera" in ok and "conference_terminal" in ok
    return full


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--changes", type=int, default=20000)
    args = p.parse_args()
    rng = random.Random(1)
    registry = Registry.from_package("4501")
    villages = [u.code for u in registry.villages()]
    nodes = [f"{v}-a" for v in villages]
    online = {n: i < round(len(nodes) * ONLINE_SHARE) for i, n in enumerate(nodes)}
    devices = {n: _devices(n, rng) for n in nodes}

    t0 = time.perf_counter()
    index = DeviceIndex(registry)
    index.apply((), online.items(), (d for devs in devices.values() for d in devs))
    build_s = time.perf_counter() - t0

    change: list[float] = []
    for _ in range(args.changes):
        n = rng.choice(nodes)
        i = rng.randrange(CAMERAS)
        d = devices[n][i]
        devices[n][i] = new = Device(n, d.device_id, "camera", "up", rng.choice(HEALTHS))
        t = time.perf_counter()
        index.set_device(new)
        index.summary("4501")
        change.append(time.perf_counter() - t)

    flip: list[float] = []
    for _ in range(args.changes // 10):
        n = rng.choice(nodes)
        online[n] = not online[n]
        t = time.perf_counter()
        index.set_node(n, online[n])
        flip.append(time.perf_counter() - t)

    assert index.summary("4501").fully_connected == _recount(devices, online)
    recount: list[float] = []
    for _ in range(50):
        t = time.perf_counter()
        _recount(devices, online)
        recount.append(time.perf_counter() - t)

    p50 = _quantile(change, 0.5)
    print(
        json.dumps(
            {
                "bench": "devices",
                "villages": len(villages),
                "devices": sum(len(v) for v in devices.values()),
                "build_s": round(build_s, 3),
                "change_p50_us": round(p50 * 1e6, 1),
                "change_p99_us": round(_quantile(change, 0.99) * 1e6, 1),
                "node_flip_p50_us": round(_quantile(flip, 0.5) * 1e6, 1),
                "node_flip_p99_us": round(_quantile(flip, 0.99) * 1e6, 1),
                "recount_p50_ms": round(_quantile(recount, 0.5) * 1e3, 2),
                "recount_over_change": round(_quantile(recount, 0.5) / p50, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
