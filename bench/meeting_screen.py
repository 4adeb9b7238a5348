"""Meetings: what showing the operator's picture on the village screen costs the box's CPU
(docs/meetings.md "Sound both ways, the operator's picture").

    .venv/bin/python bench/meeting_screen.py [--window-s 15] [--screen 1920x1080]

The operator is an aiortc peer in a child process sending a 640x480, 15 fps test picture
(VP8, as Chromium sends by default; encoding costs the child, not the box). The box is this
process: a peer connection with the node's ``edge.meeting_av.CallAv``, as in a call, showing
the picture on a stand-in framebuffer file of ``--screen`` size (32 bpp). The baseline, same
run, same connection: the operator's video is negotiated but not sent (a box without
``video_out``), for as long. ``screen_cpu_pct``: this process's CPU (user + system, % of one
core) while decoding, scaling and writing; ``baseline_cpu_pct``: the same while connected
without the operator's video; ``extra_cpu_pct``: the difference; ``fps_decoded``: the
operator's frames decoded per second; ``fps_shown``: frames written to the screen per second
(a frame that arrives while the previous one is still being written replaces the waiting
one). Loopback, host candidates. Final line: JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WIDTH, HEIGHT, FPS = 640, 480, 15


def _loopback_ice() -> None:
    """aioice skips 127.0.0.1 when gathering host candidates; on loopback both peers need it."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda **_: ["127.0.0.1"]


def operator(conn: Any) -> None:
    """The child: offers a 640x480 test picture, applies the answer, sends until told to stop
    (``pause`` / ``send`` switch the track's frames off and on)."""
    _loopback_ice()
    import av
    from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

    class Pattern(VideoStreamTrack):
        """A moving test picture (changes every frame, so the encoder has work as a camera's)."""

        n = 0
        t0: float | None = None

        async def recv(self) -> Any:
            if self.t0 is None:
                self.t0 = time.monotonic()
            await asyncio.sleep(max(0.0, self.t0 + self.n / FPS - time.monotonic()))
            pts, time_base = self.n * 90000 // FPS, fractions.Fraction(1, 90000)
            frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
            self.n += 1
            y = bytes((x + self.n * 4) & 0xFF for x in range(WIDTH)) * HEIGHT
            frame.planes[0].update(y)
            frame.planes[1].update(bytes([90 + self.n % 60]) * (WIDTH * HEIGHT // 4))
            frame.planes[2].update(bytes([160]) * (WIDTH * HEIGHT // 4))
            frame.pts, frame.time_base = pts, time_base
            return frame

    async def run() -> None:
        pc = RTCPeerConnection()
        track = Pattern()
        pc.addTransceiver(track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        conn.send(pc.localDescription.sdp)
        answer = await asyncio.to_thread(conn.recv)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.to_thread(conn.recv)  # stop
        await pc.close()

    asyncio.run(run())


async def measure(window_s: float, screen: tuple[int, int], show: bool) -> dict[str, float]:
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from edge.config_devices import MeetingsConfig
    from edge.meeting_av import CallAv

    with tempfile.TemporaryDirectory() as tmp:
        fb = Path(tmp) / "fb0"
        fb.write_bytes(bytes(screen[0] * screen[1] * 4))
        cfg = MeetingsConfig(
            video_out=str(fb) if show else None, video_out_size=f"{screen[0]}x{screen[1]}"
        )
        av_parts = CallAv(cfg, "bench", lambda node, f: print(f.en, file=sys.stderr))
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()
        child = ctx.Process(target=operator, args=(theirs,))
        child.start()
        pc = RTCPeerConnection()
        connected = asyncio.Event()

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState == "connected":
                connected.set()

        try:
            await av_parts.prepare(pc)
            offer = await asyncio.to_thread(ours.recv)
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            av_parts.negotiate(pc, None)
            if not show:  # a box without video_out: the operator's video is not asked for
                for t in pc.getTransceivers():
                    t.direction = "inactive"
            await pc.setLocalDescription(await pc.createAnswer())
            ours.send(pc.localDescription.sdp)
            await asyncio.wait_for(connected.wait(), 30)
            await asyncio.sleep(3.0)  # past the first key frame and the decoder's start
            sink = av_parts.screen
            shown0, got0 = (sink.frames, sink.received) if sink else (0, 0)
            cpu0, t0 = time.process_time(), time.monotonic()
            await asyncio.sleep(window_s)
            cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
            shown = (sink.frames if sink else 0) - shown0
            got = (sink.received if sink else 0) - got0
        finally:
            ours.send("stop")
            await av_parts.close()
            await pc.close()
            child.join(30)
    return {"cpu_pct": 100 * cpu / wall, "fps": shown / wall, "fps_decoded": got / wall}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window-s", type=float, default=15.0)
    ap.add_argument("--screen", default="1920x1080")
    args = ap.parse_args()
    w, h = (int(v) for v in args.screen.split("x"))
    _loopback_ice()
    base = await measure(args.window_s, (w, h), show=False)
    shown = await measure(args.window_s, (w, h), show=True)
    result = {
        "bench": "meeting_screen",
        "operator_video": f"{WIDTH}x{HEIGHT}@{FPS} VP8",
        "screen": args.screen,
        "window_s": args.window_s,
        "cpus": os.cpu_count(),
        "baseline_cpu_pct": round(base["cpu_pct"], 1),
        "screen_cpu_pct": round(shown["cpu_pct"], 1),
        "extra_cpu_pct": round(shown["cpu_pct"] - base["cpu_pct"], 1),
        "fps_decoded": round(shown["fps_decoded"], 1),
        "fps_shown": round(shown["fps"], 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
