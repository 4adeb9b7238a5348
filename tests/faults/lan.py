"""A village and a centre on two network namespaces joined by a veth pair, made by the test.

The centre namespace holds the broker and central, the village namespace the edge agent; the
only link between them is the veth pair, so cutting it (``ip link set … down``) is a real
partition: TCP segments are lost, connections stall, keepalives expire. Nothing here touches
the machine's own network: both namespaces and the pair are created and deleted by the test,
and every address is inside them (10.77.K.0/24, K random per run so parallel runs do not clash).

The test process stays in the root namespace. It reaches the processes through the file system
only: the edge agent's local Unix socket (a pathname socket works across network namespaces),
central's SQLite database (read-only) and the logs.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shilian.broker import free_port
from tests.peers import missing
from tests.processes import Edge, Proc

#: Seconds for a namespace command; `ip` answers in milliseconds.
IP_TIMEOUT_S = 10.0
#: Seconds a process may take to come up on a loaded 2-core machine.
START_TIMEOUT_S = 60.0


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


@dataclass
class Lan:
    """Two namespaces and the veth pair between them; :meth:`cut` / :meth:`heal` the link."""

    centre: str
    village: str
    centre_addr: str
    village_addr: str
    centre_if: str

    @property
    def village_if(self) -> str:
        """The village's end of the pair (the village's uplink interface)."""
        return "vv" + self.centre_if[2:]

    def run(self, ns: str, argv: list[str]) -> list[str]:
        """``argv`` to start a process inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns, *argv]

    def cut(self) -> None:
        _ip("-n", self.centre, "link", "set", self.centre_if, "down")

    def heal(self) -> None:
        _ip("-n", self.centre, "link", "set", self.centre_if, "up")


@contextmanager
def lan() -> Iterator[Lan]:
    """Make the namespaces (root only: under CI a missing capability fails, elsewhere skips)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        missing("network namespaces (root and iproute2)", "run as root; apt-get install iproute2")
    tag = f"{os.getpid() % 10000:04d}{random.randrange(100):02d}"
    k = random.randrange(1, 250)
    net = Lan(f"slc{tag}", f"slv{tag}", f"10.77.{k}.1", f"10.77.{k}.2", f"vc{tag}")
    made: list[str] = []
    try:
        for ns in (net.centre, net.village):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", net.centre, "link", "add", net.centre_if, "type", "veth", "peer", "name",
            f"vv{tag}", "netns", net.village)  # fmt: skip
        _ip("-n", net.centre, "addr", "add", f"{net.centre_addr}/24", "dev", net.centre_if)
        _ip("-n", net.village, "addr", "add", f"{net.village_addr}/24", "dev", f"vv{tag}")
        _ip("-n", net.centre, "link", "set", net.centre_if, "up")
        _ip("-n", net.village, "link", "set", f"vv{tag}", "up")
        yield net
    finally:
        for ns in made:  # deleting a namespace deletes its end of the pair, and so the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=IP_TIMEOUT_S)


def listening(net: Lan, port: int) -> bool:
    """A TCP socket listens on ``port`` in the centre namespace (``ss`` run inside it)."""
    r = subprocess.run(
        net.run(net.centre, ["ss", "-Hltn", f"sport = :{port}"]),
        capture_output=True,
        text=True,
        timeout=IP_TIMEOUT_S,
    )
    return r.returncode == 0 and bool(r.stdout.strip())


class NsBroker(Proc):
    """mosquitto inside the centre namespace, on every address there, persistence on."""

    def __init__(self, net: Lan, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = workdir / "mosquitto.log"
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"user root\nlistener {self.port}\nallow_anonymous true\n"
            f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
            f"max_queued_messages 0\nmax_inflight_messages 0\n"
            f"log_dest file {self.log_path}\nlog_type error\nlog_type warning\nlog_type notice\n"
        )
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.net = net
        super().__init__(net.run(net.centre, [exe, "-c", str(conf)]), workdir / "stdout.log")

    def start(self) -> None:
        super().start()
        self.ready(lambda: listening(self.net, self.port), "mosquitto listening")


class NsCentral(Proc):
    """central inside the centre namespace; the test reads its SQLite database."""

    def __init__(self, net: Lan, workdir: Path, broker_port: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.db = workdir / "central.sqlite3"
        self.log_file = workdir / "central.log"
        conf = workdir / "central.toml"
        conf.write_text(
            f'[store]\npath = "{self.db}"\n[registry]\ndefault_scope = "4501"\n'
            f'[broker]\nhost = "127.0.0.1"\nport = {broker_port}\nclient_id = "central-faults"\n'
            f"keepalive_s = 5\n"
            f'[http]\nhost = "127.0.0.1"\nport = {free_port()}\n',
            encoding="utf-8",
        )
        argv = [sys.executable, "-m", "shilian", "central", "run", "--config", str(conf)]
        super().__init__(net.run(net.centre, argv), self.log_file)

    def start(self) -> None:
        super().start()
        # subscribed: central's session exists, so nothing a node publishes from now is dropped
        self.ready(lambda: self.db.exists() and _has_nodes_table(self.db), "central store")
        time.sleep(0.5)


def _has_nodes_table(db: Path) -> bool:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
            return bool(c.execute("SELECT 1 FROM sqlite_master WHERE name = 'nodes'").fetchone())
    except sqlite3.Error:
        return False


class NsEdge(Edge):
    """The edge agent inside the village namespace, connected to the broker over the veth."""

    def __init__(self, net: Lan, workdir: Path, node_id: str, broker_port: int) -> None:
        super().__init__(workdir, node_id, broker_port, keepalive_s=5, health_interval_s=2.0)
        conf = workdir / "edge.toml"
        conf.write_text(
            conf.read_text().replace('host = "127.0.0.1"', f'host = "{net.centre_addr}"'),
            encoding="utf-8",
        )
        self.args = net.run(net.village, self.args)
