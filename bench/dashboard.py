"""Time to first meaningful paint of the dashboard's overview, in Debian's headless Chromium.

    python bench/dashboard.py [--runs 5] [--no-province]

A private mosquitto, a real ``shilian central run`` and a fleet published as retained births
(one node per village, 76.88% online, the rest offline), then N page loads, each in a fresh
browser context (cold cache: what a wall screen sees after a reboot). "Meaningful paint" is the
page's own mark (``window.__shilian.ready``, ``performance.now()`` since navigation start): the
headline figures are in the DOM and the map has finished rendering (the ranking chart where the
scope has no map). Nanning (4501, 1,856 villages, with the county map) and a province of more
than 40,000 villages (河南 41, 52,378; no province map is vendored, so headline and ranking).
Targets: nanning_ms <= 1,500, province_ms <= 3,000. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paho.mqtt.enums import CallbackAPIVersion

import wire
from registry import Registry
from shilian.broker import Mosquitto
from tests.processes import Central, wait_for

ONLINE_SHARE = 0.7688  # the 2022 report's figure for Nanning
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PROVINCE = "41"
#: Outstanding QoS 1 publishes before waiting for their acks (keeps paho's queue bounded).
PUBLISH_WINDOW = 2000


def _publish_fleet(port: int, scope: str) -> tuple[int, int]:
    villages = [v.code for v in Registry.from_package(scope).villages()]
    online_until = round(len(villages) * ONLINE_SHARE)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(PUBLISH_WINDOW)
    client.connect("127.0.0.1", port)
    client.loop_start()
    boot = uuid.uuid4().hex
    pending = []
    for i, v in enumerate(villages):
        node = f"{v}-a"
        msg = wire.NodeState(
            node=node,
            state="online" if i < online_until else "offline",
            boot_id=boot,
            birth_seq=1,
            ts=time.time(),
            reason="connect" if i < online_until else "stopped",
            health_interval_s=wire.limits.MAX_HEALTH_INTERVAL_S,
        )
        pending.append(client.publish(wire.Topics(node).state, wire.encode(msg), 1, retain=True))
        if len(pending) >= PUBLISH_WINDOW:
            for p in pending:
                p.wait_for_publish(60)
            pending.clear()
    for p in pending:
        p.wait_for_publish(60)
    client.loop_stop()
    client.disconnect()
    return len(villages), online_until


def _measure(scope: str, runs: int, work: Path) -> dict[str, float | int]:
    (work / "mosquitto").mkdir(parents=True)
    broker = Mosquitto(workdir=work / "mosquitto")
    broker.start()
    central = Central(work / "central", broker.port, scope=scope)
    try:
        central.start()
        villages, online = _publish_fleet(broker.port, scope)
        wait_for(lambda: central.get("/healthz")["nodes_known"] == villages, 300, "fleet known")
        samples = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for _ in range(runs + 1):  # the first load warms the OS page cache, not counted
                    ctx = browser.new_context(viewport={"width": 1920, "height": 1080})
                    if central.token:  # central.auth: the page needs a session
                        ctx.add_cookies(
                            [
                                {
                                    "name": "shilian_session",
                                    "value": central.token,
                                    "url": central.api,
                                }
                            ]
                        )
                    page = ctx.new_page()
                    page.goto(central.api + "/dashboard/")
                    page.wait_for_selector('body[data-ready="1"]', timeout=60_000)
                    samples.append(float(page.evaluate("window.__shilian.ready")))
                    ctx.close()
            finally:
                browser.close()
        samples = samples[1:]
        return {
            "villages": villages,
            "online": online,
            "median_ms": round(statistics.median(samples), 1),
            "max_ms": round(max(samples), 1),
        }
    finally:
        central.close()
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-province", action="store_true")
    args = ap.parse_args()
    out: dict[str, object] = {"runs": args.runs}
    with tempfile.TemporaryDirectory() as tmp:
        nanning = _measure("4501", args.runs, Path(tmp) / "nanning")
        out["nanning_ms"] = nanning["median_ms"]
        out["nanning"] = nanning
        if not args.no_province:
            province = _measure(PROVINCE, args.runs, Path(tmp) / "province")
            out["province_ms"] = province["median_ms"]
            out["province"] = {"scope": PROVINCE, **province}
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
