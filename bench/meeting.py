"""Meetings: time from the operator's click to the first decoded picture, and the edge's CPU
while it relays a 720p25 H.264 camera (docs/meetings.md).

    .venv/bin/python bench/meeting.py [--calls 20] [--relay-s 20]

Real peers on loopback: a private mosquitto, central (this process), the edge agent as its own
process (so its CPU is its own, read from /proc), the gst-rtsp-server test camera at
1280x720, 25 fps, a key frame every second, and Debian's headless Chromium on the meeting page.
``setup_p50_ms``: median over ``--calls`` calls of click -> first picture shown
(requestVideoFrameCallback), each call hung up before the next. ``edge_cpu_pct``: the agent's
CPU (user + system, % of one core) during ``--relay-s`` seconds of one call, and the same
agent idle for as long (the baseline, same run). 1:N broadcast is not built:
``central_cpu_pct_per_village`` is null. Final line: JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from central.config import BrokerConfig, CentralConfig, HttpConfig, StoreConfig  # noqa: E402
from central.service import CentralService  # noqa: E402
from shilian.broker import Mosquitto, free_port  # noqa: E402
from tests.camera_peers import SYSTEM_PYTHON  # noqa: E402
from tests.processes import add_user  # noqa: E402

NODE = "450102001003-a"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--use-fake-ui-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--allow-loopback-in-peer-connection",
]  # fmt: skip
#: The edge agent, with aioice's host addresses limited to loopback (it skips 127.0.0.1).
EDGE = (
    "import aioice.ice, sys; aioice.ice.get_host_addresses = lambda **_: ['127.0.0.1'];"
    "from edge.runner import main; sys.exit(main(['--config', sys.argv[1]]))"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start_camera(port: int) -> subprocess.Popen[bytes]:
    """The test camera at 720p25, one key frame a second (x264 key-int-max = fps)."""
    cam = subprocess.Popen(
        [SYSTEM_PYTHON, str(ROOT / "tests" / "rtsp_camera.py"), "--port", str(port),
         "--width", "1280", "--height", "720", "--fps", "25"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert cam.stdout is not None and cam.stdout.readline().startswith(b"READY")
    return cam


def start_edge(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", EDGE, str(config)], cwd=ROOT)


async def wait(cond, what: str, within: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {what}")
        await asyncio.sleep(0.05)


async def run(calls: int, relay_s: float) -> dict[str, object]:
    from playwright.async_api import async_playwright

    work = Path(tempfile.mkdtemp(prefix="bench-meeting-"))
    (work / "mosquitto").mkdir()
    broker = Mosquitto(workdir=work / "mosquitto")
    broker.start()
    port = free_port()
    cam = start_camera(port)
    cfg = CentralConfig(
        broker=BrokerConfig(port=broker.port, client_id="central-bench", keepalive_s=5),
        store=StoreConfig(path=work / "central.db"),
        http=HttpConfig(port=0),
    )
    add_user(cfg.store.path, "op", "operator", "", password="pw-op-0123")
    edge_toml = work / "edge.toml"
    edge_toml.write_text(
        f'node_id = "{NODE}"\nlog_level = "WARNING"\n[broker]\nport = {broker.port}\n'
        f'[outbox]\npath = "{work / "outbox.sqlite3"}"\n[metrics]\nenabled = false\n'
        f'[local_socket]\npath = "{work / "edge.sock"}"\n'
        f'[[cameras]]\nid = "cam-gate"\nrtsp_url = "rtsp://127.0.0.1:{port}/cam0"\n'
    )
    svc = CentralService(cfg)
    task = asyncio.create_task(svc.run())
    edge = start_edge(edge_toml)
    setups: list[float] = []
    try:
        await wait(lambda: svc._started.is_set() and svc.link.connected, "central up")
        await wait(lambda: svc.coverage.node_online(NODE) is True, "node online")
        async with async_playwright() as p:
            b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ctx = await b.new_context(base_url=f"http://127.0.0.1:{svc.http_port}")
            r = await ctx.request.post(
                "/api/v1/login", data={"user": "op", "password": "pw-op-0123"}
            )
            assert r.ok
            page = await ctx.new_page()
            await page.goto(f"/dashboard/meeting?node={NODE}")
            await page.evaluate("() => window.__meeting.ready")
            for _ in range(calls):
                await page.click("[data-test=meeting-call]")
                await page.wait_for_function(
                    "() => window.__meeting.firstFrameMs != null || window.__meeting.error",
                    timeout=30_000,
                )
                m = await page.evaluate("() => window.__meeting")
                if m.get("error"):
                    raise RuntimeError(m["error"])
                setups.append(float(m["firstFrameMs"]))
                await page.click("[data-test=meeting-hangup]")
                await wait(lambda: svc.meetings.calls == {}, "hung up")
                await asyncio.sleep(0.5)  # the node frees its side (player thread, sockets)
            # the agent's CPU: idle, then relaying one call, same length
            c0 = cpu_s(edge.pid)
            await asyncio.sleep(relay_s)
            idle_pct = 100 * (cpu_s(edge.pid) - c0) / relay_s
            await page.click("[data-test=meeting-call]")
            await page.wait_for_function("() => window.__meeting.firstFrameMs != null")
            await asyncio.sleep(2.0)  # past the set-up
            c0 = cpu_s(edge.pid)
            await asyncio.sleep(relay_s)
            relay_pct = 100 * (cpu_s(edge.pid) - c0) / relay_s
            stats = await page.evaluate("() => window.__meeting.stats")
            await page.click("[data-test=meeting-hangup]")
            await wait(lambda: svc.meetings.calls == {}, "hung up")
            await b.close()
    finally:
        edge.terminate()
        edge.wait(30)
        svc.stop()
        await asyncio.wait_for(task, 30)
        cam.kill()
        cam.wait()
        broker.stop()
    return {
        "calls": len(setups),
        "setup_p50_ms": round(statistics.median(setups), 1),
        "setup_max_ms": round(max(setups), 1),
        "edge_cpu_pct": round(relay_pct, 2),
        "edge_cpu_idle_pct": round(idle_pct, 2),
        "relayed_bitrate_kbps": round(float(stats.get("bitrate_kbps") or 0), 0),
        "relayed_fps": stats.get("fps"),
        "relayed_size": f"{stats.get('width')}x{stats.get('height')}",
        "central_cpu_pct_per_village": None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--relay-s", type=float, default=20.0)
    args = ap.parse_args()
    figures = asyncio.run(run(args.calls, args.relay_s))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
