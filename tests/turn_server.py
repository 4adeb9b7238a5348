"""A real coturn (Debian's ``turnserver``) for the tests: its own config file, TURN over UDP on
a free loopback port, REST credentials from a shared secret (``use-auth-secret``), relay ports
on 127.0.0.1, no daemon, no TLS, no telnet CLI, its SQLite database in the test's folder."""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from pathlib import Path

from shilian.broker import free_port
from tests.peers import program

#: How long coturn may take to listen (it starts in well under a second).
START_S = 10.0


class TurnServer:
    def __init__(self, workdir: Path) -> None:
        self.binary = program("turnserver", "apt install coturn")
        self.workdir = workdir
        self.port = free_port()
        self.secret = secrets.token_hex(16)
        self.url = f"turn:127.0.0.1:{self.port}?transport=udp"
        self.log = workdir / "turnserver.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        low = free_port()
        conf = self.workdir / "turnserver.conf"
        conf.write_text(
            "\n".join(
                [
                    "listening-ip=127.0.0.1",
                    "relay-ip=127.0.0.1",
                    f"listening-port={self.port}",
                    f"min-port={max(1024, low - 50)}",
                    f"max-port={max(1024, low - 50) + 200}",
                    "use-auth-secret",
                    f"static-auth-secret={self.secret}",
                    "realm=shilian.test",
                    "fingerprint",
                    "no-tls",
                    "no-dtls",
                    "no-cli",
                    "allow-loopback-peers",  # both peers are on loopback here; never in production
                    f"userdb={self.workdir / 'turndb.sqlite'}",
                    f"pidfile={self.workdir / 'turnserver.pid'}",
                    f"log-file={self.log}",
                    "simple-log",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        with (self.workdir / "turnserver.out").open("wb") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_S
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"turnserver did not start: {self._tail()}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        """coturn answers a STUN binding request on its port."""
        req = bytes.fromhex("000100002112a442") + secrets.token_bytes(12)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            try:
                s.sendto(req, ("127.0.0.1", self.port))
                return len(s.recv(512)) >= 20
            except OSError:
                return False

    def _tail(self) -> str:
        for f in (self.log, self.workdir / "turnserver.out"):
            if f.exists():
                return f.read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> TurnServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
