"""Certificate renewal over MQTT against real peers: mosquitto running the generated TLS config,
central (subprocess) holding the CA, the edge agent as a subprocess.

A node whose certificate expires soon renews and reconnects with the new one (new serial, a new
birth at central, no event lost across the reconnect); a revoked node, a CSR for another node
and malformed requests are refused with clear codes, counted, and central keeps running.
"""

from __future__ import annotations

import json
import ssl
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from central.revocations import RECHECK_S
from edge.renew import cert_info
from pki.ca import CertificateAuthority, key_pem, make_csr, new_key
from shilian.broker import free_port
from tests.processes import Proc, wait_for
from tests.test_central_commissioning import get_json
from tests.test_prov_flow import Site, cli, make_site

A, B = "450102101201-a", "450102101201-b"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield from make_site(tmp_path)


def enrol_directly(site: Site, node_id: str, days: float) -> Path:
    """A node directory with a key made here and a certificate from the CA valid ``days``
    (as if enrolled ``365 - days`` days ago)."""
    work = site.root / node_id
    work.mkdir()
    ca = CertificateAuthority.load(site.root / "ca")
    key = new_key()
    (work / "node.key").write_bytes(key_pem(key))
    (work / "node.pem").write_bytes(ca.issue_node(make_csr(key, node_id), days=days).cert_pem)
    (work / "ca.pem").write_bytes(ca.ca_pem)
    return work


def metric(site: Site, name: str, outcome: str) -> float:
    return metric_labelled(site, name, f'outcome="{outcome}"')


def metric_labelled(site: Site, name: str, labels: str) -> float:
    with urllib.request.urlopen(site.central.api + "/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}}"):
            return float(line.split()[-1])
    return 0.0


def test_expiring_certificate_is_renewed_and_used(site: Site) -> None:
    work = enrol_directly(site, A, days=5)
    old = cert_info(work / "node.pem")
    sock = work / "edge.sock"
    (work / "edge.toml").write_text(
        f'node_id = "{A}"\nhealth_interval_s = 2\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {site.broker.port}\n'
        f'[broker.tls]\nca_file = "{work / "ca.pem"}"\ncert_file = "{work / "node.pem"}"\n'
        f'key_file = "{work / "node.key"}"\nrenew_before_days = 30\n'
        f'[outbox]\npath = "{work / "outbox.sqlite3"}"\n'
        f"[metrics]\nport = {free_port()}\n"
        f'[local_socket]\npath = "{sock}"\n',
        encoding="utf-8",
    )
    edge = Proc(
        [sys.executable, "-m", "shilian", "edge", "run", "--config", str(work / "edge.toml")],
        work / "edge.log",
    )
    # Events are emitted all along: before, during and after the switch of certificate.
    emitted: list[int] = []
    stop = threading.Event()

    def emit_all_along() -> None:
        i = 0
        while not stop.is_set() or i < 20:
            try:
                reply = local_request(sock, {"op": "emit", "priority": "info", "kind": "t"})
            except OSError:
                time.sleep(0.05)
                continue
            if reply.get("ok"):
                emitted.append(int(reply["seq"]))
                i += 1
            time.sleep(0.02)

    edge.start()
    emitter = threading.Thread(target=emit_all_along)
    try:
        edge.ready(lambda: sock.exists(), "edge socket")
        emitter.start()
        new = wait_for(
            lambda: c if (c := cert_info(work / "node.pem")).serial != old.serial else None,
            what="certificate replaced",
        )
        assert new.not_after - time.time() > 300 * 86400  # central's cert_days (365)
        assert not (work / "node.key.new").exists() and not (work / "node.pem.new").exists()
        # central saw the birth of the connection made with the new certificate
        node = wait_for(
            lambda: (
                (n := get_json(site, f"/api/v1/nodes/{A}"))["state"] == "online"
                and n["birth_seq"] >= 2
                and n
            ),
            what="birth with the new certificate",
        )
        assert node["birth_seq"] >= 2
        assert metric(site, "shilian_central_renewals_total", "issued") == 1
        # once the node's health reports the new certificate, the replaced one is revoked (in
        # the CRL): a copy of the old pair is useless
        wait_for(
            lambda: int(old.serial, 16) in CertificateAuthority.load(site.root / "ca").revoked(),
            what="superseded certificate revoked",
        )
        assert int(new.serial, 16) not in CertificateAuthority.load(site.root / "ca").revoked()
        assert metric(site, "shilian_central_renewals_total", "superseded_revoked") == 1
        stop.set()
        emitter.join(60)
        # nothing lost across the reconnect: every accepted event is at central, once
        want = sorted(emitted)
        assert want == list(range(1, len(want) + 1)) and len(want) >= 20

        def all_arrived() -> bool:
            got = [
                e["seq"]
                for e in get_json(site, f"/api/v1/events?node={A}&limit=1000")["events"]
                if e["kind"] == "t"
            ]
            return sorted(got) == want

        wait_for(all_arrived, what="every event at central")
        # the health report carries the new expiry
        wait_for(
            lambda: (
                abs(
                    get_json(site, f"/api/v1/nodes/{A}")["health"][0]["cert_not_after"]
                    - new.not_after
                )
                < 2
            ),
            what="health with cert_not_after",
        )
        log = (work / "edge.log").read_text(errors="replace")
        assert "certificate renewed" in log
    finally:
        stop.set()
        if emitter.is_alive():
            emitter.join(60)
        edge.close()


