"""Power-cycling a camera through its alarm-board relay: the board simulator over a real pty
pair, the real agent, a real broker (operator commands over MQTT 5 request/response as central
sends them), and a real RTSP camera stalled for the rule. Every outcome is an event."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge import remediation
from edge.remediation import StallRule
from firmware_bridge.simulator import simulate_board
from shilian.broker import Mosquitto, free_port
from wire import CommandResponse, decode
from wire.snapshots import POWER_CYCLE_KIND

from .camera_peers import RtspCamera
from .test_edge_agent import NODE, Running, T, make_config, wait_for
from .test_edge_cameras import PROBE, CameraObserver, obs

__all__ = ["obs"]


def test_the_rule_waits_for_the_stall_window_and_then_the_interval() -> None:
    rule = StallRule({"cam-a": 1, "cam-b": None}, stalled_for_s=600, min_interval_s=3600)
    assert not rule.observe("cam-a", "stalled", 0)
    assert not rule.observe("cam-a", "stalled", 599)
    assert rule.observe("cam-a", "stalled", 600)  # stalled 10 minutes: cycle
    assert not rule.observe("cam-a", "stalled", 700)  # still stalled, but cycled recently
    assert not rule.observe("cam-a", "ok", 1000)  # recovered: the stall window starts over
    assert not rule.observe("cam-a", "stalled", 4300)
    assert rule.observe("cam-a", "stalled", 4900)  # stalled again 600 s, interval passed
    assert not rule.observe("cam-b", "stalled", 10_000)  # no relay: nothing to cycle
    assert not rule.observe("cam-x", "stalled", 10_000)


def _config(tmp_path: Path, broker: Mosquitto, device: str, cams: list[dict[str, Any]]) -> Any:
    return make_config(
        tmp_path,
        broker.port,
        alarm_board={"device": device, "zones": [{"input": 1, "kind": "panic"}]},
        cameras=cams,
        camera_probe=PROBE,
        remediation={"off_ms": 300, "stalled_for_min": 0.02, "min_interval_min": 60},
    )


async def _ready(port: int) -> None:
    """Until the node answers a ping: it subscribes to its requests after its birth."""
    for _ in range(30):
        with contextlib.suppress(TimeoutError):
            await _command(port, "", cmd="ping", within_s=1.0)
            return
    raise AssertionError("the node never answered a ping")


async def _command(
    port: int, camera: str, cmd: str = "power-cycle", within_s: float = 30.0
) -> CommandResponse:
    """A request as central's command client sends it; the node's reply."""
    rt = T.cmd_res
    corr = uuid.uuid4().bytes
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = rt
    props.CorrelationData = corr
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        await c.subscribe(rt, qos=1)
        body = {"v": 1, "cmd": cmd, "args": {"camera": camera}}
        await c.publish(T.cmd_req, json.dumps(body), qos=1, properties=props)
        async with asyncio.timeout(within_s):
            async for m in c.messages:
                got = getattr(m.properties, "CorrelationData", None)
                if got == corr and isinstance(m.payload, bytes):
                    return decode(CommandResponse, m.payload, node_id=NODE)
    raise AssertionError("no reply")


def _cycles(obs: CameraObserver) -> list[dict[str, Any]]:
    return [{"device": e.device, **e.data} for e in obs.events() if e.kind == POWER_CYCLE_KIND]


@pytest.mark.slow
async def test_operator_power_cycle_acked_no_relay_and_failed_are_recorded(
    broker: Mosquitto, obs: CameraObserver, tmp_path: Path
) -> None:
    dead = f"rtsp://127.0.0.1:{free_port()}/cam0"
    cams: list[dict[str, Any]] = [
        {"id": "cam-a", "rtsp_url": dead, "relay": 2},
        {"id": "cam-b", "rtsp_url": dead},
    ]
    async with simulate_board(seed=5) as sim:
        cfg = _config(tmp_path, broker, sim.slave_path, cams)
        async with Running(cfg, serve_local_socket=False) as agent:
            await wait_for(lambda: agent.status()["alarm_board"]["state"] == "up", "board up")
            await _ready(broker.port)
            reply = await _command(broker.port, "cam-a")
            assert reply.ok and reply.result is not None and reply.result["relay"] == 2
            await wait_for(lambda: len(_cycles(obs)) == 1, "an outcome event")
            assert _cycles(obs)[0] == {
                "device": "cam-a", "outcome": "acked", "trigger": "operator", "relay": 2,
                "off_ms": 300, "by": None, "reason": "",
            }  # fmt: skip
            assert sim.core.relays.pulses == {2: 1}

            reply = await _command(broker.port, "cam-b")
            assert not reply.ok and reply.error is not None and reply.error.code == "no_relay"
            await wait_for(lambda: len(_cycles(obs)) == 2, "the no_relay event")
            assert _cycles(obs)[1]["outcome"] == "no_relay"

            reply = await _command(broker.port, "cam-none")
            assert not reply.ok and reply.error is not None
            assert reply.error.code == "unknown_camera"

            sim.cut(120)  # the board hears nothing more
            reply = await _command(broker.port, "cam-a")
            assert reply.ok
            await wait_for(lambda: len(_cycles(obs)) == 3, "the failed event")
            failed = _cycles(obs)[2]
            assert failed["outcome"] == "failed" and "/" in failed["reason"]
            assert sim.core.relays.pulses == {2: 1}


@pytest.mark.slow
async def test_a_camera_stalled_past_the_window_is_cycled_once_by_the_rule(
    broker: Mosquitto,
    obs: CameraObserver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(remediation, "RULE_CHECK_S", 0.2)
    with RtspCamera("ball") as cam:
        cams = [{"id": "cam-gate", "rtsp_url": cam.url(0), "relay": 1}]
        async with simulate_board(seed=6) as sim:
            cfg = _config(tmp_path, broker, sim.slave_path, cams)
            async with Running(cfg, serve_local_socket=False):
                await wait_for(lambda: obs.health("cam-gate") == "ok", "camera ok")
                cam.pause()  # RTP stops, RTSP stays up: stalled
                await wait_for(lambda: obs.health("cam-gate") == "stalled", "stalled")
                await wait_for(lambda: len(_cycles(obs)) == 1, "a power-cycle by the rule")
                await asyncio.sleep(3)  # still stalled: no second cycle within the interval
                cycles = _cycles(obs)
                assert len(cycles) == 1
                assert cycles[0]["outcome"] == "acked" and cycles[0]["trigger"] == "rule"
                assert sim.core.relays.pulses == {1: 1}
