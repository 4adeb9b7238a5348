"""A call's network path, sound and picture towards the village, end to end with real peers:
headless Chromium (fake camera and microphone) on the meeting page, the real central service,
a private mosquitto, an edge agent with the RTSP test camera, a real coturn, and ALSA devices
backed by files (no sound card here: a ``type file`` playback device records what is played,
a capture device reads a 440 Hz tone from a file). What operators rely on: a village behind NAT
is reached through the county's TURN server (both sides relay-only); the operator hears the
village and is heard there; the operator's picture appears on the village's screen; a missing
device or an unreachable TURN server costs only its own part of the call
(tests/test_dashboard_meeting_faults.py)."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import pytest

from central.config import MeetingsConfig
from shilian.broker import Mosquitto
from tests.camera_peers import RtspCamera
from tests.test_central_service import NODE
from tests.test_dashboard_meeting import browser, cameras, village_and_central, wait_page
from tests.test_edge_meetings import loopback_ice, wait_until
from tests.turn_server import TurnServer

pytestmark = pytest.mark.slow

__all__ = ["cameras", "loopback_ice"]  # fixtures

#: The stand-in framebuffer: small, 32 bits per pixel, as the config says.
SCREEN = (320, 240)


def meeting_faults(agent: Any, part: str) -> float:
    v = agent.registry.get_sample_value("shilian_edge_meeting_faults_total", {"part": part})
    return float(v or 0.0)


def alsa_config(tmp_path: Path) -> Path:
    """ALSA devices backed by files: ``box_out`` records what is played to ``speaker.raw``;
    ``box_in`` captures ``microphone.raw`` (a 440 Hz tone, 48 kHz stereo s16)."""
    tone = b"".join(
        struct.pack("<hh", v, v)
        for v in (int(8000 * math.sin(2 * math.pi * 440 * i / 48000)) for i in range(48000 * 20))
    )
    (tmp_path / "microphone.raw").write_bytes(tone)
    conf = tmp_path / "asound.conf"
    conf.write_text(
        f"""pcm.box_out {{
  type file
  slave {{ pcm {{ type null }} }}
  file "{tmp_path / "speaker.raw"}"
  format "raw"
}}
pcm.box_in {{
  type file
  slave {{ pcm {{ type null }} }}
  file "/dev/null"
  infile "{tmp_path / "microphone.raw"}"
  format "raw"
}}
""",
        encoding="utf-8",
    )
    return conf


def _loudest(raw: bytes) -> int:
    n = len(raw) // 2
    return max((abs(v) for v in struct.unpack(f"<{n}h", raw[: n * 2])), default=0)


async def call_village(page: Any, frames: int = 10) -> dict[str, Any]:
    await page.goto(f"/dashboard/meeting?node={NODE}")
    await page.evaluate("() => window.__meeting.ready")
    await page.click("[data-test=meeting-call]")
    return await wait_page(page, lambda s: s["frames"] >= frames, "frames decoded")


async def test_a_call_through_turn_relay_only_on_both_sides(
    broker: Mosquitto, tmp_path: Path, cameras: RtspCamera
) -> None:
    with TurnServer(tmp_path / "turn") as turn:
        county = MeetingsConfig(turn_urls=[turn.url], turn_secret=turn.secret, relay_only=True)
        village = {"turn_url": turn.url, "turn_secret": turn.secret, "relay_only": True}
        async with village_and_central(broker, tmp_path, cameras, village, county) as (svc, agent):
            base = f"http://127.0.0.1:{svc.http_port}"
            async with browser(base) as page:
                st = await call_village(page)
                s = await wait_page(
                    page, lambda s: "local_candidate" in s["stats"], "selected pair in getStats"
                )
                assert s["stats"]["local_candidate"] == "relay"  # the page's side
                assert s["stats"]["remote_candidate"] == "relay"  # the node's side
                assert st["state"] == "active"
                media = agent.meetings.media if agent.meetings else None
                assert media is not None
                assert "typ host" not in media.pc.localDescription.sdp
                assert meeting_faults(agent, "turn") == 0
                await page.click("[data-test=meeting-hangup]")
                await wait_until(lambda: svc.meetings.calls == {}, "hung up")


async def test_sound_both_ways_and_the_operators_picture_on_the_village_screen(
    broker: Mosquitto, tmp_path: Path, cameras: RtspCamera, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(alsa_config(tmp_path)))
    screen = tmp_path / "fb0"
    screen.write_bytes(bytes(SCREEN[0] * SCREEN[1] * 4))
    village = {
        "audio_in": "box_in",
        "audio_out": "box_out",
        "video_out": str(screen),
        "video_out_size": f"{SCREEN[0]}x{SCREEN[1]}",
    }
    async with village_and_central(broker, tmp_path, cameras, village) as (svc, agent):
        base = f"http://127.0.0.1:{svc.http_port}"
        async with browser(base) as page:
            await call_village(page)
            media = agent.meetings.media if agent.meetings else None
            assert media is not None and media.extras is not None
            extras: Any = media.extras
            # the village's microphone reaches the page
            await wait_page(
                page, lambda s: s["stats"].get("audio_packets_received", 0) > 50, "box's sound"
            )
            # Chromium's fake microphone (a beep every second) is played on the box
            speaker = tmp_path / "speaker.raw"
            await wait_until(
                lambda: speaker.exists() and _loudest(speaker.read_bytes()) > 1000,
                "operator's sound played at the village",
            )
            # Chromium's fake camera (a coloured test pattern) is on the village's screen
            await wait_until(lambda: extras.screen is not None and extras.screen.frames >= 5,
                             "operator's picture shown")  # fmt: skip
            pixels = screen.read_bytes()
            assert len(pixels) == SCREEN[0] * SCREEN[1] * 4  # written in place, not grown
            lit = sum(1 for i in range(0, len(pixels), 4) if max(pixels[i : i + 3]) > 40)
            assert lit > SCREEN[0] * SCREEN[1] // 2  # not black: mostly the pattern's green
            parts = ("audio_in", "audio_out", "video_out")
            assert all(meeting_faults(agent, p) == 0 for p in parts)
            await page.click("[data-test=meeting-hangup]")
            await wait_until(lambda: svc.meetings.calls == {}, "hung up")
            await wait_until(lambda: agent.meetings is not None and agent.meetings.media is None,
                             "node freed the call")  # fmt: skip
        assert screen.read_bytes() == bytes(SCREEN[0] * SCREEN[1] * 4)  # blanked at the end
