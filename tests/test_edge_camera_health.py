"""The camera health rules on the pure judge (time stepped by hand), the device-health record,
and the camera/terminal configuration."""

from __future__ import annotations

from typing import Any

import pytest

from edge.camera_health import CameraJudge, Thresholds
from edge.config import ConfigError, parse_config
from edge.device_health import DeviceHealth
from edge.picture import THUMB_H, THUMB_W, difference, is_black
from wire.devices import CameraHealth

T = Thresholds(stall_s=20, frozen_after_s=60, frozen_max_diff=0.5, max_clock_drift_s=10)
N = THUMB_W * THUMB_H
GREY = bytes([120]) * N
BLACK = bytes([16]) * N


def moving(i: int) -> bytes:
    return bytes((x * 7 + i * 13) % 256 for x in range(N))


def test_stalled_after_the_window_without_rtp_or_key_frame() -> None:
    j = CameraJudge(T)
    j.playing(100.0)
    assert j.verdict(119.9) is None  # nothing seen yet, window not over: no verdict
    v = j.verdict(120.0)
    assert v is not None and v.health is CameraHealth.STALLED
    j.playing(200.0)
    j.last_rtp, j.last_keyframe = 215.0, 201.0  # RTP flows but key frames stopped
    v = j.verdict(221.0)
    assert v is not None and v.health is CameraHealth.STALLED and "关键帧" in v.reason
    assert j.next_stall_check() == 221.0


def test_black_at_once_frozen_only_after_the_window_ok_when_the_picture_moves() -> None:
    j = CameraJudge(T)
    j.playing(0.0)
    j.last_rtp = j.last_keyframe = 1.0
    j.picture(BLACK, 1.0)
    v = j.verdict(1.0)
    assert v is not None and v.health is CameraHealth.BLACK
    j.picture(GREY, 2.0)  # the picture came back: it changed
    v = j.verdict(2.0)
    assert v is not None and v.health is CameraHealth.OK
    j.picture(GREY, 30.0)
    j.last_rtp = j.last_keyframe = 61.0
    v = j.verdict(61.0)  # unchanged, but not yet for 60 s
    assert v is not None and v.health is CameraHealth.OK
    j.picture(GREY, 62.0)
    v = j.verdict(62.0)
    assert v is not None and v.health is CameraHealth.FROZEN
    j.picture(moving(1), 63.0)
    v = j.verdict(63.0)
    assert v is not None and v.health is CameraHealth.OK


def test_a_fresh_stream_has_no_verdict_until_its_first_picture_then_ok() -> None:
    j = CameraJudge(T)
    j.playing(0.0)
    j.last_rtp = j.last_keyframe = 0.5
    assert j.verdict(0.5) is None  # a reconnect keeps the published health meanwhile
    j.picture(GREY, 1.0)
    v = j.verdict(1.0)
    assert v is not None and v.health is CameraHealth.OK
    j.picture(GREY, 40.0)
    j.last_rtp = j.last_keyframe = 61.0
    j.picture(GREY, 61.0)
    v = j.verdict(61.0)
    assert v is not None and v.health is CameraHealth.FROZEN and "60" in v.reason


def test_outer_faults_win_and_clock_drift_degrades_an_ok_camera() -> None:
    j = CameraJudge(T)
    j.playing(0.0)
    j.last_rtp = j.last_keyframe = 1.0
    j.picture(moving(1), 1.0)
    j.picture(moving(2), 2.0)
    j.clock_drift_s = -42.4
    v = j.verdict(2.0)
    assert v is not None and v.health is CameraHealth.CLOCK_WRONG and "-42.4" in v.reason
    j.failed(CameraHealth.UNREACHABLE, "refused")
    v = j.verdict(3.0)
    assert v is not None and v.health is CameraHealth.UNREACHABLE


def test_picture_measures() -> None:
    assert is_black(BLACK) and not is_black(GREY)
    assert difference(GREY, GREY) == 0 and difference(GREY, moving(1)) > 10
    assert difference(GREY, b"") == float("inf")


class _Sink:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []
        self.states: list[tuple[str, str, dict[str, object]]] = []

    async def emit(
        self, priority: str, kind: str, device: str | None, data: dict[str, object], **_: object
    ) -> None:
        self.events.append({"priority": priority, "kind": kind, "device": device, **data})

    async def set_device(
        self,
        device_id: str,
        kind: str,
        state: str,
        name: str | None = None,
        detail: dict[str, object] | None = None,
    ) -> None:
        self.states.append((device_id, state, dict(detail or {})))


async def test_event_only_on_a_health_change_state_on_every_change() -> None:
    sink = _Sink()
    d = DeviceHealth("450102001001-a", "cam1", "camera", "gate", {"zones": [3]})
    assert d.set("ok", "fine", 100.0)
    await d.publish(sink)  # type: ignore[arg-type]
    assert not d.set("ok", "fine", 150.0)
    d.update_extra(model="X1", firmware="1.0", clock_drift_s=None)
    await d.publish(sink)  # type: ignore[arg-type]
    assert d.set("black", "dark", 200.0)
    await d.publish(sink)  # type: ignore[arg-type]
    await d.publish(sink)  # type: ignore[arg-type]  # nothing changed: nothing published
    assert [e["health"] for e in sink.events] == ["ok", "black"]
    assert sink.events[-1] == {
        "priority": "device",
        "kind": "device_health",
        "device": "cam1",
        "health": "black",
        "reason": "dark",
        "since": 200.0,
        "zones": [3],
        "model": "X1",
        "firmware": "1.0",
    }
    assert [s[1] for s in sink.states] == ["up", "up", "degraded"]
    assert sink.states[0][2]["since"] == 100.0


BASE = {"node_id": "450102001001-a"}


def test_config_validates_devices_with_explanations() -> None:
    cfg = parse_config(
        BASE
        | {
            "cameras": [{"id": "cam1", "rtsp_url": "rtsp://10.0.0.21:554/s0", "password": "p"}],
            "terminals": [{"id": "term", "host": "10.0.0.30", "protocol": "h323"}],
            "info_system": {"host": "10.1.0.1", "port": 443},
        }
    )
    assert cfg.terminals[0].effective_port == 1720
    assert cfg.camera_probe.stall_s == 20.0
    assert cfg.redacted()["cameras"][0]["password"] == "***"
    bad: dict[str, Any] = {
        "cameras": [
            {"id": "cam1", "rtsp_url": "rtsp://u:p@10.0.0.21/s0"},
            {"id": "cam1", "rtsp_url": "rtsp://10.0.0.22/s0"},
        ],
        "camera_probe": {"stall_s": 0},
    }
    with pytest.raises(ConfigError) as e:
        parse_config(BASE | bad)
    text = str(e.value)
    assert "cameras.0.rtsp_url: 用户名和密码请写在 username / password 项" in text
    assert "camera_probe.stall_s: 应不小于 1" in text
    with pytest.raises(ConfigError) as e:
        parse_config(BASE | {"cameras": bad["cameras"][1:] * 2})
    assert "设备编号 cam1 用了两次" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config(BASE | {"info_system": {"url": "ftp://x/"}})
    assert "info_system.url" in str(e.value)
