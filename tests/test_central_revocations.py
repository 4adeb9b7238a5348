"""Central refuses the messages of a revoked node at once, without a restart: counted, not
stored; a node whose certificate was only superseded by a renewal is not refused."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from central.audit import AuditFilter, list_audit
from central.db import Target, open_db
from central.link import Inbound
from central.revocations import RECHECK_S, Revocations
from pki.ca import CertificateAuthority, make_csr, new_key
from shilian.cli import app

A, B = "450102001001-a", "450102001002-b"


def msg(node: str, kind: str) -> Inbound:
    return Inbound(f"shilian/v1/{node}/{kind}", b"{}", False, None)


def test_a_revoked_node_is_refused_from_the_next_check_on(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca")
    for node in (A, B):
        ca.issue_node(make_csr(new_key(), node))
    registry = CollectorRegistry()
    now = [1000.0]
    rev = Revocations(ca.dir, registry, clock=lambda: now[0])
    batch = [msg(A, "event"), msg(B, "event"), msg(A, "state"), msg(A, "device/cam1")]
    assert rev.take(batch) == batch
    # the administrator's command, as documented: central is not restarted
    r = CliRunner().invoke(app, ["provision", "revoke", "--node", A, "--ca-dir", str(ca.dir)])
    assert r.exit_code == 0, r.output
    now[0] += RECHECK_S
    assert rev.take(batch) == [msg(B, "event")]
    assert rev.take([msg(A, "cmd/res"), msg(A, "cert/req")]) == []

    def refused(kind: str) -> float:
        v = registry.get_sample_value("shilian_central_revoked_messages_total", {"kind": kind})
        return v or 0.0

    assert (refused("event"), refused("state"), refused("device")) == (1, 1, 1)
    assert (refused("cmd/res"), refused("cert/req")) == (1, 1)
    # re-enrolled later (a new certificate after the revocation): accepted again
    ca.issue_node(make_csr(new_key(), A))
    now[0] += RECHECK_S
    assert rev.take(batch) == batch


def test_a_renewed_node_is_not_refused(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca")
    ca.issue_node(make_csr(new_key(), A))
    new = ca.issue_node(make_csr(new_key(), A))
    assert len(ca.revoke_superseded(A, new.serial)) == 1
    rev = Revocations(ca.dir, CollectorRegistry(), clock=lambda: 0.0)
    assert rev.take([msg(A, "event")]) == [msg(A, "event")]


def test_the_revocation_is_audited_in_the_database_central_toml_names(
    tmp_path: Path, db_target: Target
) -> None:
    """``--config central.toml`` reaches central's database whichever backend ``[store]``
    names, as the other commands run on central's box do."""
    ca = CertificateAuthority.create(tmp_path / "ca")
    ca.issue_node(make_csr(new_key(), A))
    cfg = tmp_path / "central.toml"
    store = f'url = "{db_target}"' if isinstance(db_target, str) else f'path = "{db_target}"'
    cfg.write_text(f"[store]\n{store}\n")
    args = ["provision", "revoke", "--node", A, "--ca-dir", str(ca.dir), "--config", str(cfg)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    db = open_db(db_target)
    try:
        total, rows = list_audit(db, AuditFilter(action="revoke"), 10, 0)
    finally:
        db.close()
    assert total == 1
    assert (rows[0]["target"], rows[0]["outcome"]) == (A, "revoked")
