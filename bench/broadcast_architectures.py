"""1:N broadcast: which architecture (docs/meetings.md "1:N"). Measures, for 2 and 8 villages:

- ``direct``: the operator's browser opens one peer connection per village and sends its
  camera to each (central relays signalling only);
- ``relay``: the browser sends one stream to central, which receives it with aiortc and
  forwards it through a ``MediaRelay`` to one peer connection per village.

    .venv/bin/python bench/broadcast_architectures.py [--villages 2 8] [--window-s 15]

Real peers on loopback: Debian's headless Chromium with its fake camera (640x360, 15 fps) and
microphone is the operator; the villages are aiortc receivers that decode every frame, all in
one child process; central's relay is its own child process, so each CPU figure is one
process's (user + system from /proc, % of one core; Chromium: the sum of its processes).
Signalling is passed by this script directly (no MQTT): only the media paths are compared.
Per run: ``setup_ms`` (start -> every village decoded a first frame), CPU of central (relay
only: central is not in the media path of ``direct``), of the browser and of the villages over
``--window-s`` seconds after set-up, the browser's uplink (kbit/s, all its peer connections),
and the frames per second each village decoded. Final line: JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--allow-loopback-in-peer-connection",
]  # fmt: skip
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: What the broadcast page sends (central/dashboard/broadcast.js).
MEDIA = "{video: {width: {ideal: 640}, height: {ideal: 360}, frameRate: {ideal: 15}}, audio: true}"

# -- the child processes: villages and central's relay -----------------------------------------


def _loopback_ice() -> None:
    import aioice.ice

    aioice.ice.get_host_addresses = lambda **_: ["127.0.0.1"]  # aioice skips 127.0.0.1


async def _lines(handle: Any) -> None:
    """Answer JSON commands from stdin, one line each, with ``handle(cmd) -> dict``."""
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        out = await handle(json.loads(line))
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


async def _villages() -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    pcs: list[Any] = []
    frames: list[int] = []
    first: list[float | None] = []
    tasks: set[asyncio.Task[None]] = set()

    async def drain(i: int, track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                if track.kind == "video":
                    frames[i] += 1
                    if first[i] is None:
                        first[i] = time.time()

    async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["cmd"] == "answer":
            i = len(pcs)
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pcs.append(pc)
            frames.append(0)
            first.append(None)

            @pc.on("track")
            def _track(track: Any, i: int = i) -> None:
                task = asyncio.ensure_future(drain(i, track))
                tasks.add(task)

            await pc.setRemoteDescription(RTCSessionDescription(cmd["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            return {"sdp": pc.localDescription.sdp}
        if cmd["cmd"] == "stats":
            return {"frames": frames, "first": first}
        for pc in pcs:
            await pc.close()
        return {}

    await _lines(handle)


async def _relay() -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaRelay

    relay = MediaRelay()
    tracks: dict[str, Any] = {}
    inbound = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    outbound: list[Any] = []

    @inbound.on("track")
    def _track(track: Any) -> None:
        tracks[track.kind] = track

    async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["cmd"] == "ingest":
            await inbound.setRemoteDescription(RTCSessionDescription(cmd["sdp"], "offer"))
            await inbound.setLocalDescription(await inbound.createAnswer())
            return {"sdp": inbound.localDescription.sdp}
        if cmd["cmd"] == "offers":
            sdps = []
            for _ in range(cmd["n"]):
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                for track in tracks.values():
                    pc.addTrack(relay.subscribe(track))
                await pc.setLocalDescription(await pc.createOffer())
                outbound.append(pc)
                sdps.append(pc.localDescription.sdp)
            return {"sdps": sdps}
        if cmd["cmd"] == "answers":
            for pc, sdp in zip(outbound, cmd["sdps"], strict=True):
                await pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
            return {}
        for pc in (inbound, *outbound):
            await pc.close()
        return {}

    await _lines(handle)


# -- the orchestration ----------------------------------------------------------------------


class Child:
    def __init__(self, role: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--role", role],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True,
        )  # fmt: skip

    async def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = await asyncio.to_thread(self.proc.stdout.readline)
        if not line:
            raise RuntimeError(f"child {self.proc.args!r} died")
        out: dict[str, Any] = json.loads(line)
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def chromium_pids() -> list[int]:
    """Chromium's processes started by this script (descendants of it, named chromium)."""
    parent: dict[int, int] = {}
    names: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (d / "stat").read_text()
            names[int(d.name)] = stat[stat.index("(") + 1 : stat.rindex(")")]
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    me = os.getpid()

    def mine(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 1)
            if pid == me:
                return True
        return False

    return [p for p, n in names.items() if "chrom" in n and mine(p)]


def cpu_of(pids: list[int]) -> float:
    return sum(cpu_s(p) for p in pids)


