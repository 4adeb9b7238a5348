"""A county broker bridged to the city broker, the bridge's uplink cut: the county's nodes are held
"county link down" (coverage unchanged), what they sent meanwhile arrives when the link is back,
and they are online again with their health deadlines restarted.

Two real mosquitto brokers: the county one runs deploy/mosquitto-county-bridge.conf (address,
certificates and timings adapted to the test), the city one is central's. The uplink is a TCP
relay on loopback between them. A cut resets the relayed connections and refuses new ones: what a
county router's uplink going down looks like from both brokers (no DISCONNECT, no will of any
node: the nodes stay connected to their county broker). Killing the county broker instead would
publish every node's will, and stopping central's broker is central's own outage, a different
fault (tests/test_broker_outage.py). A silent cut (packets dropped, no reset) ends the same way,
later: the city broker notices it after 1.5 x the bridge's keepalive (deploy conf comments).

Timings are shortened as in the other broker tests: health every 2 s (deadline 3 s).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from central.config import BrokerConfig, CentralConfig, HttpConfig, StoreConfig
from central.ingest import COUNTY_LINK_DOWN, COUNTY_LINK_UP, ONLINE
from central.service import CentralService
from registry import Registry
from shilian.broker import Mosquitto, free_port
from shilian.simulate.node import SimNode, make_fleet
from tests.test_central_service import db_rows, wait_for

ROOT = Path(__file__).resolve().parent.parent
CITY = "4501"
COUNTY = "450102"
OTHER = "450103"
INTERVAL_S = 2.0
#: A deadline is at most 1.5 x the interval after the last health: cut for twice that.
CUT_S = 3 * INTERVAL_S


class Uplink:
    """A TCP relay standing for the county's uplink: :meth:`cut` resets every relayed
    connection and refuses new ones until :meth:`restore`."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None

    async def _relay(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            w.transport.abort()
            return
        self._writers |= {w, uw}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(r, uw), pump(ur, w))
        self._writers -= {w, uw}


def county_conf(uplink_port: int) -> str:
    """The deploy example, pointed at the relay, without TLS, reconnecting within a second."""
    out = []
    for line in (ROOT / "deploy/mosquitto-county-bridge.conf").read_text().splitlines():
        key = line.split(" ", 1)[0]
        if key in ("bridge_cafile", "bridge_certfile", "bridge_keyfile", "persistence"):
            continue
        if key == "address":
            line = f"address 127.0.0.1:{uplink_port}"
        elif key == "restart_timeout":
            line = "restart_timeout 1 1"
        out.append(line)
    return "\n".join(out)


def villages(county: str, n: int) -> list[str]:
    return [u.code for u in Registry.from_package(CITY).villages() if u.code[:6] == county][:n]


async def test_a_cut_county_uplink_holds_its_nodes_and_loses_nothing(tmp_path: Path) -> None:
    (tmp_path / "city").mkdir()
    (tmp_path / "county").mkdir()
    with Mosquitto(workdir=tmp_path / "city") as city:
        uplink = Uplink(city.port)
        await uplink.restore()
        with Mosquitto(workdir=tmp_path / "county", extra_conf=county_conf(uplink.port)) as county:
            await _scenario(tmp_path, city, county, uplink)


async def _scenario(tmp_path: Path, city: Mosquitto, county: Mosquitto, uplink: Uplink) -> None:
    def fleet(county_code: str, n: int, port: int, seed: int) -> list[SimNode]:
        ids = [f"{v}-a" for v in villages(county_code, n)]
        return make_fleet(
            ids,
            port,
            interval_s=INTERVAL_S,
            backoff_base_s=0.1,
            backoff_cap_s=1.0,
            connect_timeout_s=3.0,
            seed=seed,
        )

    held = fleet(COUNTY, 3, county.port, 1)
    for n in held:
        n.event_interval_s = 0.5
    other = fleet(OTHER, 1, city.port, 2)
    nodes: list[SimNode] = held + other
    cfg = CentralConfig(
        broker=BrokerConfig(port=city.port, client_id="central-county", keepalive_s=5),
        store=StoreConfig(path=tmp_path / "central.db"),
        http=HttpConfig(port=0),
    )
    svc = CentralService(cfg, reconnect_grace_s=3.0, rng=lambda: 0.01)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        central = tg.create_task(svc.run())
        await svc.started()
        for n in nodes:
            tg.create_task(n.run(stop))
        try:
            await wait_for(lambda: svc.link.connected, "central connected")
            await wait_for(
                lambda: (
                    svc.coverage.online_nodes() == len(nodes)
                    and all(svc.ingest.liveness.deadline(n.node_id) for n in nodes)
                ),
                "every node online at central",
            )
            covered = svc.coverage.summary(CITY).covered
            assert covered == len(nodes)

            await uplink.cut()
            await wait_for(lambda: COUNTY in svc.ingest.counties_down, "the bridge's will")
            sent_in_cut = {n.node_id: n.seq for n in held}
            await asyncio.sleep(CUT_S)  # past every held node's health deadline
            rows = {n.node_id: svc.ingest.nodes[n.node_id] for n in nodes}
            for n in held:
                assert (rows[n.node_id].state, rows[n.node_id].state_reason) == (
                    ONLINE,
                    COUNTY_LINK_DOWN,
                ), n.node_id
                assert n.connected  # to its county broker, all along
            assert rows[other[0].node_id].state_reason != COUNTY_LINK_DOWN
            # what the API and the dashboard read
            stored = db_rows(cfg, "SELECT node_id, state, state_reason FROM nodes")
            assert {r for r in stored if r[0][:6] == COUNTY} == {
                (n.node_id, ONLINE, COUNTY_LINK_DOWN) for n in held
            }
            assert svc.coverage.summary(CITY).covered == covered
            assert svc.coverage.summary(COUNTY).covered == len(held)
            assert _metric(svc, "shilian_county_links_down") == 1
            assert _metric(svc, "shilian_nodes_held_county_link") == len(held)
            assert all(n.seq > sent_in_cut[n.node_id] for n in held)  # events sent in the cut
            sent = {n.node_id: (n.boot_id, n.seq) for n in held}

            restored = svc.mono()  # deadlines are on central's monotonic clock
            await uplink.restore()
            await wait_for(lambda: COUNTY not in svc.ingest.counties_down, "the bridge back")

            def all_arrived() -> bool:
                for node_id, (boot, seq) in sent.items():
                    s = svc.ingest.seqs.get((node_id, boot))
                    if s is None or s.high < seq or any(g[0] <= seq for g in s.gaps):
                        return False
                return True

            await wait_for(all_arrived, "every event sent during the cut")  # 0 lost
            for n in held:
                row = svc.ingest.nodes[n.node_id]
                assert (row.state, row.state_reason) == (ONLINE, COUNTY_LINK_UP)
                deadline = svc.ingest.liveness.deadline(n.node_id)
                assert deadline is not None and deadline > restored
            # Health flows again: a full grace period later they are still online.
            await asyncio.sleep(CUT_S)
            assert all(svc.ingest.nodes[n.node_id].state == ONLINE for n in nodes)
            assert svc.coverage.summary(CITY).covered == covered
            assert _metric(svc, "shilian_county_links_down") == 0
            assert _metric(svc, "shilian_county_link_drops_total") == 1
            assert _metric(svc, "shilian_nodes_offline_total", {"reason": "health_timeout"}) in (
                None,
                0,
            )
        finally:
            stop.set()
            svc.stop()
            await central


def _metric(svc: CentralService, name: str, labels: dict[str, str] | None = None) -> float | None:
    return svc.metrics.registry.get_sample_value(name, labels or {})
