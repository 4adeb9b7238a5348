"""Firmware update through the whole system: central stores a signed image, a node command
starts the update, the edge agent downloads it over HTTP, verifies it, flashes the simulated
board over a real pty while it keeps serving alarms, and central sees the new version in the
board's retained device state. Also the local path (``shilian firmware flash`` through the
agent's socket, a subprocess) and an edge crash mid-transfer (the next attempt resumes).

Real mosquitto, real central (HTTP + SQLite), real edge Agent, real pty. The simulator runs at
460800 baud (a pty ignores baud; only its pacing changes) so 64 KiB transfers take ~1.5 s."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from central.config import BrokerConfig, CentralConfig, FirmwareConfig, HttpConfig, StoreConfig
from central.service import CentralService
from edge.agent import Agent
from edge.config import parse_config
from firmware_bridge import image as fi
from firmware_bridge.simulator import BoardSimulator, simulate_board
from shilian.broker import Mosquitto
from tests.processes import add_user, login
from tests.test_edge_board_source import until

NODE = "450102001003-fw"
MODEL = "SIM-BOARD"
#: Deadline of the flash subprocess (``until`` has its own, tests.test_edge_board_source.WAIT_S).
WAIT_S = 60.0


@dataclass
class Site:
    sim: BoardSimulator
    central: CentralService
    http: aiohttp.ClientSession
    keys: tuple[bytes, bytes]
    key_file: Path
    tmp: Path
    broker: Mosquitto
    agent: Agent | None = None

    async def board_detail(self) -> dict[str, Any]:
        async with self.http.get(f"/api/v1/nodes/{NODE}") as r:
            if r.status != 200:
                return {}
            node = await r.json()
        for d in node["devices"]:
            if d["device_id"] == "alarm_board":
                detail: dict[str, Any] = d["detail"]
                return detail
        return {}

    async def upload(self, img: fi.Image) -> dict[str, Any]:
        async with self.http.post("/api/v1/firmware", data=img.to_bytes()) as r:
            assert r.status in (200, 201), await r.text()
            body: dict[str, Any] = await r.json()
            return body

    async def command(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = {"cmd": "firmware-update", "args": args, "timeout_s": 10}
        async with self.http.post(f"/api/v1/nodes/{NODE}/commands", json=body) as r:
            out: dict[str, Any] = await r.json()
            return r.status, out

    def build(self, version: str, behaviour: fi.SimBehaviour = fi.SimBehaviour.OK) -> fi.Image:
        payload = fi.sim_payload(version, 64 * 1024, behaviour)
        return fi.sign(payload, board_model=MODEL, version=version, private_key=self.keys[0])


def agent_config(site: Site) -> Any:
    return parse_config(
        {
            "node_id": NODE,
            "broker": {"port": site.broker.port, "keepalive_s": 5},
            "outbox": {"path": str(site.tmp / "outbox.sqlite3")},
            "metrics": {"enabled": False},
            "local_socket": {"path": str(site.tmp / "edge.sock")},
            "alarm_board": {
                "device": site.sim.slave_path,
                "firmware_public_key": str(site.key_file),
                "zones": [{"input": 1, "kind": "panic", "name": "按钮1", "debounce_ms": 0}],
            },
        }
    )


@contextlib.asynccontextmanager
async def running_agent(site: Site) -> AsyncIterator[Agent]:
    agent = Agent(agent_config(site), serve_metrics=False, rng=lambda: 0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await until(lambda: task.done() or agent.started.is_set(), "edge agent started")
        assert not task.done()
        site.agent = agent
        yield agent
    finally:
        if not task.done():
            stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def site(broker: Mosquitto, tmp_path: Path) -> AsyncIterator[Site]:
    keys = fi.keygen()
    key_file = tmp_path / "fw.pub"
    key_file.write_text(keys[1].hex())
    ccfg = CentralConfig(
        broker=BrokerConfig(port=broker.port, client_id="central-fw", keepalive_s=5),
        store=StoreConfig(path=tmp_path / "central.sqlite3"),
        http=HttpConfig(port=0),
        firmware=FirmwareConfig(dir=tmp_path / "images", public_key=key_file),
    )
    central = CentralService(ccfg)
    async with (
        simulate_board(
            public_key=keys[1], baudrate=460800, board_model=MODEL, trial_s=5.0, seed=9
        ) as sim,
        asyncio.TaskGroup() as tg,
    ):
        ctask = tg.create_task(central.run())
        await until(lambda: ctask.done() or central._started.is_set(), "central started")
        try:
            async with aiohttp.ClientSession(
                f"http://127.0.0.1:{central.http_port}",
                cookie_jar=aiohttp.CookieJar(unsafe=True),
            ) as http:
                await login(http, "admin", add_user(ccfg.store.path, "admin", "admin"))
                yield Site(sim, central, http, keys, key_file, tmp_path, broker)
        finally:
            central.stop()


async def test_central_upload_command_download_flash_and_report(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with site(broker, tmp_path) as s, running_agent(s):
        img = s.build("2.0.0")
        # central refuses a tampered upload, keeps the good one (content-addressed)
        bad = bytearray(img.to_bytes())
        bad[-3] ^= 1
        async with s.http.post("/api/v1/firmware", data=bytes(bad)) as r:
            assert r.status == 422 and (await r.json())["error"]["code"] == "bad_signature"
        info = await s.upload(img)
        assert info["sha256"] == img.image_id
        async with s.http.get("/api/v1/firmware") as r:
            assert [i["version"] for i in (await r.json())["images"]] == ["2.0.0"]
        # the download route is public: nodes fetch without a login
        url = f"http://127.0.0.1:{s.central.http_port}{info['path']}"
        async with aiohttp.ClientSession() as anon, anon.get(url) as r:
            assert r.status == 200 and await r.read() == img.to_bytes()

        await until(lambda: s.board_detail(), "board state at central")
        assert (await s.board_detail())["firmware_version"] == "1.0.0"
        args = {"url": url, "sha256": img.image_id, "size": info["size"]}
        status, reply = await s.command(args)
        assert status == 200 and reply["result"]["started"] is True, reply
        # a second command while it runs: refused as busy, the first goes on
        status, reply = await s.command(args)
        assert status == 503 and reply["error"]["code"] == "busy", reply
        pressed = [s.sim.press(1, 0.0) for _ in range(5)]  # alarms during the transfer

        async def updated() -> bool:
            d = await s.board_detail()
            return d.get("update", {}).get("result") == "success"

        await until(updated, "update reported done at central")

        async def confirmed() -> bool:
            return (await s.board_detail()).get("firmware_state") == "normal"

        await until(confirmed, "confirmed state at central")
        d = await s.board_detail()
        assert d["firmware_version"] == "2.0.0" and d["firmware_state"] == "normal"
        assert d["update"]["bytes"] == d["update"]["total"] == len(img.signed)
        assert s.sim.core.fw_version == "2.0.0"
        assert all(pressed) and not s.sim.core.queue  # every alarm acknowledged by the edge

        def fw_events() -> list[dict[str, Any]]:
            with contextlib.closing(sqlite3.connect(s.central.cfg.store.path)) as c:
                rows = c.execute(
                    "SELECT data FROM events WHERE kind = 'firmware_update' ORDER BY seq"
                ).fetchall()
            return [json.loads(r[0]) for r in rows]

        await until(lambda: len(fw_events()) == 1, "firmware_update event at central")
        assert fw_events()[0]["result"] == "success" and fw_events()[0]["version"] == "2.0.0"

        # a signed image for which the node's sha256 check fails: refused, board untouched
        status, reply = await s.command({**args, "sha256": "0" * 64})
        assert status == 200

        async def refused() -> bool:
            d = await s.board_detail()
            return d.get("update", {}).get("result") == "id_mismatch"

        await until(refused, "sha256 mismatch reported")
        assert s.sim.core.fw_version == "2.0.0"


async def test_local_flash_via_agent_socket_and_rollback(broker: Mosquitto, tmp_path: Path) -> None:
    """``shilian firmware flash`` (a subprocess) through the running agent's socket: a bad
    image is rolled back by the board (exit code 4), the old version keeps running."""
    async with site(broker, tmp_path) as s, running_agent(s):
        img = s.build("3.0.0", fi.SimBehaviour.NO_HEARTBEAT)
        path = tmp_path / "bad.img"
        path.write_bytes(img.to_bytes())
        await until(lambda: s.board_detail(), "board state at central")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from shilian.cli import main; main()",
            "firmware",
            "flash",
            str(path),
            "--public-key",
            str(s.key_file),
            "--socket",
            str(tmp_path / "edge.sock"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "COLUMNS": "100"},
        )
        out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
        assert proc.returncode == 4, (out, err)
        assert "rolled back" in err.decode() and "not_confirmed" in err.decode()
        assert s.sim.core.fw_version == "1.0.0"

        async def reported() -> bool:
            d = await s.board_detail()
            return d.get("firmware_state") == "rolled_back" and d["firmware_version"] == "1.0.0"

        await until(reported, "rollback reported at central")
        assert (await s.board_detail())["rollback_reason"] == "not_confirmed"


async def test_edge_crash_mid_transfer_resumes(broker: Mosquitto, tmp_path: Path) -> None:
    """The agent dies (as a power cut) mid-transfer; the next agent resumes the job by itself
    (no second command) from the image it stored (central no longer serves it) at the board's
    resume point, not at 0, and reports the outcome once."""
    async with site(broker, tmp_path) as s:
        img = s.build("4.0.0")
        info = await s.upload(img)
        url = f"http://127.0.0.1:{s.central.http_port}{info['path']}"
        args = {"url": url, "sha256": img.image_id, "size": info["size"]}
        job_file = tmp_path / "firmware-alarm_board.json"
        image_file = tmp_path / "firmware-alarm_board.img"
        async with running_agent(s) as agent:
            await until(lambda: s.board_detail(), "board state at central")
            status, reply = await s.command(args)
            assert status == 200, reply
            await until(lambda: len(s.sim.bootloader.data) > len(img.signed) // 3, "1/3 sent")
            await agent.crash()
        held = len(s.sim.bootloader.data)
        assert 0 < held < len(img.signed)
        job = json.loads(job_file.read_text())
        assert job["sha256"] == img.image_id and job["state"] == "flashing"
        assert job["version"] == "4.0.0" and image_file.read_bytes() == img.to_bytes()
        # a re-download would now fail: the resumed job must use the stored image
        stored = [p for p in (tmp_path / "images").rglob("*") if p.is_file()]
        assert stored
        for p in stored:
            p.unlink()
        async with aiohttp.ClientSession() as anon, anon.get(url) as r:
            assert r.status == 404

        async with running_agent(s):

            async def done() -> bool:
                return (await s.board_detail()).get("update", {}).get("result") == "success"

            await until(done, "update done after the restart, without a second command")
            d = await s.board_detail()
            assert d["update"]["resumed"] is True
            assert d["update"]["resumed_from"] > 0 and d["update"]["resumed_from"] >= held
            assert d["firmware_version"] == "4.0.0"
            assert s.sim.core.fw_version == "4.0.0"
            await until(lambda: not job_file.exists(), "job cleared after success")
            assert not image_file.exists()

            def fw_events() -> list[dict[str, Any]]:
                with contextlib.closing(sqlite3.connect(s.central.cfg.store.path)) as c:
                    rows = c.execute(
                        "SELECT data FROM events WHERE kind = 'firmware_update'"
                    ).fetchall()
                return [json.loads(r[0]) for r in rows]

            await until(lambda: len(fw_events()) == 1, "firmware_update event at central")
            assert fw_events()[0]["result"] == "success"
            # the job is over: a new command is accepted; its download fails (central lost the
            # image), a final failure, and that job is cleared too
            status, reply = await s.command(args)
            assert status == 200 and reply["result"]["started"] is True, reply

            async def failed() -> bool:
                d = await s.board_detail()
                return d.get("update", {}).get("result") == "download_failed"

            await until(failed, "download failure reported")
            await until(lambda: not job_file.exists(), "job cleared after a final failure")
            assert s.sim.core.fw_version == "4.0.0"
