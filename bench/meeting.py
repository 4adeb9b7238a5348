"""Meetings: time from the operator's click to the first decoded picture, and the edge's CPU
while it relays a 720p25 H.264 camera (docs/meetings.md).

    .venv/bin/python bench/meeting.py [--calls 20] [--relay-s 20]

Real peers on loopback: a private mosquitto, central (this process), the edge agent as its own
process (so its CPU is its own, read from /proc), the gst-rtsp-server test camera at
1280x720, 25 fps, a key frame every second, and Debian's headless Chromium on the meeting page.
``setup_p50_ms``: median over ``--calls`` calls of click -> first picture shown
(requestVideoFrameCallback), each call hung up before the next, without a prepare (the page's
``/api/v1/meetings/prepare`` requests are blocked, as with a central that has none: the
camera is opened by the offer). ``setup_prepared_p50_ms``: the same over ``--calls`` calls
as an operator makes them: the meeting page opened (its prepare has the node open the camera),
the click ``--click-after-s`` (2 s) later. ``edge_cpu_prepared_pct`` / ``edge_rss_prepared_mb``:
the agent's CPU and resident memory while a prepared camera lingers without a call (the cost
of a page opened and never called from, for the linger). ``edge_cpu_pct``: the agent's
CPU (user + system, % of one core) during ``--relay-s`` seconds of one call, and the same
agent idle for as long (the baseline, same run).

1:N broadcast (``--villages``, default 8): that many more agents, each its own process and
its own village of one township, and the broadcast page addressing all of them from Chromium's
fake camera. ``broadcast_setup_ms``: click -> the last village's leg connected;
``broadcast_village_fps_min``: the lowest rate at which a village decoded the operator's video
(from each agent's ``shilian_edge_broadcast_frames`` metric); ``central_cpu_pct_per_village``:
central's CPU (this process: the service, and Playwright's client, which idles) during
``--relay-s`` seconds of the broadcast minus the same central idle for as long (the baseline,
same run), divided by the number of villages; ``central_cpu_s_broadcast_setup``: its CPU
seconds from the click to the last leg connected (signalling, records, audit). Central relays
signalling only in a broadcast (docs/meetings.md "1:N"), so the former is close to zero.
``stages_p50_ms``: the set-up's stages on the page, ms after the click (median over the
calls): offer created, candidates gathered (the offer sent), answer back (central and the
node), ICE + DTLS connected, first picture. ``edge_stages_mean_ms``: the node's side, ms after
the offer reached it (mean, from its ``shilian_edge_meeting_setup_seconds`` histogram): camera
opened, answer ready, first packet handed to the sender. ``--keep-warm``: the node keeps its
camera open between calls (``[meetings] keep_warm``); ``edge_cpu_idle_pct`` and
``edge_rss_mb`` (the agent's resident memory after the calls) then include the open camera;
``edge_rss_before_calls_mb``: its resident memory before the first call (without keep_warm,
aiortc is not loaded yet).
Final line: JSON.
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
from central.meetings import PREPARE_KEEP  # noqa: E402
from central.service import CentralService  # noqa: E402
from shilian.broker import Mosquitto, free_port  # noqa: E402
from tests.camera_peers import SYSTEM_PYTHON  # noqa: E402
from tests.processes import add_user  # noqa: E402

NODE = "450102001003-a"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
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


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def setup_stages(metrics_port: int) -> dict[str, float]:
    """Mean ms per stage of the node's set-up histogram (shilian_edge_meeting_setup_seconds)."""
    from urllib.request import urlopen

    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    with urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            for suffix, into in (("_sum", sums), ("_count", counts)):
                head = f'shilian_edge_meeting_setup_seconds{suffix}{{stage="'
                if line.startswith(head):
                    stage = line[len(head) :].split('"', 1)[0]
                    into[stage] = float(line.rsplit(" ", 1)[1])
    return {k: round(1000 * sums[k] / counts[k], 1) for k in sums if counts.get(k)}


