"""Camera health end to end: a real RTSP camera (gst-rtsp-server, tests/rtsp_camera.py), the
real agent, a real broker. Each case reads the camera's retained device state and its
``device_health`` events from MQTT, as central does."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.config import EdgeConfig
from shilian.broker import Mosquitto
from wire import DeviceState, decode

from .camera_peers import RtspCamera
from .test_edge_agent import NODE, Observer, Running, T, make_config, wait_for

#: Short windows so the whole set stays fast (production defaults are minutes).
PROBE = {
    "interval_s": 1.0,
    "timeout_s": 3.0,
    "stall_s": 3.0,
    "picture_interval_s": 1.0,
    "frozen_after_s": 3.0,
}
USER, PASSWORD = "admin", "s3cret-pw"


class CameraObserver(Observer):
    def states(self, device: str) -> list[DeviceState]:  # type: ignore[override]
        topic = T.device(device)
        return [decode(DeviceState, p) for t, p, _ in self.msgs if t == topic and p]

    def health(self, device: str) -> str | None:
        s = self.states(device)
        return s[-1].detail.get("health") if s else None

    def health_events(self, device: str) -> list[dict[str, Any]]:
        return [e.data for e in self.events() if e.kind == "device_health" and e.device == device]


@pytest.fixture
async def obs(broker: Mosquitto) -> AsyncIterator[CameraObserver]:
    o = CameraObserver(broker.port)
    task = asyncio.create_task(o.run())
    await asyncio.wait_for(o.connected.wait(), 30)
    try:
        yield o
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture
def camera(request: pytest.FixtureRequest) -> Iterator[RtspCamera]:
    """The test camera; ``@pytest.mark.parametrize("camera", [...], indirect=True)`` passes
    ``(pattern, with_auth)``."""
    pattern, auth = getattr(request, "param", ("ball", True))
    cam = RtspCamera(pattern, user=USER if auth else None, password=PASSWORD)
    with cam:
        yield cam


def config(tmp_path: Path, broker: Mosquitto, url: str, password: str = PASSWORD) -> EdgeConfig:
    cam = {"id": "cam-gate", "name": "村口", "rtsp_url": url, "zones": [1, 2]}
    cam |= {"username": USER, "password": password}
    return make_config(tmp_path, broker.port, cameras=[cam], camera_probe=PROBE)


async def reaches(obs: CameraObserver, health: str) -> None:
    await wait_for(lambda: obs.health("cam-gate") == health, f"camera health {health}")


@pytest.mark.slow
async def test_moving_picture_is_ok_then_unreachable_when_the_camera_stops(
    tmp_path: Path, broker: Mosquitto, obs: CameraObserver, camera: RtspCamera
) -> None:
    async with Running(config(tmp_path, broker, camera.url())):
        await reaches(obs, "ok")
        state = obs.states("cam-gate")[-1]
        assert (state.kind, state.state, state.name) == ("camera", "up", "村口")
        assert state.detail["zones"] == [1, 2]
        assert "工作正常" in state.detail["reason"]
        ok_since = state.detail["since"]
        camera.stop()
        # the dropped session is retried at once: refused, so unreachable within one interval
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        await reaches(obs, "unreachable")
        assert loop.time() - stopped_at < PROBE["interval_s"] + PROBE["timeout_s"]
        down = obs.states("cam-gate")[-1]
        assert down.state == "down" and down.detail["since"] >= ok_since
        await wait_for(lambda: len(obs.health_events("cam-gate")) >= 2, "two health events")
        events = obs.health_events("cam-gate")
        assert [e["health"] for e in events] == ["ok", "unreachable"]
        assert events[-1] == down.detail
    # the password is in no message the node published
    assert not any(PASSWORD.encode() in p for _, p, _ in obs.msgs)


@pytest.mark.slow
async def test_rtp_stopping_while_rtsp_stays_up_is_stalled(
    tmp_path: Path, broker: Mosquitto, obs: CameraObserver, camera: RtspCamera
) -> None:
    async with Running(config(tmp_path, broker, camera.url())):
        await reaches(obs, "ok")
        camera.pause()
        await reaches(obs, "stalled")
        assert obs.states("cam-gate")[-1].state == "down"


@pytest.mark.parametrize("camera", [("black", True)], indirect=True)
async def test_black_picture(
    tmp_path: Path, broker: Mosquitto, obs: CameraObserver, camera: RtspCamera
) -> None:
    async with Running(config(tmp_path, broker, camera.url())):
        await reaches(obs, "black")
        s = obs.states("cam-gate")[-1]
        assert s.state == "degraded" and "画面全黑" in s.detail["reason"]


@pytest.mark.slow
@pytest.mark.parametrize("camera", [("smpte75", False)], indirect=True)
async def test_frozen_picture_without_auth(
    tmp_path: Path, broker: Mosquitto, obs: CameraObserver, camera: RtspCamera
) -> None:
    async with Running(config(tmp_path, broker, camera.url())):
        await reaches(obs, "frozen")
        assert obs.states("cam-gate")[-1].state == "degraded"
        # its first picture was a picture (ok); unchanged for the window, it is frozen. The
        # retained state is published at once, the event goes through the outbox: wait for it.
        await wait_for(lambda: len(obs.health_events("cam-gate")) >= 2, "two health events")
        assert [e["health"] for e in obs.health_events("cam-gate")] == ["ok", "frozen"]


async def test_wrong_password_is_auth_failed(
    tmp_path: Path, broker: Mosquitto, obs: CameraObserver, camera: RtspCamera
) -> None:
    cfg = config(tmp_path, broker, camera.url(), password="wrong")
    async with Running(cfg):
        await reaches(obs, "auth_failed")
        assert "401" in obs.states("cam-gate")[-1].detail["reason"]
        url = f"http://127.0.0.1:{cfg.metrics.port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    metrics = text.decode()
    assert (
        'shilian_edge_device_health{device="cam-gate",health="auth_failed",kind="camera"} 1.0'
        in metrics
    )
    assert 'shilian_edge_device_health_changes_total{device="cam-gate",kind="camera"} 1.0' in (
        metrics
    )
    assert "shilian_edge_camera_rtsp_sessions_total" in metrics


async def test_unknown_mount_is_no_stream(
    tmp_path: Path, broker: Mosquitto, obs: CameraObserver, camera: RtspCamera
) -> None:
    url = camera.url().replace("/cam0", "/nosuch")
    async with Running(config(tmp_path, broker, url)):
        await reaches(obs, "no_stream")


async def test_no_camera_listening_is_unreachable(
    tmp_path: Path, broker: Mosquitto, obs: CameraObserver
) -> None:
    from shilian.broker import free_port

    async with Running(config(tmp_path, broker, f"rtsp://127.0.0.1:{free_port()}/cam0")):
        await reaches(obs, "unreachable")
    assert NODE in obs.states("cam-gate")[-1].node
