"""A call's parts that fail at the village, end to end: headless Chromium on the meeting page,
the real central and broker, an agent whose sound devices and screen are missing and whose TURN
server does not answer. What operators rely on: each failed part costs only itself (a zh/en
WARNING and ``shilian_edge_meeting_faults_total{part}``), the village's picture still comes; a
relay-only call without a relayed candidate is refused at once, not left hanging."""

from __future__ import annotations

from pathlib import Path

import pytest

from shilian.broker import Mosquitto, free_port
from tests.camera_peers import RtspCamera
from tests.test_central_service import NODE
from tests.test_dashboard_meeting import browser, cameras, village_and_central
from tests.test_dashboard_meeting_av import alsa_config, call_village, meeting_faults
from tests.test_edge_meetings import loopback_ice, wait_until

pytestmark = pytest.mark.slow

__all__ = ["cameras", "loopback_ice"]  # fixtures


async def test_missing_devices_cost_only_their_part_of_the_call(
    broker: Mosquitto, tmp_path: Path, cameras: RtspCamera, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(alsa_config(tmp_path)))
    village = {
        # nothing listens there: the allocation fails after aioice's 5 s gathering bound and
        # the call goes on over host candidates
        "turn_url": f"turn:127.0.0.1:{free_port()}?transport=udp",
        "turn_secret": "not-a-server",
        "audio_in": "no_such_microphone",
        "audio_out": "no_such_speaker",
        "video_out": str(tmp_path / "no" / "fb0"),
        "video_out_size": "320x240",
    }
    async with village_and_central(broker, tmp_path, cameras, village) as (svc, agent):
        base = f"http://127.0.0.1:{svc.http_port}"
        async with browser(base) as page:
            st = await call_village(page, frames=20)  # the village's picture comes all the same
            assert st["state"] == "active"
            for part in ("turn", "audio_in", "audio_out", "video_out"):
                await wait_until(lambda p=part: meeting_faults(agent, p) == 1, f"{part} fault")
            await page.click("[data-test=meeting-hangup]")
            await wait_until(lambda: svc.meetings.calls == {}, "hung up")


def test_a_relay_only_call_without_a_relayed_candidate_is_refused() -> None:
    from edge.config_devices import MeetingsConfig as NodeMeetings
    from edge.meeting_av import CallAv
    from edge.meeting_media import MediaFailed

    seen: list[str] = []
    host_only = "v=0\r\na=candidate:1 1 udp 2130706431 10.0.0.2 5000 typ host\r\n"
    relayed = host_only + "a=candidate:2 1 udp 16777215 203.0.113.5 49170 typ relay\r\n"
    for relay_only in (False, True):
        cfg = NodeMeetings(turn_url="turn:203.0.113.5:3478", relay_only=relay_only)
        parts = CallAv(cfg, NODE, lambda _node, f: seen.append(f.part))
        parts.answered(relayed)
        assert seen == [] or relay_only
        if relay_only:
            with pytest.raises(MediaFailed) as e:
                parts.answered(host_only)
            assert e.value.code == "turn_failed" and "TURN" in e.value.zh
        else:
            parts.answered(host_only)  # the call goes on over host candidates
    assert seen == ["turn", "turn"]
