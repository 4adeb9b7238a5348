"""deploy/mosquitto-dev.conf is a working plain-TCP loopback broker for development: the real
mosquitto starts with it, keeps a retained birth across a restart (persistence), and listens on
loopback only."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import aiomqtt

import wire
from shilian.broker import free_port
from tests.peers import program

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "deploy" / "mosquitto-dev.conf"
NODE = "450102001001-a"
WAIT_S = 10.0


def _conf_for_test(tmp_path: Path, port: int) -> Path:
    """The shipped file with only the port and the data folder moved (tests never use 1883)."""
    text = CONF.read_text(encoding="utf-8")
    assert re.search(r"^listener 1883 127\.0\.0\.1$", text, re.M)
    text = text.replace("listener 1883 127.0.0.1", f"listener {port} 127.0.0.1")
    text = text.replace("/tmp/shilian-mosquitto-dev/", f"{tmp_path}/data/")
    if os.geteuid() == 0:
        text += "user root\n"  # the test's mktemp folder is 0700: see the file's own warning
    (tmp_path / "data").mkdir()
    conf = tmp_path / "dev.conf"
    conf.write_text(text, encoding="utf-8")
    return conf


def _start(conf: Path, port: int) -> subprocess.Popen[bytes]:
    exe = program("mosquitto", "apt-get install mosquitto")
    proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise AssertionError("dev broker did not listen")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(WAIT_S)


async def test_dev_config_runs_and_keeps_retained_state_across_a_restart(tmp_path: Path) -> None:
    port = free_port()
    conf = _conf_for_test(tmp_path, port)
    birth = wire.encode(
        wire.NodeState(
            node=NODE, state="online", boot_id="a" * 32, birth_seq=1, ts=1.0, reason="connect"
        )
    )
    topic = wire.Topics(NODE).state
    proc = _start(conf, port)
    try:
        async with aiomqtt.Client(
            "127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, identifier=NODE
        ) as c:
            await c.publish(topic, birth, qos=1, retain=True)
    finally:
        _stop(proc)
    proc = _start(conf, port)
    try:
        async with aiomqtt.Client(
            "127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, identifier="reader"
        ) as c:
            await c.subscribe(topic, qos=1)
            async with asyncio.timeout(WAIT_S):
                msg = await anext(aiter(c.messages))
        assert msg.retain and msg.payload == birth
    finally:
        _stop(proc)
