"""Real product processes for end-to-end tests: ``shilian central run`` and ``shilian edge run``
as subprocesses with generated configs, plus small sync clients for their interfaces.

Central's API needs a login (central.auth): :class:`Central` creates an admin account in its
database before the first start and logs in after each start; :func:`add_user` and
:func:`login` serve the in-process API tests too."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from central.db import Target
from shilian.broker import free_port

T = TypeVar("T")

#: Upper bound for any condition an end-to-end test waits for (generous: shared 2-core machines).
WAIT_S = 60.0
#: Requests per connection when emitting many events (the agent allows 256 outstanding).
EMIT_CHUNK = 200
#: The account end-to-end tests act as (scope "": everything central serves).
ADMIN = "admin"
ADMIN_PASSWORD = "e2e-admin-password"


def add_user(db: Target, name: str, role: str, scope: str = "", password: str = "") -> str:
    """Create an account in central's database (as ``shilian central user add`` does); return
    its password."""
    import time

    from central.accounts import AccountStore, parse_role

    password = password or f"pw-{name}-0123"
    store = AccountStore(db)
    try:
        if store.get(name) is None:
            store.add(name, parse_role(role), scope, password, time.time())
    finally:
        store.close()
    return password


async def login(http: Any, user: str, password: str) -> dict[str, Any]:
    """Log ``http`` (an aiohttp.ClientSession with ``CookieJar(unsafe=True)``: the cookie is
    for 127.0.0.1) in through ``POST /api/v1/login``; return the answer (token, role, scope)."""
    async with http.post("/api/v1/login", json={"user": user, "password": password}) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


def wait_for(cond: Callable[[], T | None], timeout: float = WAIT_S, what: str = "") -> T:
    """Poll ``cond`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = cond()
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            v = None
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.1)


class Proc:
    def __init__(self, args: list[str], log: Path) -> None:
        self.args, self.log = args, log
        self.p: subprocess.Popen[bytes] | None = None
        #: Extra environment of the process (e.g. libfaketime's, tests/faults/clock.py).
        self.env: dict[str, str] = {}

    def start(self) -> None:
        env = {**os.environ, **self.env} if self.env else None
        with self.log.open("ab") as f:
            self.p = subprocess.Popen(self.args, stdout=f, stderr=subprocess.STDOUT, env=env)

    def ready(self, cond: Callable[[], object], what: str) -> None:
        """Wait for ``cond``; fail at once, with the log, if the process exits meanwhile."""

        def check() -> object:
            if self.p is None or self.p.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"{self.args[3:5]} exited while starting:\n{tail}")
            return cond()

        wait_for(check, what=what)

    def signal(self, sig: int) -> int:
        assert self.p is not None
        self.p.send_signal(sig)
        rc = self.p.wait(30)
        self.p = None
        return rc

    def close(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.p = None


class Central(Proc):
    def __init__(
        self,
        workdir: Path,
        broker_port: int,
        scope: str = "4501",
        extra_conf: str = "",
        url: str | None = None,
    ) -> None:
        """``extra_conf``: TOML appended to the generated central.toml, right after its
        ``[http]`` keys (more ``[http]`` keys first, then other sections). ``url``: central's
        database is this PostgreSQL database (``[store] url``) instead of a SQLite file."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.api = f"http://127.0.0.1:{self.http_port}"
        self.db = workdir / "central.sqlite3"
        #: Central's database: the SQLite file, or the PostgreSQL database ``url`` names.
        self.target: Target = self.db if url is None else url
        self.token: str | None = None
        conf = workdir / "central.toml"
        store_url = "" if url is None else f'url = "{url}"\n'
        conf.write_text(
            f'[store]\npath = "{workdir / "central.sqlite3"}"\n{store_url}'
            f'[registry]\ndefault_scope = "{scope}"\n'
            f'[broker]\nhost = "127.0.0.1"\nport = {broker_port}\nclient_id = "central-e2e"\n'
            f'[http]\nhost = "127.0.0.1"\nport = {self.http_port}\n' + extra_conf,
            encoding="utf-8",
        )
        super().__init__(
            [sys.executable, "-m", "shilian", "central", "run", "--config", str(conf)],
            workdir / "central.log",
        )

    def start(self) -> None:
        add_user(self.target, ADMIN, "admin", "", ADMIN_PASSWORD)
        super().start()
        self.ready(lambda: self.get("/healthz"), what="central /healthz")
        self.token = self.login(ADMIN, ADMIN_PASSWORD)["token"]

    def login(self, user: str, password: str) -> dict[str, Any]:
        body: dict[str, Any] = self.call(
            "POST", "/api/v1/login", {"user": user, "password": password}
        )
        return body

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """One API call with the admin's session (or ``token``); raises HTTPError on >= 400."""
        token = token or self.token
        req = urllib.request.Request(
            self.api + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def open(self, path: str, timeout: float = 10) -> Any:
        """``urlopen`` of ``path`` with the admin's session (a stream, a page, a redirect)."""
        req = urllib.request.Request(self.api + path)
        req.add_header("Authorization", f"Bearer {self.token}")
        return urllib.request.urlopen(req, timeout=timeout)

    def node(self, node_id: str) -> dict[str, Any]:
        n: dict[str, Any] = self.get(f"/api/v1/nodes/{node_id}")
        return n

    def events(self, node_id: str) -> list[dict[str, Any]]:
        ev: list[dict[str, Any]] = self.get(f"/api/v1/events?node={node_id}&limit=1000")["events"]
        return ev


def record_result(fault: str, **figures: float) -> None:
    """One row of figures for docs/reliability.md, when ``make reliability`` collects them
    (SHILIAN_RELIABILITY_RESULTS names the file; bench/faults/report.py renders it)."""
    path = os.environ.get("SHILIAN_RELIABILITY_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"fault": fault, **figures}) + "\n")


@contextlib.contextmanager
def running_central(workdir: Path, broker_port: int, extra_conf: str = "") -> Iterator[Central]:
    """A started :class:`Central` process, killed on exit."""
    c = Central(workdir, broker_port, extra_conf=extra_conf)
    try:
        c.start()
        yield c
    finally:
        c.close()


class Edge(Proc):
    def __init__(
        self,
        workdir: Path,
        node_id: str,
        broker_port: int,
        keepalive_s: int = 60,
        health_interval_s: float = 600.0,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.node_id = node_id
        self.workdir = workdir
        self.sock = workdir / "edge.sock"
        conf = workdir / "edge.toml"
        conf.write_text(
            f'node_id = "{node_id}"\nhealth_interval_s = {health_interval_s}\n'
            f"shutdown_flush_s = 5\n"
            f'[broker]\nhost = "127.0.0.1"\nport = {broker_port}\nkeepalive_s = {keepalive_s}\n'
            f'[outbox]\npath = "{workdir / "outbox.sqlite3"}"\n'
            f"[metrics]\nenabled = false\n"
            f'[local_socket]\npath = "{self.sock}"\n',
            encoding="utf-8",
        )
        super().__init__(
            [sys.executable, "-m", "shilian", "edge", "run", "--config", str(conf)],
            workdir / "edge.log",
        )

    def start(self) -> None:
        self.start_nowait()
        self.wait_ready()

    def start_nowait(self) -> None:
        """Start the process without waiting (many agents starting at once)."""
        super().start()

    def wait_ready(self) -> None:
        self.ready(lambda: self.sock.exists() and self.request({"op": "status"}), "edge socket")

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        return self.pipeline([req])[0]

    def pipeline(self, reqs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send requests on one connection; return the replies (each after its durable accept)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(self.sock))
            s.sendall(b"".join(json.dumps(r).encode() + b"\n" for r in reqs))
            f = s.makefile("rb")
            return [json.loads(f.readline()) for _ in reqs]

    def emit(self, n: int, priority: str = "info", kind: str = "test") -> list[int]:
        """Emit ``n`` events, in chunks below the agent's pipeline bound; return their seqs."""
        seqs: list[int] = []
        for start in range(0, n, EMIT_CHUNK):
            reqs = [
                {"op": "emit", "priority": priority, "kind": kind, "data": {"i": i}}
                for i in range(start, min(n, start + EMIT_CHUNK))
            ]
            replies = self.pipeline(reqs)
            assert all(r["ok"] for r in replies), replies[:3]
            seqs += [int(r["seq"]) for r in replies]
        return seqs

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
