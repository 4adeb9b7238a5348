"""``shilian edge run`` as a real process: SIGKILL with events pending while the broker is down,
SIGKILL with the broker up (will), SIGTERM (clean offline, exit 0)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shilian.broker import Mosquitto, free_port
from wire import NodeState, Topics, decode

from .test_edge_agent import WAIT_S, Observer, wait_for

NODE = "450102001001-a"
T = Topics(NODE)
ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _edge(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge", *args]


class EdgeProcess:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            _edge("run", "--config", str(self.config)),
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(WAIT_S)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGKILL)


@pytest.fixture
def edge_proc(tmp_path: Path, broker: Mosquitto) -> Iterator[EdgeProcess]:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f"""node_id = "{NODE}"
health_interval_s = 5
shutdown_flush_s = 5
[broker]
port = {broker.port}
keepalive_s = 5
[outbox]
path = "{tmp_path / "outbox.sqlite3"}"
[metrics]
port = {free_port()}
[local_socket]
path = "{tmp_path / "edge.sock"}"
"""
    )
    p = EdgeProcess(cfg)
    try:
        yield p
    finally:
        p.kill()


def _emit(sock: Path, count: int, priority: str = "info") -> dict[str, object]:
    out = subprocess.run(
        _edge("emit", "--socket", str(sock), "--priority", priority, "--kind", "door",
              "--device", "board1", "--data", '{"zone": 3}', "--count", str(count)),
        cwd=ROOT, env=_env(), capture_output=True, timeout=WAIT_S, check=True,
    )  # fmt: skip
    reply: dict[str, object] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return reply


async def _status(sock: Path) -> dict[str, object]:
    reader, writer = await asyncio.open_unix_connection(sock)
    writer.write(b'{"op":"status"}\n')
    reply: dict[str, object] = json.loads(await reader.readline())
    writer.close()
    return reply


async def test_sigkill_with_pending_events_while_broker_down_then_all_delivered_once(
    broker: Mosquitto, edge_proc: EdgeProcess, tmp_path: Path
) -> None:
    sock = tmp_path / "edge.sock"
    obs = Observer(broker.port)
    obs_task = asyncio.create_task(obs.run())
    try:
        await asyncio.wait_for(obs.connected.wait(), WAIT_S)
        edge_proc.start()
        await wait_for(
            lambda: any(s.state == "online" for s in obs.states()), "birth of the process"
        )
        boot_1 = obs.states()[-1].boot_id
        broker.stop()
        await wait_for(lambda: sock.exists(), "socket")
        one = await asyncio.to_thread(_emit, sock, 1, "alarm")
        assert one["ok"] is True and one["seq"] == 1
        many = await asyncio.to_thread(_emit, sock, 199)
        assert many == {"ok": True, "sent": 199, "failed": 0}
        st = await _status(sock)
        assert st["outbox_depth"] == 200
        assert edge_proc.signal(signal.SIGKILL) == -signal.SIGKILL  # power cut, events pending

        broker.start()
        edge_proc.start()
        await wait_for(lambda: len([e for e in obs.events() if e.boot_id == boot_1]) >= 200,
                       "every pending event after the restart", within=60)  # fmt: skip
        evs = [e for e in obs.events() if e.boot_id == boot_1]
        assert [e.seq for e in evs] == list(range(1, 201))  # all, in order, none twice
        assert evs[0].priority == "alarm" and evs[1].kind == "door" and evs[1].data == {"zone": 3}
        births = [s for s in obs.states() if s.state == "online"]
        assert births[-1].boot_id != boot_1 and births[-1].birth_seq > births[0].birth_seq

        # kill -9 with the broker up: the will says offline, with the current birth_seq
        current = births[-1]
        assert edge_proc.signal(signal.SIGKILL) == -signal.SIGKILL
        await wait_for(lambda: obs.last_state() == "offline", "will after kill -9")
        will = obs.states()[-1]
        assert (will.reason, will.birth_seq, will.boot_id) == ("will", current.birth_seq,
                                                               current.boot_id)  # fmt: skip
    finally:
        obs_task.cancel()


async def test_sigterm_clean_offline_and_exit_0(
    broker: Mosquitto, edge_proc: EdgeProcess, tmp_path: Path
) -> None:
    obs = Observer(broker.port, T.state)
    obs_task = asyncio.create_task(obs.run())
    try:
        await asyncio.wait_for(obs.connected.wait(), WAIT_S)
        edge_proc.start()
        await wait_for(lambda: any(s.state == "online" for s in obs.states()), "birth")
        assert edge_proc.signal(signal.SIGTERM) == 0
        await wait_for(lambda: obs.last_state() == "offline", "clean offline")
        last = obs.states()[-1]
        assert last.reason == "stopped"
        retained = Observer(broker.port, T.state)
        r_task = asyncio.create_task(retained.run())
        await wait_for(lambda: bool(retained.msgs), "retained state")
        r_task.cancel()
        assert retained.msgs[0][2] is True
        assert decode(NodeState, retained.msgs[0][1]).reason == "stopped"
    finally:
        obs_task.cancel()


def test_emit_without_agent_fails_clearly(tmp_path: Path) -> None:
    out = subprocess.run(
        _edge("emit", "--socket", str(tmp_path / "none.sock"), "--kind", "x"),
        cwd=ROOT, env=_env(), capture_output=True, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert out.returncode == 1
    assert "无法连接本地 agent" in out.stderr.decode()
