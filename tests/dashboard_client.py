"""An HTTP client for a real central, logged in as a given user (central.auth), and the peers
the alert, report and history tests drive: a fleet of nodes over MQTT and a webhook receiver.

Accounts are written into central's database before central starts; ``POST /api/v1/login``
then gives a bearer token.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PASSWORD = "h5-test-password"


def add_user(db: Path, name: str, role: str, scope: str = "") -> None:
    """Create ``name`` (password :data:`PASSWORD`) in central's database before it starts."""
    from tests.processes import add_user as add_account

    add_account(db, name, role, scope, PASSWORD)


class Client:
    def __init__(self, base: str, user: str) -> None:
        self.base = base
        self.headers: dict[str, str] = {}
        token = self.call("POST", "/api/v1/login", {"user": user, "password": PASSWORD})
        self.headers["Authorization"] = f"Bearer {token['token']}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        status, data = self.raw(method, path, body)
        if status >= 400:
            raise AssertionError(f"{method} {path}: {status} {data[:500]!r}")
        return json.loads(data)

    def raw(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        for k, v in self.headers.items():
            req.add_header(k, v)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path: str) -> Any:
        return self.call("GET", path)


class Fleet:
    """Publishes nodes' retained state as their agents would (one MQTT client for all)."""

    def __init__(self, port: int) -> None:
        import uuid

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.boot = uuid.uuid4().hex
        self.births: dict[str, int] = {}

    def state(self, node_ids: list[str], online: bool) -> None:
        import wire

        infos = []
        for node_id in node_ids:
            seq = self.births.get(node_id, 0) + (1 if online else 0)
            self.births[node_id] = max(seq, 1)
            msg = wire.NodeState(
                node=node_id,
                state="online" if online else "offline",
                boot_id=self.boot,
                birth_seq=max(seq, 1),
                ts=time.time(),
                reason="connect" if online else "stopped",
                health_interval_s=wire.limits.MAX_HEALTH_INTERVAL_S,  # no expiry during tests
            )
            infos.append(
                self.client.publish(wire.Topics(node_id).state, wire.encode(msg), 1, retain=True)
            )
        for info in infos:
            info.wait_for_publish(30)

    def details(self, node_id: str) -> None:
        """Health reports, a camera and a few events, as a running agent would send them."""
        import wire

        now = time.time()
        topics = wire.Topics(node_id)
        msgs: list[tuple[str, wire.Health | wire.DeviceState | wire.Event, bool]] = []
        for i in range(6):
            health = wire.Health(
                node=node_id,
                boot_id=self.boot,
                ts=now - 30 * (5 - i),
                interval_s=wire.limits.MAX_HEALTH_INTERVAL_S,
                uptime_s=86400 + 30 * i,
                sw_version="0.1.0",
                cpu_pct=10 + 3 * i,
                mem_used_pct=40 + i,
                disk_used_pct=21.5,
                temp_c=48 + i / 2,
                outbox_depth=0,
            )
            msgs.append((topics.health, health, False))
        camera = wire.DeviceState(
            node=node_id, ts=now, kind="camera", state="up", name="村委会门口"
        )
        msgs.append((topics.device("cam1"), camera, True))
        for seq, (priority, kind) in enumerate(
            [("info", "door_open"), ("device", "camera_up"), ("alarm", "panic")], start=1
        ):
            event = wire.Event(
                node=node_id,
                boot_id=self.boot,
                seq=seq,
                ts=now - 60 + seq,
                priority=wire.Priority(priority),
                kind=kind,
                device="cam1" if priority == "device" else None,
            )
            msgs.append((topics.event, event, False))
        infos = [self.client.publish(t, wire.encode(m), 1, retain=r) for t, m, r in msgs]
        for info in infos:
            info.wait_for_publish(30)

    def health(self, node_id: str, clock_off_s: float = 0.0) -> None:
        """One health report now, stamped by a clock ``clock_off_s`` off the real one."""
        import wire

        msg = wire.Health(
            node=node_id, boot_id=self.boot, ts=time.time() + clock_off_s,
            interval_s=wire.limits.MAX_HEALTH_INTERVAL_S, uptime_s=86400, sw_version="0.1.0",
            cpu_pct=10, mem_used_pct=40, disk_used_pct=21.5, outbox_depth=0,
        )  # fmt: skip
        self.client.publish(wire.Topics(node_id).health, wire.encode(msg), 1).wait_for_publish(30)

    def alarm(self, node_id: str, seq: int, kind: str = "panic") -> None:
        """One alarm event from ``node_id`` (as the alarm board's source sends it)."""
        import wire

        event = wire.Event(
            node=node_id,
            boot_id=self.boot,
            seq=seq,
            ts=time.time(),
            priority=wire.Priority("alarm"),
            kind=kind,
        )
        info = self.client.publish(wire.Topics(node_id).event, wire.encode(event), 1)
        info.wait_for_publish(30)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Receiver:
    """A real webhook receiver: an aiohttp server on a free loopback port in its own thread.
    ``statuses``: the answers to give, in order (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        import asyncio
        import threading

        from aiohttp import web

        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.statuses = list(statuses or [])
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()

        async def hook(request: web.Request) -> web.Response:
            self.attempts += 1
            status = self.statuses.pop(0) if self.statuses else 200
            if status == 200:
                self.bodies.append(await request.json())
            return web.Response(status=status)

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/hook", hook)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = int(self._runner.addresses[0][1])
            self._ready.set()

        def main() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(start())
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        assert self._ready.wait(30)
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        import asyncio

        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        fut.result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
