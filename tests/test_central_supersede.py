"""A renewal supersedes the old certificate only once the node uses the new one: an answer lost
on the way (link cut, central crash) must leave the node its old pair to connect and ask again
(docs/faults.md, renewal answer lost)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry

import wire
from central.config import CaConfig
from central.link import Inbound
from central.renewal import RenewalService
from pki.ca import CertificateAuthority, key_pem, make_csr, new_key
from wire.messages import CertRequest, CertResponse

NODE = "450102001001-a"
BOOT = uuid.uuid4().hex


def health(not_after: float | None) -> Inbound:
    msg = wire.Health(
        node=NODE, boot_id=BOOT, ts=time.time(), interval_s=30.0, uptime_s=5,
        sw_version="0.1.0", cpu_pct=1, mem_used_pct=2, disk_used_pct=3, outbox_depth=0,
        cert_not_after=not_after,
    )  # fmt: skip
    return Inbound(wire.Topics(NODE).health, wire.encode(msg), False, None)


def test_old_certificate_stays_valid_until_the_node_reports_the_new_one(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca")
    key = new_key()
    old = ca.issue_node(make_csr(key, NODE), days=5)
    (tmp_path / "node.key").write_bytes(key_pem(key))
    answers: list[bytes] = []
    svc = RenewalService(
        CaConfig(dir=tmp_path / "ca", broker_host="127.0.0.1"),
        lambda topic, payload, corr: answers.append(payload),
        CollectorRegistry(),
    )
    req = CertRequest(
        node=NODE, ts=time.time(), csr_pem=make_csr(new_key(), NODE).decode(),
        serial=f"{old.serial:x}",
    )  # fmt: skip
    cert_req = Inbound(wire.Topics(NODE).cert_req, wire.encode(req), False, b"1")

    async def scenario() -> None:
        stop = asyncio.Event()
        runner = asyncio.create_task(svc.run(stop))
        assert svc.take([cert_req]) == []
        for _ in range(200):
            if answers:
                break
            await asyncio.sleep(0.02)
        assert answers, "no renewal answer"
        res = wire.decode(CertResponse, answers[0], node_id=NODE)
        assert res.ok and res.not_after is not None
        # The answer may never have reached the node: its health still names the old pair.
        rest = svc.take([health(old.not_after.timestamp())])
        assert len(rest) == 1  # health goes on to ingest
        await asyncio.sleep(0.2)
        assert old.serial not in CertificateAuthority.load(tmp_path / "ca").revoked()
        # The node reports the new certificate: now the old one is revoked.
        svc.take([health(res.not_after)])
        for _ in range(200):
            if old.serial in CertificateAuthority.load(tmp_path / "ca").revoked():
                break
            await asyncio.sleep(0.02)
        stop.set()
        await runner

    asyncio.run(scenario())
    revoked = CertificateAuthority.load(tmp_path / "ca").revoked()
    assert old.serial in revoked
    assert int(wire.decode(CertResponse, answers[0], node_id=NODE).serial or "0", 16) not in revoked
