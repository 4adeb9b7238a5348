"""docs/provisioning.md's technician steps, followed in the order written: each works the first
time, and nothing waits for or reports a failure the technician could not have avoided."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
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


def _admin_section() -> tuple[list[list[str]], str, str]:
    """The administrator's ``sh`` block (one argv per command, continuations joined), its
    central.toml block, and the per-visit token command, as docs/provisioning.md has them."""
    text = DOC.read_text("utf-8")
    section = text[text.index("## 管理员") : text.index("## 技术员")]
    sh = re.search(r"```sh\n(.*?)```", section, re.S)
    toml = re.search(r"```toml\n(.*?)```", section, re.S)
    token = re.search(r"Per visit: `(shilian provision token create [^`]*)`", section)
    assert sh and toml and token, "docs/provisioning.md lost the administrator's steps"
    joined = sh.group(1).replace("\\\n", " ")
    lines = [line.split("  #")[0].strip() for line in joined.splitlines()]
    return [shlex.split(line) for line in lines if line], toml.group(1), token.group(1)


def test_administrator_steps_as_written_then_a_node_enrols_and_passes(tmp_path: Path) -> None:
    """The administrator's commands and central.toml exactly as written (only the paths, the
    broker's names and its port made this machine's), then the per-visit token, and a node
    enrolled against them passes its commissioning check."""
    commands, toml, token_line = _admin_section()
    port = free_port()
    # The broker drops to the user ``mosquitto`` (as the generated config says) before it reads
    # its ACL: its files live where that user can reach them, as /etc does (pytest's own
    # temporary directories are the owner's only).
    etc = Path(tempfile.mkdtemp(prefix="shilian-doc-etc-"))
    etc.chmod(0o755)
    values = {
        "/etc/shilian/ca": str(etc / "ca"),
        "/etc/shilian/central": str(etc / "central-certs"),
        "/etc/mosquitto/shilian": str(etc / "broker"),
        "mqtt.example.gov.cn": "localhost",
        "10.0.0.5": "127.0.0.1",
        "8883": str(port),
    }

    def here(s: str) -> str:
        for doc_value, value in values.items():
            s = s.replace(doc_value, value)
        return s

    assert commands[-1] == ["mosquitto", "-c", "/etc/mosquitto/shilian/mosquitto.conf"]
    broker = Proc([here(a) for a in commands[-1]], tmp_path / "mosquitto.log")
    central_dir = tmp_path / "central"
    central_dir.mkdir()
    http_port = free_port()
    db = central_dir / "central.db"
    conf = central_dir / "central.toml"
    central = Proc(
        [sys.executable, "-m", "shilian", "central", "run", "--config", str(conf)],
        central_dir / "central.log",
    )
    work = tmp_path / "node"
    edge = Proc(
        [sys.executable, "-m", "shilian", "edge", "run", "--config", str(work / "edge.toml")],
        work.parent / "edge.log",
    )
    try:
        for argv in commands[:-1]:
            assert argv[:2] == ["shilian", "provision"], argv
            r = runner.invoke(app, [here(a) for a in argv[2:]])
            assert r.exit_code == 0, (argv, r.output)
        broker.start()
        broker.ready(lambda: _listening(port), what="the broker as documented")
        # central.toml "gains" the documented block: under this machine's store and HTTP port.
        conf.write_text(
            f'[store]\npath = "{db}"\n[registry]\ndefault_scope = "4501"\n'
            f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n' + here(toml),
            encoding="utf-8",
        )
        central.start()
        api = f"http://127.0.0.1:{http_port}"
        central.ready(lambda: urllib.request.urlopen(f"{api}/healthz", timeout=2), what="central")
        token_argv = shlex.split(token_line.replace("central.db", str(db)))
        node_id = token_argv[token_argv.index("--node") + 1]
        token = cli(*token_argv[2:]).strip()
        r = runner.invoke(
            app,
            [
                *("node", "--node", node_id, "--central", api, "--token", token),
                *("--dir", str(work), "--skip-check"),
                *("--outbox", str(work / "outbox.sqlite3"), "--socket", str(work / "edge.sock")),
                *("--metrics-port", str(free_port()), "--health-interval", "2"),
            ],
        )
        assert r.exit_code == 0, r.output
        edge.start()
        r = runner.invoke(app, ["check", "--dir", str(work)])
        assert r.exit_code == 0, r.output
        assert json.loads((work / "report.json").read_text("utf-8"))["ok"]
    finally:
        edge.close()
        central.close()
        broker.close()
        shutil.rmtree(etc)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
