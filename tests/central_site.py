"""Central's whole HTTP application in-process on a free loopback port, assembled as
central.service does (API, auth, dashboard, alerts, commissioning, enrolment with a real CA), over
central's own SQLite store with an injected clock: the target of the hostile-client tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import prometheus_client
from aiohttp import web

from central import alert_routes, http_server
from central.alerting import AlertTask
from central.alerts import AlertRule, AlertsConfig, WebhookConfig
from central.app import make_app
from central.commissioning import add_commissioning_routes
from central.config import AuthConfig, CaConfig
from central.coverage import CoverageIndex
from central.dashboard import add_routes as add_dashboard_routes
from central.enrol import add_enrol_routes
from central.http import ApiContext
from central.live import LiveHub
from central.store import EventRow, NodeRow, SqliteStore
from pki.ca import CertificateAuthority
from registry import Registry
from tests.processes import add_user, login

NANNING = Registry.from_package("4501")
XINGNING, QINGXIU = "450102", "450103"
V1 = "450102001003"  # 兴宁区
V3 = "450103001005"  # 青秀区
NODE1, NODE3 = f"{V1}-a", f"{V3}-a"
BOOT = "c" * 32
#: A webhook whose URL carries secrets (userinfo and a token in the query), as real ones do.
#: Port 9 on loopback refuses at once, so deliveries fail fast and are logged.
SECRET_HOOK = "http://bot:hunter2@127.0.0.1:9/send?access_token=s3cr3t-value&x=1"
RULES = [
    AlertRule(id="xingning-off", kind="node_offline", code=XINGNING, minutes=5),
    AlertRule(id="qingxiu-off", kind="node_offline", code=QINGXIU, minutes=5),
    AlertRule(id="city-cov", kind="coverage_below", threshold_pct=50.0),
]


@dataclass
class CentralSite:
    app: web.Application
    base: str
    db: Path
    clock: list[float]
    hub: LiveHub
    metrics: prometheus_client.CollectorRegistry
    alarms: dict[str, int]  # village -> an alarm event id there
    passwords: dict[str, str]

    def client(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(self.base, cookie_jar=aiohttp.CookieJar(unsafe=True))

    def user(self, name: str, role: str, scope: str = "") -> str:
        self.passwords[name] = add_user(self.db, name, role, scope)
        return name

    async def session(self, name: str) -> aiohttp.ClientSession:
        http = self.client()
        await login(http, name, self.passwords[name])
        return http

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.get_sample_value(name, labels) or 0.0


def _seed(store: SqliteStore, cov: CoverageIndex) -> dict[str, int]:
    alarms = {}
    for i, village in enumerate((V1, V3)):
        node = f"{village}-a"
        store.apply(
            [
                NodeRow(node, village, village[:6], "online", 10.0, "connect", BOOT, 1, 30.0, "0.1",
                        10.0, 10.0),
                EventRow(node, village, BOOT, 1, 100.0 + i, 100.5, "alarm", "panic", None, "{}"),
            ]
        )  # fmt: skip
        cov.set_node(node, True)
        row = store.conn.execute(
            "SELECT id FROM events WHERE node_id = ? AND priority = 'alarm'", (node,)
        ).fetchone()
        alarms[village] = int(row[0])
    return alarms


@asynccontextmanager
async def central_site(tmp_path: Path) -> AsyncIterator[CentralSite]:
    db = tmp_path / "central.sqlite3"
    store = SqliteStore(db)
    cov = CoverageIndex(NANNING)
    alarms = _seed(store, cov)
    clock = [1_000_000.0]
    metrics = prometheus_client.CollectorRegistry()
    ctx = ApiContext(db, NANNING, cov, metrics, None, clock=lambda: clock[0], auth=AuthConfig())
    app = make_app(ctx)
    hub = LiveHub(cov, lambda v: (u.code for u in NANNING.ancestors(v)), lambda: clock[0])
    add_dashboard_routes(app, hub)
    alerts = AlertTask(
        AlertsConfig(eval_interval_s=300, rules=RULES, webhooks=[WebhookConfig(url=SECRET_HOOK)]),
        db,
        NANNING,
        cov,
        lambda: [],
        hub,
        metrics,
        lambda: clock[0],
    )
    alert_routes.add_routes(app, alerts)
    add_commissioning_routes(app, db, NANNING, lambda: clock[0])
    CertificateAuthority.create(tmp_path / "ca")
    add_enrol_routes(app, CaConfig(dir=tmp_path / "ca", broker_host="mqtt.example"), db)
    runner = http_server.runner(app)  # as central.service serves it
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    stop = asyncio.Event()
    alerting = asyncio.create_task(alerts.run(stop))
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield CentralSite(app, base, db, clock, hub, metrics, alarms, {})
    finally:
        stop.set()
        await alerting
        await runner.cleanup()
        store.close()


async def call(
    http: aiohttp.ClientSession, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    """(status, JSON body) of one request with ``http``'s session."""
    async with http.request(method, path, json=body) as r:
        return r.status, await r.json()


@asynccontextmanager
async def admin_site(tmp_path: Path) -> AsyncIterator[CentralSite]:
    """:func:`central_site` with the users of the admin routes' tests: "boss" (admin of the
    city), "xadmin" (admin of 兴宁区), "op" (operator) and "viewer"."""
    async with central_site(tmp_path) as s:
        s.user("boss", "admin")
        s.user("xadmin", "admin", XINGNING)
        s.user("op", "operator")
        s.user("viewer", "viewer")
        yield s


class ThreadedCentral:
    """:func:`central_site` served from its own thread and event loop, for synchronous tests
    (hypothesis drives plain HTTP clients at it)."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp = tmp_path
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.site: CentralSite | None = None
        self._thread = threading.Thread(target=self._main, name="central-site", daemon=True)

    def _main(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with central_site(self._tmp) as site:
                self.site = site
                self._ready.set()
                await self._stop.wait()

        asyncio.run(serve())

    def __enter__(self) -> CentralSite:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("central site did not start")
        assert self.site is not None
        return self.site

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
