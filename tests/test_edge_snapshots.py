"""Snapshots on alarm at the edge: a real RTSP camera (gst-rtsp-server), the real agent, a real
broker. An alarm in a camera's zone is on the wire first, then a JPEG from that camera naming
the alarm; a camera that gives no key frame in time gives no snapshot and is counted."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from edge.config import ConfigError, EdgeConfig, parse_config
from shilian.broker import Mosquitto, free_port
from wire import Event
from wire.snapshots import MAX_SNAPSHOT_JPEG_BYTES, SNAPSHOT_KIND, SnapshotData

from .camera_peers import RtspCamera
from .test_edge_agent import Running, make_config, wait_for
from .test_edge_cameras import PROBE, CameraObserver, obs

__all__ = ["obs"]

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, broker: Mosquitto, cameras: list[dict[str, Any]]) -> EdgeConfig:
    return make_config(
        tmp_path,
        broker.port,
        cameras=cameras,
        camera_probe=PROBE,
        snapshots={"timeout_s": 4.0},
    )


def _snapshots(obs: CameraObserver) -> list[Event]:
    return [e for e in obs.events() if e.kind == SNAPSHOT_KIND]


def _jpeg_size(jpeg: bytes) -> tuple[int, int]:
    """(width, height) from the JPEG's SOF0 segment: the bytes really are a JPEG."""
    i = 2
    while i < len(jpeg):
        marker, length = jpeg[i + 1], int.from_bytes(jpeg[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            return int.from_bytes(jpeg[i + 7 : i + 9], "big"), int.from_bytes(
                jpeg[i + 5 : i + 7], "big"
            )
        i += 2 + length
    raise AssertionError("no SOF segment")


async def test_alarm_in_a_cameras_zone_is_followed_by_its_jpeg(
    broker: Mosquitto, obs: CameraObserver, tmp_path: Path
) -> None:
    with RtspCamera("ball", mounts=2) as cam:
        cams = [
            {"id": "cam-gate", "rtsp_url": cam.url(0), "zones": [1, 2]},
            {"id": "cam-yard", "rtsp_url": cam.url(1), "zones": [3]},
        ]
        async with Running(_config(tmp_path, broker, cams), serve_local_socket=False) as agent:
            await wait_for(lambda: obs.health("cam-gate") == "ok", "camera ok")
            alarm = await agent.sink.emit("alarm", "panic", "alarm_board", {"zone": 2})
            await wait_for(lambda: len(_snapshots(obs)) == 1, "a snapshot")
            await asyncio.sleep(0.5)  # nothing else should follow (cam-yard is zone 3 only)
            events = obs.events()
            snaps = _snapshots(obs)
            assert len(snaps) == 1
            snap = snaps[0]
            assert snap.priority == "info" and snap.device == "cam-gate"
            order = [e.seq for e in events]
            assert order.index(alarm.seq) < order.index(snap.seq)  # the alarm went first
            data = SnapshotData.model_validate(snap.data)
            assert (data.alarm_boot_id, data.alarm_seq) == (alarm.boot_id, alarm.seq)
            assert data.camera == "cam-gate" and data.zone == 2
            jpeg = base64.b64decode(data.jpeg_b64)
            assert jpeg.startswith(b"\xff\xd8") and len(jpeg) <= MAX_SNAPSHOT_JPEG_BYTES
            assert _jpeg_size(jpeg) == (data.width, data.height)
            assert data.width <= 640
            assert (
                agent.registry.get_sample_value("shilian_edge_snapshots_total", {"outcome": "sent"})
                == 1
            )


async def test_a_camera_that_gives_no_key_frame_gives_no_snapshot_and_is_counted(
    broker: Mosquitto, obs: CameraObserver, tmp_path: Path
) -> None:
    dead = f"rtsp://127.0.0.1:{free_port()}/cam0"  # nobody listens
    cams = [{"id": "cam-dead", "rtsp_url": dead, "zones": [5]}]
    cfg = _config(tmp_path, broker, cams)
    async with Running(cfg, serve_local_socket=False) as agent:
        alarm = await agent.sink.emit("alarm", "intrusion", "alarm_board", {"zone": 5})
        await wait_for(lambda: any(e.seq == alarm.seq for e in obs.events()), "the alarm")
        await wait_for(
            lambda: (
                agent.registry.get_sample_value(
                    "shilian_edge_snapshots_total", {"outcome": "timeout"}
                )
                == 1
            ),
            "a counted timeout",
        )
        assert _snapshots(obs) == []


def test_zones_and_relay_are_validated() -> None:
    base: dict[str, Any] = {"node_id": "450102001001-a"}
    cam = {"id": "cam-a", "rtsp_url": "rtsp://10.0.0.2/s", "zones": [1], "relay": 2}
    with pytest.raises(ConfigError, match="alarm_board"):
        parse_config({**base, "cameras": [cam]})
    with pytest.raises(ConfigError, match="relay"):
        parse_config({**base, "cameras": [{**cam, "relay": 0}]})