def start_edge(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", EDGE, str(config)], cwd=ROOT)


#: The broadcast's villages: one township's (registry), one node each.
TOWNSHIP_VILLAGES = [
    "450102001004", "450102001006", "450102001007", "450102001010", "450102001012",
    "450102001013", "450102001014", "450102001015", "450102001016", "450102001018",
]  # fmt: skip


def village_config(work: Path, broker_port: int, node: str, metrics_port: int) -> Path:
    """An agent without cameras: a broadcast needs none."""
    d = work / node
    d.mkdir()
    toml = d / "edge.toml"
    toml.write_text(
        f'node_id = "{node}"\nlog_level = "WARNING"\n[broker]\nport = {broker_port}\n'
        f'[outbox]\npath = "{d / "outbox.sqlite3"}"\n'
        f'[metrics]\nport = {metrics_port}\n[local_socket]\npath = "{d / "edge.sock"}"\n'
    )
    return toml


def broadcast_frames(metrics_port: int) -> float:
    """The agent's decoded broadcast video frames, from its /metrics."""
    from urllib.request import urlopen

    with urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith('shilian_edge_broadcast_frames_total{kind="video"}'):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def broadcast(
    b: object, base: str, svc: CentralService, ports: list[int], window_s: float
) -> dict[str, object]:
    """Broadcast to every village of ``ports`` (their metrics ports) from the broadcast page."""
    n = len(ports)
    ctx = await b.new_context(base_url=base)  # type: ignore[attr-defined]
    r = await ctx.request.post("/api/v1/login", data={"user": "op", "password": "pw-op-0123"})
    assert r.ok
    page = await ctx.new_page()
    await page.goto("/dashboard/broadcast?code=450102001")
    await page.evaluate("() => window.__broadcast.ready")
    c0 = cpu_s(os.getpid())
    await asyncio.sleep(window_s)
    idle_pct = 100 * (cpu_s(os.getpid()) - c0) / window_s
    # the 1:1 call's node is in the same township: only the broadcast's villages are chosen
    await page.uncheck(f"[data-test=broadcast-pick][value='{NODE}']")
    c_setup = cpu_s(os.getpid())
    await page.click("[data-test=broadcast-start]")
    deadline = time.monotonic() + 60
    while True:
        legs = await page.evaluate("() => window.__broadcast.legs")
        if len(legs) == n and all(v["state"] == "connected" for v in legs.values()):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the broadcast did not connect: {legs}")
        await asyncio.sleep(0.1)
    setup_ms = max(float(v["connectedMs"]) for v in legs.values())
    setup_cpu_s = cpu_s(os.getpid()) - c_setup
    await wait(lambda: all(broadcast_frames(p) > 0 for p in ports), "every village decoded")
    await asyncio.sleep(2.0)  # past the set-up
    f0 = [broadcast_frames(p) for p in ports]
    c0 = cpu_s(os.getpid())
    await asyncio.sleep(window_s)
    busy_pct = 100 * (cpu_s(os.getpid()) - c0) / window_s
    f1 = [broadcast_frames(p) for p in ports]
    sent = await page.evaluate(
        "() => Object.values(window.__broadcast.legs).reduce((a, l) => a + l.bytesSent, 0)"
    )
    await page.click("[data-test=broadcast-end]")
    await wait(lambda: svc.meetings.calls == {}, "broadcast ended")
    await ctx.close()
    return {
        "broadcast_villages": n,
        "broadcast_setup_ms": round(setup_ms, 1),
        "broadcast_village_fps_min": round(
            min(b - a for a, b in zip(f0, f1, strict=True)) / window_s, 1
        ),
        "broadcast_sent_mb": round(sent / 1e6, 1),
        "central_cpu_s_broadcast_setup": round(setup_cpu_s, 2),
        "central_cpu_pct_broadcast": round(busy_pct, 2),
        "central_cpu_pct_idle": round(idle_pct, 2),
        "central_cpu_pct_per_village": round((busy_pct - idle_pct) / n, 3),
    }


async def wait(cond, what: str, within: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {what}")
        await asyncio.sleep(0.05)


async def timed_call(page: object, svc: CentralService) -> dict[str, object]:
    """Click "call", wait for the first picture, hang up; the page's figures."""
    await page.click("[data-test=meeting-call]")  # type: ignore[attr-defined]
    await page.wait_for_function(  # type: ignore[attr-defined]
        "() => window.__meeting.firstFrameMs != null || window.__meeting.error",
        timeout=30_000,
    )
    m: dict[str, object] = await page.evaluate("() => window.__meeting")  # type: ignore[attr-defined]
    if m.get("error"):
        raise RuntimeError(m["error"])
    await page.click("[data-test=meeting-hangup]")  # type: ignore[attr-defined]
    await wait(lambda: svc.meetings.calls == {}, "hung up")
    await asyncio.sleep(0.5)  # the node frees its side (player thread, sockets)
    return m


def prepared_cameras(metrics_port: int) -> float:
    """The agent's cameras lingering after a prepare, from its /metrics."""
    from urllib.request import urlopen

    with urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("shilian_edge_meeting_prepared_cameras "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def run(
    calls: int, relay_s: float, villages: int, keep_warm: bool, click_after_s: float
) -> dict[str, object]:
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
    edge_metrics = free_port()
    edge_toml.write_text(
        f'node_id = "{NODE}"\nlog_level = "WARNING"\n[broker]\nport = {broker.port}\n'
        f'[outbox]\npath = "{work / "outbox.sqlite3"}"\n[metrics]\nport = {edge_metrics}\n'
        f'[local_socket]\npath = "{work / "edge.sock"}"\n'
        + ('[meetings]\nkeep_warm = ["cam-gate"]\n' if keep_warm else "")
        + f'[[cameras]]\nid = "cam-gate"\nrtsp_url = "rtsp://127.0.0.1:{port}/cam0"\n'
    )
    svc = CentralService(cfg)
    task = asyncio.create_task(svc.run())
    edge = start_edge(edge_toml)
    nodes = [f"{v}-a" for v in TOWNSHIP_VILLAGES[:villages]]
    ports = [free_port() for _ in nodes]
    village_edges = [
        start_edge(village_config(work, broker.port, n, p))
        for n, p in zip(nodes, ports, strict=True)
    ]
    setups: list[float] = []
    prepared: list[float] = []
    stages: dict[str, list[float]] = {}
    figures: dict[str, object] = {}
    try:
        await wait(lambda: svc._started.is_set() and svc.link.connected, "central up")
        # 2 x --calls page openings within a few minutes, one operator, one node: far beyond
        # what the per-user and per-node prepare limits allow an operator (docs/meetings.md)
        svc.meetings.prepare_limits = (PREPARE_KEEP, PREPARE_KEEP)
        await wait(lambda: svc.coverage.node_online(NODE) is True, "node online")
        await wait(lambda: all(svc.coverage.node_online(n) is True for n in nodes), "villages")
        await asyncio.sleep(5.0)  # a camera kept warm is open by now
        rss_before = rss_mb(edge.pid)
        async with async_playwright() as p:
            b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ctx = await b.new_context(base_url=f"http://127.0.0.1:{svc.http_port}")
            r = await ctx.request.post(
                "/api/v1/login", data={"user": "op", "password": "pw-op-0123"}
            )
            assert r.ok
            page = await ctx.new_page()
            # cold: no prepare reaches central (the node opens the camera on the offer)
            await page.route("**/api/v1/meetings/prepare", lambda route: route.abort())
            await page.goto(f"/dashboard/meeting?node={NODE}")
            await page.evaluate("() => window.__meeting.ready")
            for _ in range(calls):
                m = await timed_call(page, svc)
                setups.append(float(m["firstFrameMs"]))  # type: ignore[arg-type]
                for k, v in (m.get("stages") or {}).items():  # type: ignore[attr-defined]
                    stages.setdefault(k, []).append(float(v))
            edge_stages = setup_stages(edge_metrics)  # the cold calls' stages only
            await page.unroute("**/api/v1/meetings/prepare")
            # prepared: the page opened, the click a moment later, as an operator does
            for _ in range(calls):
                await page.goto(f"/dashboard/meeting?node={NODE}")
                await page.evaluate("() => window.__meeting.ready")
                ok = await page.evaluate("() => window.__meeting.prepared.ok")
                if not ok:
                    raise RuntimeError("the prepare was refused")
                await asyncio.sleep(click_after_s)
                m = await timed_call(page, svc)
                prepared.append(float(m["firstFrameMs"]))  # type: ignore[arg-type]
            # the cost of a prepared camera lingering without a call (one kept warm is open
            # anyway: nothing lingers)
            prepared_cpu: float | None = None
            prepared_rss: float | None = None
            if not keep_warm:
                await page.goto(f"/dashboard/meeting?node={NODE}")
                await page.evaluate("() => window.__meeting.ready")
                await wait(lambda: prepared_cameras(edge_metrics) == 1, "camera prepared")
                await asyncio.sleep(2.0)  # past the opening
                c0 = cpu_s(edge.pid)
                linger_window = min(relay_s, 20.0)  # inside the node's 60 s linger
                await asyncio.sleep(linger_window)
                prepared_cpu = round(100 * (cpu_s(edge.pid) - c0) / linger_window, 2)
                prepared_rss = round(rss_mb(edge.pid), 1)
                await wait(lambda: prepared_cameras(edge_metrics) == 0, "linger over", within=90)
            # the relay figures below, as before: the page without a prepare
            await page.route("**/api/v1/meetings/prepare", lambda route: route.abort())
            await page.goto(f"/dashboard/meeting?node={NODE}")
            await page.evaluate("() => window.__meeting.ready")
            edge_rss = rss_mb(edge.pid)
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
            if villages:
                base = f"http://127.0.0.1:{svc.http_port}"
                figures = await broadcast(b, base, svc, ports, relay_s)
            await b.close()
    finally:
        for e in (edge, *village_edges):
            e.terminate()
        for e in (edge, *village_edges):
            e.wait(30)
        svc.stop()
        await asyncio.wait_for(task, 30)
        cam.kill()
        cam.wait()
        broker.stop()
    return {
        "calls": len(setups),
        "setup_p50_ms": round(statistics.median(setups), 1),
        "setup_max_ms": round(max(setups), 1),
        "keep_warm": keep_warm,
        "calls_prepared": len(prepared),
        "setup_prepared_p50_ms": round(statistics.median(prepared), 1),
        "setup_prepared_max_ms": round(max(prepared), 1),
        "click_after_s": click_after_s,
        "edge_cpu_prepared_pct": prepared_cpu,
        "edge_rss_prepared_mb": prepared_rss,
        "stages_p50_ms": {k: round(statistics.median(v), 1) for k, v in stages.items()},
        "edge_stages_mean_ms": edge_stages,
        "edge_rss_mb": round(edge_rss, 1),
        "edge_rss_before_calls_mb": round(rss_before, 1),
        "edge_cpu_pct": round(relay_pct, 2),
        "edge_cpu_idle_pct": round(idle_pct, 2),
        "relayed_bitrate_kbps": round(float(stats.get("bitrate_kbps") or 0), 0),
        "relayed_fps": stats.get("fps"),
        "relayed_size": f"{stats.get('width')}x{stats.get('height')}",
        "central_cpu_pct_per_village": None,
        **figures,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--relay-s", type=float, default=20.0)
    ap.add_argument("--villages", type=int, default=8, help="1:N broadcast to this many")
    ap.add_argument("--keep-warm", action="store_true", help="the node keeps its camera open")
    ap.add_argument("--click-after-s", type=float, default=2.0, help="page opened -> click")
    args = ap.parse_args()
    figures = asyncio.run(
        run(args.calls, args.relay_s, min(args.villages, 10), args.keep_warm, args.click_after_s)
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
