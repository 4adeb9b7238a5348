"""docs/provisioning.md's technician steps, followed in the order written: each works the first
time, and nothing waits for or reports a failure the technician could not have avoided."""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning.cli import app
from shilian.broker import free_port
from tests.processes import Proc
from tests.test_prov_flow import Site, cli, make_site, runner

DOC = Path(__file__).resolve().parents[1] / "docs" / "provisioning.md"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield from make_site(tmp_path)


def technician_commands() -> list[list[str]]:
    """The ``sh`` block of the technician's section, one argv per line, comments dropped."""
    text = DOC.read_text("utf-8")
    section = text[text.index("## 技术员") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "docs/provisioning.md lost the technician's commands"
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    return [shlex.split(line) for line in lines if line]


def test_technician_steps_in_the_documented_order_work_first_time(site: Site) -> None:
    commands = technician_commands()
    assert [c[:3] for c in commands] == [
        ["shilian", "provision", "village"],
        ["shilian", "provision", "node"],
        ["shilian", "edge", "run"],
        ["shilian", "provision", "check"],
    ]
    documented_node = commands[1][commands[1].index("--node") + 1]
    token = cli(
        "token", "create", "--node", documented_node, "--ttl", "1h", "--db", str(site.central.db)
    ).strip()
    work = site.root / "node"
    values = {
        "/etc/shilian/node": str(work),
        "http://10.0.0.1:8080": site.central.api,
        "<T>": token,
    }

    def literal(argv: list[str]) -> list[str]:
        out = []
        for a in argv[2:]:
            for doc_value, here in values.items():
                a = a.replace(doc_value, here)
            out.append(a)
        return out

    # 1. search: the village of the documented node id is found
    assert documented_node[:12] in cli(*literal(commands[0]))
    # 2. provision node, with only this machine's paths added (no root-owned defaults here)
    t0 = time.monotonic()
    r = runner.invoke(
        app,
        [
            *literal(commands[1]),
            *("--outbox", str(work / "outbox.sqlite3"), "--socket", str(work / "edge.sock")),
            *("--metrics-port", str(free_port()), "--health-interval", "2"),
        ],
    )
    assert r.exit_code == 0, r.output
    said = "".join(r.output.split())
    # The agent is not running yet: the flow says what to do next instead of waiting a minute
    # for a node that cannot be online and uploading a failed report.
    assert "启动代理" in said and "starttheagent" in said
    assert time.monotonic() - t0 < 30
    assert not (work / "report.json").exists()
    state = json.loads((work / "state.json").read_text("utf-8"))
    assert "upload" not in state["done"] and "check" not in state["done"]
    # 3. the agent, as documented
    edge = Proc([sys.executable, "-m", "shilian", "edge", *literal(commands[2])], work / "edge.log")
    edge.start()
    try:
        # 4. the check passes
        r = runner.invoke(app, literal(commands[3]))
        assert r.exit_code == 0, r.output
        report = json.loads((work / "report.json").read_text("utf-8"))
        assert report["ok"]
    finally:
        edge.close()


def test_check_before_the_agent_runs_says_to_start_it(site: Site) -> None:
    node_id = "450102101201-z"
    token = cli("token", "create", "--node", node_id, "--ttl", "1h", "--db", str(site.central.db))
    work = site.root / "z"
    cli(
        "node",
        *("--node", node_id, "--central", site.central.api, "--token", token.strip()),
        *("--dir", str(work), "--outbox", str(work / "o.sqlite3"), "--socket", str(work / "s")),
        *("--metrics-port", str(free_port()), "--skip-check"),
    )
    t0 = time.monotonic()
    r = runner.invoke(app, ["check", "--dir", str(work)])
    assert r.exit_code == 1
    said = "".join(r.output.split())
    assert "启动代理" in said and "starttheagent" in said and "edgerun" in said
    assert time.monotonic() - t0 < 30  # not the 60 s step timeout
    assert not (work / "report.json").exists()  # not a commissioning result: nothing uploaded
