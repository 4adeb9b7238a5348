"""``shilian edge doctor`` against a real install: mosquitto with the generated TLS config, the
real agent process connected with its node certificate, real central (for the clock). All green
first; then one thing is broken at a time and the right line turns red."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.doctor import Doctor, Finding, exit_code
from firmware_bridge.simulator import simulate_board
from pki.ca import CertificateAuthority, key_pem, make_csr, new_key
from shilian.broker import Mosquitto
from tests.processes import Central, Proc
from tests.test_prov_broker import GeneratedBroker

NODE = "450102001001-dr"
DAY = 86400.0


@dataclass
class Install:
    conf: Path
    node: Path
    ca: CertificateAuthority
    broker: GeneratedBroker
    agent: Proc
    central: Central


def write_conf(d: Path, port: int, extra: str = "") -> Path:
    conf = d / "edge.toml"
    conf.write_text(
        f'node_id = "{NODE}"\nshutdown_flush_s = 1\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[broker.tls]\nca_file = "{d / "ca.pem"}"\ncert_file = "{d / "node.pem"}"\n'
        f'key_file = "{d / "node.key"}"\n'
        f'[outbox]\npath = "{d / "state" / "outbox.sqlite3"}"\n'
        f"[metrics]\nenabled = false\n"
        f'[local_socket]\npath = "{d / "edge.sock"}"\n' + extra,
        encoding="utf-8",
    )
    return conf


def enrol(ca: CertificateAuthority, d: Path, days: float = 365) -> None:
    key = new_key()
    (d / "node.key").write_bytes(key_pem(key))
    (d / "node.key").chmod(0o600)
    (d / "node.pem").write_bytes(ca.issue_node(make_csr(key, NODE), days=days).cert_pem)
    (d / "ca.pem").write_bytes(ca.ca_pem)


@pytest.fixture
def install(tmp_path: Path, broker: Mosquitto) -> Iterator[Install]:
    ca = CertificateAuthority.create(tmp_path / "ca")
    gb = GeneratedBroker(ca, tmp_path / "broker")
    gb.start()
    node = tmp_path / "node"
    (node / "state").mkdir(parents=True)
    enrol(ca, node)
    conf = write_conf(node, gb.port)
    agent = Proc(
        [sys.executable, "-m", "shilian", "edge", "run", "--config", str(conf)], node / "edge.log"
    )
    central = Central(tmp_path / "central", broker.port)  # only its /healthz Date is used
    try:
        agent.start()
        central.start()
        yield Install(conf, node, ca, gb, agent, central)
    finally:
        agent.close()
        central.close()
        gb.stop()


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


def diagnose(i: Install, **kw: object) -> dict[str, Finding]:
    return by_check(Doctor(i.conf, central=i.central.api, **kw).run())  # type: ignore[arg-type]


def wait_green(i: Install) -> list[Finding]:
    deadline = time.monotonic() + 60
    while True:
        findings = Doctor(i.conf, central=i.central.api).run()
        if exit_code(findings) == 0 or time.monotonic() > deadline:
            return findings
        time.sleep(0.2)


def test_green_then_each_fault_turns_its_line_red(install: Install) -> None:
    i = install
    findings = wait_green(i)  # the agent needs a moment to connect
    got = by_check(findings)
    assert exit_code(findings) == 0, [(f.check, f.level, f.en) for f in findings]
    assert {c for c, f in got.items() if f.level == "ok"} == {
        "config",
        "state_dir",
        "outbox",
        "certificate",
        "broker",
        "agent",
        "clock",
    }
    assert got["serial"].level == "skip"  # no board configured
    assert "TLSv1.2" in got["broker"].en and "connected, 0 pending" in got["agent"].en

    # Key readable by others.
    key = i.node / "node.key"
    key.chmod(0o644)
    got = diagnose(i)
    assert got["certificate"].level == "fail" and "chmod 600" in got["certificate"].zh
    key.chmod(0o600)

    # A certificate for another key (mismatch), then an expired one, then one near expiry.
    other = i.ca.issue_node(make_csr(new_key(), NODE)).cert_pem
    (i.node / "node.pem").write_bytes(other)
    got = diagnose(i)
    assert got["certificate"].level == "fail" and "不匹配" in got["certificate"].zh
    # The broker line turns red too: the handshake needs a certificate that matches the key.
    assert got["broker"].level == "fail"
    past = CertificateAuthority.load(i.ca.dir, clock=lambda: time.time() - 400 * DAY)
    k = new_key()
    key.write_bytes(key_pem(k))
    (i.node / "node.pem").write_bytes(past.issue_node(make_csr(k, NODE), days=30).cert_pem)
    got = diagnose(i)
    assert got["certificate"].level == "fail" and "expired" in got["certificate"].en
    (i.node / "node.pem").write_bytes(i.ca.issue_node(make_csr(k, NODE), days=10).cert_pem)
    findings = Doctor(i.conf, central=i.central.api).run()
    got = by_check(findings)
    assert got["certificate"].level == "warn" and "renew" in got["certificate"].en
    assert exit_code(findings) == 1
    enrol(i.ca, i.node)

    # A clock two minutes off central's (the doctor's clock is injected).
    got = diagnose(i, clock=lambda: time.time() + 120)
    assert got["clock"].level == "fail" and "NTP" in got["clock"].en

    # The agent stopped.
    i.agent.close()
    findings = Doctor(i.conf, central=i.central.api).run()
    got = by_check(findings)
    assert got["agent"].level == "fail" and "systemctl restart" in got["agent"].en
    assert exit_code(findings) == 2

    # The broker unreachable.
    i.broker.stop()
    got = diagnose(i)
    assert got["broker"].level == "fail" and "cannot connect" in got["broker"].en


def test_cli_table_exit_codes_and_languages(install: Install) -> None:
    runner = CliRunner()
    wait_green(install)
    r = runner.invoke(
        app, ["doctor", "--config", str(install.conf), "--central", install.central.api]
    )
    assert r.exit_code == 0, r.output
    assert "证书与密钥" in r.output and "代理连接" in r.output
    install.agent.close()
    r = runner.invoke(
        app,
        ["doctor", "--config", str(install.conf), "--central", install.central.api, "--lang", "en"],
    )
    assert r.exit_code == 2
    flat = " ".join(r.output.split())
    assert "agent" in flat and "no answer" in flat and "证书" not in flat


def test_bad_config_is_one_red_line(tmp_path: Path) -> None:
    conf = tmp_path / "edge.toml"
    conf.write_text('node_id = "x"\n[broker]\nport = 0\n')
    findings = Doctor(conf).run()
    assert [f.check for f in findings] == ["config"]
    assert findings[0].level == "fail" and "2 error(s)" in findings[0].en
    assert exit_code(findings) == 2


def test_a_config_error_is_in_one_language_per_table(tmp_path: Path) -> None:
    """The zh table says what the parser found in Chinese only (keys and "TOML" aside), the en
    table in English only."""
    import re

    conf = tmp_path / "edge.toml"
    for text in ('node_id = "x"\n[broker\nport = 1\n', '[broker]\ncert_fle = "x"\n'):
        conf.write_text(text)
        (f,) = Doctor(conf).run()
        assert f.level == "fail" and "check-config" in f.zh and "check-config" in f.en
        english = ("error", "Expected", "syntax", "unknown", "required", " / ")
        assert not any(w in f.zh for w in english), f.zh
        assert not re.search(r"[\u4e00-\u9fff]", f.en), f.en


def test_corrupt_outbox_and_missing_state_dir(tmp_path: Path) -> None:
    d = tmp_path / "node"
    (d / "state").mkdir(parents=True)
    conf = write_conf(d, 1)
    (d / "state" / "outbox.sqlite3").write_bytes(b"this is not a database" * 100)
    got = by_check(Doctor(conf).run())
    assert got["outbox"].level == "fail" and "back it up" in got["outbox"].en
    assert got["certificate"].level == "fail" and "missing" in got["certificate"].en
    (d / "state" / "outbox.sqlite3").unlink()
    (d / "state").rmdir()
    got = by_check(Doctor(conf).run())
    assert got["state_dir"].level == "fail" and "install.sh" in got["state_dir"].en


async def test_serial_port_of_the_board(tmp_path: Path) -> None:
    d = tmp_path / "node"
    (d / "state").mkdir(parents=True)
    async with simulate_board() as sim:
        conf = write_conf(d, 1, f'[alarm_board]\ndevice = "{sim.slave_path}"\n')
        got = by_check(Doctor(conf).run())
        assert got["serial"].level == "ok", got["serial"]
    conf = write_conf(d, 1, '[alarm_board]\ndevice = "/dev/ttyUSB-none"\n')
    got = by_check(Doctor(conf).run())
    assert got["serial"].level == "fail" and "discover" in got["serial"].en
    regular = tmp_path / "file"
    regular.write_text("")
    conf = write_conf(d, 1, f'[alarm_board]\ndevice = "{regular}"\n')
    assert by_check(Doctor(conf).run())["serial"].level == "fail"


async def test_old_pending_events_and_dead_letters_are_warnings(tmp_path: Path) -> None:
    from edge.outbox import Outbox

    d = tmp_path / "node"
    (d / "state").mkdir(parents=True)
    conf = write_conf(d, 1)
    t0 = time.time()
    ob = await Outbox.open(
        d / "state" / "outbox.sqlite3", node_id=NODE, boot_id="b" * 32, clock=lambda: t0
    )
    async with ob.running():
        await ob.accept("alarm", "panic")
    await ob.close()
    # An hour later the event is still there: the agent is not getting it out.
    late = by_check(Doctor(conf, clock=lambda: t0 + 3600).run())["outbox"]
    assert late.level == "warn" and "1 pending, oldest 3600 s" in late.en
    assert by_check(Doctor(conf, clock=lambda: t0 + 5).run())["outbox"].level == "ok"
    ob = await Outbox.open(
        d / "state" / "outbox.sqlite3", node_id=NODE, boot_id="c" * 32, clock=lambda: t0
    )
    async with ob.running():
        await ob.dead_letter((await ob.peek(1))[0].id, 135)
    await ob.close()
    dead = by_check(Doctor(conf, clock=lambda: t0 + 5).run())["outbox"]
    assert dead.level == "warn" and "1 dead" in dead.en and "broker refused" in dead.en