PAGE = """
async ([n, mode]) => {
  const stream = await navigator.mediaDevices.getUserMedia(MEDIA);
  const pcs = [];
  const offers = [];
  for (let i = 0; i < n; i++) {
    const pc = new RTCPeerConnection({iceServers: []});
    for (const t of stream.getTracks())
      pc.addTransceiver(t, {direction: "sendonly", streams: [stream]});
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((r) => { if (pc.iceGatheringState === "complete") r();
      pc.addEventListener("icegatheringstatechange",
        () => pc.iceGatheringState === "complete" && r());
      setTimeout(r, 3000); });
    pcs.push(pc);
    offers.push(pc.localDescription.sdp);
  }
  window.__pcs = pcs;
  window.__stream = stream;
  return offers;
}
""".replace("MEDIA", MEDIA)


async def bytes_sent(page: Any) -> float:
    total: float = await page.evaluate(
        """async () => { let b = 0; for (const pc of window.__pcs) {
             (await pc.getStats()).forEach((r) => {
               if (r.type === "outbound-rtp") b += r.bytesSent || 0; });
           } return b; }"""
    )
    return total


async def one_run(browser: Any, base: str, mode: str, n: int, window_s: float) -> dict[str, Any]:
    villages = Child("villages")
    relay = Child("relay") if mode == "relay" else None
    page = await browser.new_page()
    try:
        await page.goto(base)
        t0 = time.time()
        offers = await page.evaluate(PAGE, [1 if relay else n, mode])
        if relay is None:
            answers = [(await villages.ask(cmd="answer", sdp=o))["sdp"] for o in offers]
        else:
            answers = [(await relay.ask(cmd="ingest", sdp=offers[0]))["sdp"]]
        await page.evaluate(
            """async (answers) => { for (let i = 0; i < answers.length; i++)
                 await window.__pcs[i].setRemoteDescription(
                   {type: "answer", sdp: answers[i]}); }""",
            answers,
        )
        if relay is not None:
            await asyncio.sleep(0.5)  # the relay has the browser's tracks once set up
            sdps = (await relay.ask(cmd="offers", n=n))["sdps"]
            got = [(await villages.ask(cmd="answer", sdp=s))["sdp"] for s in sdps]
            await relay.ask(cmd="answers", sdps=got)
        deadline = time.monotonic() + 60
        while True:
            st = await villages.ask(cmd="stats")
            if all(f is not None for f in st["first"]):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{mode} x{n}: not every village got a frame: {st}")
            await asyncio.sleep(0.1)
        setup_ms = (max(st["first"]) - t0) * 1000
        await asyncio.sleep(3.0)  # past the set-up (encoders ramp their bit rate)
        chrome = chromium_pids()
        c0 = (cpu_of(chrome), cpu_s(villages.proc.pid), cpu_s(relay.proc.pid) if relay else 0.0)
        b0, f0 = await bytes_sent(page), (await villages.ask(cmd="stats"))["frames"]
        await asyncio.sleep(window_s)
        c1 = (cpu_of(chrome), cpu_s(villages.proc.pid), cpu_s(relay.proc.pid) if relay else 0.0)
        b1, f1 = await bytes_sent(page), (await villages.ask(cmd="stats"))["frames"]
        fps = [(b - a) / window_s for a, b in zip(f0, f1, strict=True)]
        return {
            "mode": mode,
            "villages": n,
            "setup_ms": round(setup_ms),
            "central_cpu_pct": round(100 * (c1[2] - c0[2]) / window_s, 1) if relay else None,
            "browser_cpu_pct": round(100 * (c1[0] - c0[0]) / window_s, 1),
            "villages_cpu_pct": round(100 * (c1[1] - c0[1]) / window_s, 1),
            "browser_uplink_kbps": round(8 * (b1 - b0) / window_s / 1000),
            "village_fps_min": round(min(fps), 1),
            "village_fps_mean": round(sum(fps) / len(fps), 1),
        }
    finally:
        with contextlib.suppress(Exception):
            await page.evaluate(
                "() => { window.__pcs.forEach((p) => p.close());"
                " window.__stream.getTracks().forEach((t) => t.stop()); }"
            )
        await page.close()
        for child in (villages, relay):
            if child is not None:
                with contextlib.suppress(Exception):
                    await child.ask(cmd="close")
                child.close()


async def run(counts: list[int], window_s: float) -> dict[str, Any]:
    from aiohttp import web
    from playwright.async_api import async_playwright

    async def blank(_: web.Request) -> web.Response:
        # getUserMedia needs a secure context: http://127.0.0.1 is one, about:blank is not.
        return web.Response(text="<!doctype html><title>bench</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", blank)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    runs = []
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for n in counts:
                    for mode in ("direct", "relay"):
                        r = await one_run(browser, f"http://127.0.0.1:{port}/", mode, n, window_s)
                        print(json.dumps(r), file=sys.stderr)
                        runs.append(r)
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
    return {"window_s": window_s, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--villages", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--window-s", type=float, default=15.0)
    ap.add_argument("--role", choices=("villages", "relay"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role is not None:
        _loopback_ice()
        asyncio.run(_villages() if args.role == "villages" else _relay())
        return
    print(json.dumps(asyncio.run(run(args.villages, args.window_s))))


if __name__ == "__main__":
    main()
