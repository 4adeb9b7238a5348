"""sd_notify against a real unix datagram socket bound by the test, with the real agent process:
READY once the outbox and local API are open, WATCHDOG pings from the event loop (none while the
process is stopped or the loop blocked), STOPPING on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.sdnotify import Notifier, message, socket_address, watchdog_interval
from shilian.broker import Mosquitto
from tests.processes import WAIT_S

#: WATCHDOG_USEC given to the agent: 1 s, so it pings every 0.5 s.
WATCHDOG_USEC = 1_000_000


class NotifySocket:
    """The service manager's end: a bound AF_UNIX datagram socket."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)

    def recv(self, timeout: float = WAIT_S) -> dict[str, str] | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return None
        return dict(line.split("=", 1) for line in data.decode().split("\n"))

    def until(
        self, key: str, timeout: float = WAIT_S
    ) -> tuple[dict[str, str], list[dict[str, str]]]:
        """Messages until one with ``key``; that one and those before it."""
        seen: list[dict[str, str]] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            m = self.recv(left)
            if m is None:
                break
            if key in m:
                return m, seen
            seen.append(m)
        raise AssertionError(f"no {key} within {timeout} s; got {seen}")

    def drain(self) -> list[dict[str, str]]:
        out = []
        while (m := self.recv(0.05)) is not None:
            out.append(m)
        return out

    def close(self) -> None:
        self.sock.close()


def write_config(tmp: Path, port: int) -> Path:
    conf = tmp / "edge.toml"
    conf.write_text(
        f'node_id = "450102001001-sd"\nshutdown_flush_s = 2\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[outbox]\npath = "{tmp / "outbox.sqlite3"}"\n'
        f"[metrics]\nenabled = false\n"
        f'[local_socket]\npath = "{tmp / "edge.sock"}"\n',
        encoding="utf-8",
    )
    return conf


def start_agent(conf: Path, notify_socket: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, NOTIFY_SOCKET=notify_socket, WATCHDOG_USEC=str(WATCHDOG_USEC))
    with log.open("ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "shilian", "edge", "run", "--config", str(conf)],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
        )


def wait_stopped(pid: int) -> None:
    """Until the kernel reports the process stopped (state T in /proc/PID/stat)."""
    deadline = time.monotonic() + WAIT_S
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline, "process did not stop"
        time.sleep(0.01)


@pytest.fixture
def agent_env(tmp_path: Path, broker: Mosquitto) -> Iterator[tuple[Path, Path]]:
    yield write_config(tmp_path, broker.port), tmp_path


def test_ready_watchdog_and_stopping_reach_a_path_socket(agent_env: tuple[Path, Path]) -> None:
    conf, tmp = agent_env
    addr = str(tmp / "notify.sock")
    mgr = NotifySocket(addr)
    p = start_agent(conf, addr, tmp / "edge.log")
    try:
        ready, before = mgr.until("READY")
        assert before == [], before  # nothing (no watchdog ping) before READY
        assert ready["READY"] == "1" and "pending" in ready["STATUS"]
        # READY means the local API is up: the socket answers at once.
        assert (tmp / "edge.sock").exists()
        # Pings keep coming; STATUS (on a ping, when it changed) follows the broker link.
        statuses = [ready["STATUS"]]
        pings = 0
        deadline = time.monotonic() + WAIT_S
        while pings < 3 or not statuses[-1].startswith("connected"):
            assert time.monotonic() < deadline, statuses
            m, _ = mgr.until("WATCHDOG")
            pings += 1
            if "STATUS" in m:
                statuses.append(m["STATUS"])
        assert statuses[-1] == "connected, 0 pending", statuses

        # A stopped process (as a hung loop) sends no pings: systemd would restart it.
        p.send_signal(signal.SIGSTOP)
        wait_stopped(p.pid)
        mgr.drain()  # pings sent before the stop
        assert mgr.recv(3 * WATCHDOG_USEC / 1e6) is None
        p.send_signal(signal.SIGCONT)
        assert mgr.until("WATCHDOG")[0]["WATCHDOG"] == "1"

        p.send_signal(signal.SIGTERM)
        stopping, _ = mgr.until("STOPPING")
        assert stopping["STOPPING"] == "1" and "stopping" in stopping["STATUS"]
        assert p.wait(WAIT_S) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        mgr.close()


def test_abstract_notify_socket(agent_env: tuple[Path, Path]) -> None:
    conf, tmp = agent_env
    name = f"shilian-test-{os.getpid()}-{time.monotonic_ns()}"
    mgr = NotifySocket(b"\0" + name.encode())
    p = start_agent(conf, "@" + name, tmp / "edge.log")
    try:
        assert mgr.until("READY")[0]["READY"] == "1"
        p.send_signal(signal.SIGTERM)
        assert mgr.until("STOPPING")[0]["STOPPING"] == "1"
        assert p.wait(WAIT_S) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        mgr.close()


async def test_a_blocked_event_loop_sends_no_watchdog_pings(tmp_path: Path) -> None:
    """The pings come from the event loop, not a thread: while the loop is blocked the socket
    stays silent (sends are synchronous, so all sent before the block is already queued and is
    drained first)."""
    addr = str(tmp_path / "notify.sock")
    mgr = NotifySocket(addr)
    n = Notifier({"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "200000"}, pid=1)
    assert n.interval == pytest.approx(0.1)
    task = asyncio.create_task(n.watchdog(lambda: "ok"))
    try:
        first = await asyncio.to_thread(mgr.recv, WAIT_S)
        assert first == {"WATCHDOG": "1", "STATUS": "ok"}
        mgr.drain()
        time.sleep(1.0)  # noqa: ASYNC251 -- the point: the loop is blocked for ten intervals
        assert mgr.recv(0) is None
        again = await asyncio.to_thread(mgr.recv, WAIT_S)  # the loop runs again
        assert again == {"WATCHDOG": "1"}  # STATUS only when it changed
    finally:
        task.cancel()
        n.close()
        mgr.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = Notifier({}, pid=1)
    assert not n.enabled and n.interval is None
    assert not n.ready("x") and not n.stopping("x") and not n.status("x")
    asyncio.run(n.watchdog())  # returns at once


def test_environment_parsing() -> None:
    assert socket_address("@sd") == b"\0sd"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("relative") is None and socket_address("@") is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 7) is None
    assert message(READY=1, STATUS="a\nb") == b"READY=1\nSTATUS=a b"
    with pytest.raises(ValueError):
        message(STATUS="x" * 5000)


def test_unreachable_manager_is_not_fatal(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}, pid=1)
    assert n.enabled and not n.ready("x")  # logged once, no exception
    n.close()
