"""A newer NBS edition: names updated, codes added and retired, no node ever cut off."""

from __future__ import annotations

import asyncio
import lzma
import shutil
from pathlib import Path

from typer.testing import CliRunner

from central.cli import app as central_app
from central.db import Target, open_db
from central.registry_store import import_edition, import_registry, load
from shilian.broker import Mosquitto
from tests.dashboard_client import Client, add_user
from tests.test_central_service import Node, central, make_cfg, sample, wait_for

DATA = Path(__file__).resolve().parents[1] / "registry" / "data"
RENAMED = "450102001003"  # 兴宁社区居委会 in 2023
RETIRED = "450102001004"  # 北宁社区居委会 in 2023
ADDED = "450102001999"  # no such village in 2023


def newer_edition(tmp_path: Path) -> Path:
    """The 2023 table for Guangxi with one village renamed, one gone and one new."""
    out = tmp_path / "edition"
    out.mkdir()
    shutil.copy(DATA / "index.tsv", out / "index.tsv")
    lines = lzma.decompress((DATA / "45.tsv.xz").read_bytes()).decode().splitlines()
    edited: list[str] = []
    for line in lines:
        code = line.split("\t", 1)[0]
        if code == RETIRED:
            continue
        if code == RENAMED:
            line = f"{RENAMED}\t兴宁新社区居委会"
        edited.append(line)
        if code == "450102001006":  # after a sibling: parents still come first
            edited.append(f"{ADDED}\t新建社区居委会")
    (out / "45.tsv.xz").write_bytes(lzma.compress("\n".join(edited).encode() + b"\n"))
    return out


def test_new_edition_renames_adds_and_retires(tmp_path: Path, db_target: Target) -> None:
    conn = open_db(db_target)
    before = import_registry(conn, "4501")
    progress: list[tuple[int, int]] = []
    report = import_edition(
        conn, "4501", newer_edition(tmp_path), lambda d, t: progress.append((d, t))
    )
    assert (report.added, report.renamed, report.retired) == (1, 1, [RETIRED])
    assert report.villages == before  # one gone, one new
    assert progress and progress[-1][0] == progress[-1][1]
    reg = load(conn)
    assert reg is not None
    assert reg.unit(RENAMED) is not None and reg.unit(RENAMED).name == "兴宁新社区居委会"  # type: ignore[union-attr]
    assert reg.has_village(ADDED)
    assert not reg.has_village(RETIRED)
    assert reg.retired_village(RETIRED) == "北宁社区居委会" and reg.knows_village(RETIRED)
    # Re-importing the old edition brings the village back as current.
    import_registry(conn, "4501")
    again = load(conn)
    assert (
        again is not None and again.has_village(RETIRED) and again.retired_village(RETIRED) is None
    )


async def test_node_in_a_retired_village_is_flagged_not_dropped(
    broker: Mosquitto, tmp_path: Path
) -> None:
    cfg = make_cfg(broker, tmp_path)
    node = Node(broker, f"{RETIRED}-a")
    async with central(cfg) as svc:
        await node.connect()
        await wait_for(lambda: svc.coverage.summary(RETIRED).covered == 1, "node covers village")
        await node.close()
    runner = CliRunner()
    r = runner.invoke(
        central_app,
        ["import-registry", "--db", str(cfg.store.path), "--scope", "4501", "--data",
         str(newer_edition(tmp_path))],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "撤销 1" in r.stdout and f"{RETIRED}-a" in r.stdout
    add_user(cfg.store.path, "admin", "admin")
    async with central(cfg) as svc:
        await node.connect()  # a new birth from the retired village: accepted, not refused
        api = await asyncio.to_thread(Client, f"http://127.0.0.1:{svc.http_port}", "admin")
        path = f"/api/v1/nodes/{RETIRED}-a"
        for _ in range(400):
            body = await asyncio.to_thread(api.call, "GET", path)
            if body["state"] == "online" and body["birth_seq"] == 2:
                break
            await asyncio.sleep(0.05)
        assert body["state"] == "online" and body["birth_seq"] == 2
        assert body["village_retired"] is True and body["village_name"] == "北宁社区居委会"
        assert sample(svc, "shilian_invalid_messages_total", reason="unknown_village") == 0
        assert sample(svc, "shilian_messages_ingested_total", kind="state") >= 1
        # Coverage counts current villages only; the retired one is in no unit's figure.
        county = await asyncio.to_thread(api.call, "GET", "/api/v1/coverage/450102")
        assert county["unit"]["covered"] == 0
        await node.close()
