"""The whole provisioning flow against real peers: a mosquitto running the generated TLS
config, central (subprocess) holding the CA, the technician CLI, the edge agent over TLS.

search village → keygen → token → enrol → write-config → run the agent → check green →
node counted in coverage.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioning.cli import app
from shilian.broker import Mosquitto, free_port
from tests.processes import Central, Proc, wait_for

runner = CliRunner()


def cli(*args: str) -> str:
    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r.stdout


class ConfBroker(Mosquitto):
    """mosquitto with the configuration written by ``shilian provision broker-config``."""

    def __init__(self, out: Path, port: int) -> None:
        super().__init__(workdir=out, port=port)

    def _write_conf(self) -> Path:
        return self.workdir / "mosquitto.conf"


class TlsCentral(Central):
    """``shilian central run`` connected over TLS as shilian-central, holding the CA."""

    def __init__(self, workdir: Path, broker_port: int, ca_dir: Path, certs: Path) -> None:
        super().__init__(workdir, broker_port)
        self.db = workdir / "central.sqlite3"
        (workdir / "central.toml").write_text(
            f'[store]\npath = "{self.db}"\n'
            f'[registry]\ndefault_scope = "4501"\n'
            f'[broker]\nhost = "127.0.0.1"\nport = {broker_port}\n'
            f'[broker.tls]\nca_file = "{certs / "ca.pem"}"\n'
            f'cert_file = "{certs / "shilian-central.pem"}"\n'
            f'key_file = "{certs / "shilian-central.key"}"\n'
            f'[http]\nhost = "127.0.0.1"\nport = {self.http_port}\n'
            f'[ca]\ndir = "{ca_dir}"\nbroker_host = "127.0.0.1"\nbroker_port = {broker_port}\n',
            encoding="utf-8",
        )


@dataclass
class Site:
    broker: ConfBroker
    central: TlsCentral
    root: Path


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield from make_site(tmp_path)


def make_site(tmp_path: Path) -> Generator[Site, None, None]:
    """The administrator's part: CA, central's certificate, broker config, broker, central."""
    ca_dir, certs, out = tmp_path / "ca", tmp_path / "central-certs", tmp_path / "broker"
    cli("ca", "init", "--ca-dir", str(ca_dir))
    cli("ca", "client-cert", "--ca-dir", str(ca_dir), "--out", str(certs))
    port = free_port()
    cli(
        "broker-config",
        *("--ca-dir", str(ca_dir), "--out", str(out), "--port", str(port)),
        *("--bind", "127.0.0.1", "--user", "root", "--log-file"),
    )
    broker = ConfBroker(out, port)
    broker.start()
    central = TlsCentral(tmp_path / "central", port, ca_dir, certs)
    try:
        central.start()
        yield Site(broker, central, tmp_path)
    finally:
        central.close()
        broker.stop()


def test_second_use_of_a_token_is_refused_clearly(site: Site) -> None:
    node_id = "450102101201-c"
    token = cli("token", "create", "--node", node_id, "--db", str(site.central.db)).strip()
    codes = []
    for name in ("first", "second"):
        work = site.root / name
        cli("keygen", "--node", node_id, "--dir", str(work))
        r = runner.invoke(
            app, ["enrol", "--central", site.central.api, "--token", token, "--dir", str(work)]
        )
        codes.append(r.exit_code)
    assert codes == [0, 1]
    said = "".join(r.output.split())  # rich wraps long lines, Chinese anywhere
    assert "409" in said and "只能用一次" in said and "worksonce" in said
    # Who issued the token is in central's audit log (admins read it over the API).
    rows = site.central.get("/api/v1/audit?action=token_create")["entries"]
    assert [(r["target"], r["outcome"], r["address"]) for r in rows] == [
        (node_id, "created", "local")
    ]
    assert rows[0]["user"].startswith("cli:")


def provision_and_run(site: Site, query: str, name: str) -> tuple[str, Path, Proc]:
    """The technician's part; returns the node id, its work directory and the running agent."""
    out = cli("village", "search", *query.split(), "--limit", "1")
    code = next(w for w in out.split() if w.isdigit() and len(w) == 12)
    node_id = f"{code}-{name}"
    token = cli("token", "create", "--node", node_id, "--ttl", "1h", "--db", str(site.central.db))
    work = site.root / node_id
    cli(
        "node",
        *("--node", node_id, "--central", site.central.api, "--token", token.strip()),
        *("--dir", str(work), "--outbox", str(work / "outbox.sqlite3")),
        *("--socket", str(work / "edge.sock"), "--metrics-port", str(free_port())),
        *("--health-interval", "2", "--skip-check"),
    )
    edge = Proc(
        [sys.executable, "-m", "shilian", "edge", "run", "--config", str(work / "edge.toml")],
        work / "edge.log",
    )
    edge.start()
    return node_id, work, edge


def test_full_provisioning_flow(site: Site) -> None:
    node_id, work, edge = provision_and_run(site, "兴宁 三塘", "a")
    try:
        assert node_id.startswith("450102101")  # 兴宁区 › 三塘镇
        cli("check", "--dir", str(work), "--timeout", "60")
        report = json.loads((work / "report.json").read_text("utf-8"))
        assert report["ok"] and [s["step"] for s in report["steps"]] == [
            "tls",
            "birth",
            "health",
            "clock",
        ]
        # the report is stored at central with the node, and printable there and locally
        from tests.test_central_commissioning import fetch, get_json

        stored = get_json(site, f"/api/v1/nodes/{node_id}/commissioning")["latest"]
        assert stored["ok"] and stored["started_at"] == report["started_at"]
        assert "三塘镇" in (work / "report.html").read_text("utf-8")
        status, page = fetch(site, f"/dashboard/commissioning/{node_id}")
        assert status == 200 and "通过" in page and node_id in page
        cov = get_json(site, f"/api/v1/coverage/{node_id[:12]}")["unit"]
        assert (cov["provisioned"], cov["covered"]) == (1, 1)
        county = get_json(site, "/api/v1/coverage/450102")["unit"]
        assert county["covered"] == 1
        # Re-running the flow resumes: every step is done, nothing is redone, the check passes.
        state = json.loads((work / "state.json").read_text("utf-8"))
        assert set(state["done"]) == {"keygen", "enrol", "config", "check", "upload"}
        key_before = (work / "node.key").read_bytes()
        cli("node", "--node", node_id, "--central", site.central.api, "--dir", str(work))
        assert (work / "node.key").read_bytes() == key_before
    finally:
        edge.close()


def test_revoked_node_cannot_reconnect(site: Site) -> None:
    node_id, work, edge = provision_and_run(site, "450102101201", "b")
    try:
        from tests.test_central_commissioning import fetch

        def online() -> bool:
            status, text = fetch(site, f"/api/v1/nodes/{node_id}")
            return status == 200 and json.loads(text)["state"] == "online"

        wait_for(online, what="online")
        out = cli("revoke", "--node", node_id, "--ca-dir", str(site.root / "ca"))
        assert "SIGHUP" in out
        assert site.broker.proc is not None
        site.broker.proc.send_signal(signal.SIGHUP)  # reread the CRL (asynchronously)

        def refused() -> bool:
            r = runner.invoke(app, ["check", "--dir", str(work), "--timeout", "0"])
            return r.exit_code == 1

        wait_for(refused, what="revoked certificate refused")
        report = json.loads((work / "report.json").read_text("utf-8"))
        assert report["steps"][0]["step"] == "tls" and not report["steps"][0]["ok"]
    finally:
        edge.close()
