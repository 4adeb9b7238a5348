"""The ONVIF check against a small ONVIF device emulator (aiohttp SOAP, tests/camera_peers.py):
model, firmware, clock drift and WS-UsernameToken auth; a camera whose clock is wrong shows
``clock_wrong`` end to end."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from edge.onvif import OnvifError, device_info
from shilian.broker import Mosquitto, free_port

from .camera_peers import RtspCamera, onvif_app
from .test_edge_agent import Running, make_config, wait_for
from .test_edge_cameras import PASSWORD, PROBE, USER, CameraObserver, obs  # noqa: F401


@pytest.fixture
async def onvif_device() -> AsyncIterator[tuple[str, list[float]]]:
    """The emulator's device-service URL and its clock offset (append to change it)."""
    offset = [0.0]
    app = onvif_app(
        "IPC-B120", "V5.5.3", user=USER, password=PASSWORD, clock=lambda: time.time() + offset[-1]
    )
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/onvif/device_service", offset
    finally:
        await runner.cleanup()


async def test_device_information_and_clock_drift(onvif_device: tuple[str, list[float]]) -> None:
    url, offset = onvif_device
    info = await device_info(url, USER, PASSWORD)
    assert (info.manufacturer, info.model, info.firmware) == ("Acme", "IPC-B120", "V5.5.3")
    assert info.clock_drift_s is not None and abs(info.clock_drift_s) < 2  # whole seconds
    offset.append(-120.0)
    info = await device_info(url, USER, PASSWORD)
    assert info.clock_drift_s is not None and abs(info.clock_drift_s + 120) < 2
    with pytest.raises(OnvifError, match="not Authorized"):
        await device_info(url, USER, "wrong")
    with pytest.raises(OnvifError):
        await device_info(f"http://127.0.0.1:{free_port()}/onvif/device_service", USER, PASSWORD)


@pytest.mark.slow
async def test_camera_with_a_wrong_clock_is_clock_wrong_and_names_its_model(
    tmp_path: Path,
    broker: Mosquitto,
    obs: CameraObserver,  # noqa: F811
    onvif_device: tuple[str, list[float]],
) -> None:
    url, offset = onvif_device
    offset.append(3600.0)  # an hour ahead: recordings would be stamped an hour wrong
    with RtspCamera("ball", user=USER, password=PASSWORD) as cam:
        camera = {"id": "cam-gate", "rtsp_url": cam.url(), "username": USER, "password": PASSWORD}
        camera["onvif_url"] = url
        probe = PROBE | {"onvif_interval_s": 1.0}
        cfg = make_config(tmp_path, broker.port, cameras=[camera], camera_probe=probe)
        async with Running(cfg):
            await wait_for(lambda: obs.health("cam-gate") == "clock_wrong", "clock_wrong")
            d = obs.states("cam-gate")[-1]
            assert d.state == "degraded"
            assert (d.detail["model"], d.detail["firmware"]) == ("IPC-B120", "V5.5.3")
            assert abs(d.detail["clock_drift_s"] - 3600) < 2
            offset.append(0.0)  # the clock is set right (NTP): ok again
            await wait_for(lambda: obs.health("cam-gate") == "ok", "ok after the clock is right")