def local_request(sock: Path, req: dict[str, Any]) -> dict[str, Any]:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock))
        s.sendall(json.dumps(req).encode() + b"\n")
        reply: dict[str, Any] = json.loads(s.makefile("rb").readline())
        return reply


class NodeClient:
    """A node's own MQTT 5 client (its certificate) asking for renewals by hand."""

    def __init__(self, port: int, work: Path, node_id: str) -> None:
        self.node_id = node_id
        self.c = paho.Client(CallbackAPIVersion.VERSION2, node_id, protocol=paho.MQTTv5)
        ctx = ssl.create_default_context(cafile=str(work / "ca.pem"))
        ctx.load_cert_chain(str(work / "node.pem"), str(work / "node.key"))
        self.c.tls_set_context(ctx)
        self.answers: dict[bytes, dict[str, Any]] = {}
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        res = f"shilian/v1/{node_id}/cert/res"
        self.c.subscribe(res, qos=1)
        time.sleep(0.3)  # SUBACK before the first request (paho runs it on its thread)

    def _on_message(self, c: Any, u: Any, m: Any) -> None:
        corr = getattr(m.properties, "CorrelationData", None)
        self.answers[bytes(corr or b"")] = json.loads(m.payload)

    def ask(self, payload: bytes, corr: bytes) -> dict[str, Any]:
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = corr
        props.ResponseTopic = f"shilian/v1/{self.node_id}/cert/res"
        self.c.publish(f"shilian/v1/{self.node_id}/cert/req", payload, qos=1, properties=props)
        return wait_for(lambda: self.answers.get(corr), what=f"answer {corr!r}")

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def request(node_id: str, csr: bytes | str) -> bytes:
    csr_pem = csr.decode() if isinstance(csr, bytes) else csr
    return json.dumps({"v": 1, "node": node_id, "ts": time.time(), "csr_pem": csr_pem}).encode()


def test_refusals_are_clear_counted_and_central_keeps_running(site: Site) -> None:
    work = enrol_directly(site, A, days=5)
    node = NodeClient(site.broker.port, work, A)
    try:
        bad = node.ask(request(A, "not a CSR"), b"1")
        assert not bad["ok"] and bad["error"]["code"] == "csr_malformed"
        assert "PEM" in bad["error"]["message"] and "证书请求" in bad["error"]["message"]
        junk = node.ask(b"\xff{not json", b"2")
        assert not junk["ok"] and junk["error"]["code"] == "bad_request"
        other = node.ask(request(A, make_csr(new_key(), B)), b"3")
        assert not other["ok"] and other["error"]["code"] == "csr_other_node"
        assert B in other["error"]["message"]
        # a good request works (central survived the bad ones) ...
        good = node.ask(request(A, make_csr(new_key(), A)), b"4")
        assert good["ok"] and good["cert_pem"].startswith("-----BEGIN CERTIFICATE-----")
        # ... until the node is revoked (its open session survives: mosquitto checks the CRL at
        # the handshake only, docs/provisioning.md), then renewal is refused
        cli("revoke", "--node", A, "--ca-dir", str(site.root / "ca"))
        revoked = node.ask(request(A, make_csr(new_key(), A)), b"5")
        assert not revoked["ok"] and revoked["error"]["code"] == "revoked"
        assert "吊销" in revoked["error"]["message"]
        # central refuses the revoked node's other traffic within RECHECK_S of the revoke,
        # without a restart: counted, never stored
        time.sleep(RECHECK_S)
        event = {"v": 1, "node": A, "boot_id": "0" * 32, "seq": 1, "ts": time.time()}
        event |= {"priority": "alarm", "kind": "intrusion"}
        node.c.publish(f"shilian/v1/{A}/event", json.dumps(event).encode(), qos=1)
        wait_for(
            lambda: (
                metric_labelled(site, "shilian_central_revoked_messages_total", 'kind="event"') == 1
            ),
            what="revoked node's event refused",
        )
        assert get_json(site, f"/api/v1/events?node={A}")["events"] == []
    finally:
        node.close()
    for outcome in ("csr_malformed", "bad_request", "csr_other_node", "revoked", "issued"):
        assert metric(site, "shilian_central_renewals_total", outcome) == 1, outcome
    assert site.central.get("/healthz")
    assert site.central.p is not None and site.central.p.poll() is None
