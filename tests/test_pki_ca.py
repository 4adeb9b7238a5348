"""The enrolment CA: issuing, CSR validation (fuzzed), revocation list, file modes."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st

from pki.ca import (
    CaError,
    CertificateAuthority,
    CsrError,
    make_csr,
    new_key,
    parse_csr,
)

NODE = "450102001001-a"


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path / "ca")


def _csr(key: object, cn: str) -> bytes:
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def test_create_writes_key_0600_and_empty_crl(ca: CertificateAuthority) -> None:
    assert stat.S_IMODE((ca.dir / "ca.key").stat().st_mode) == 0o600
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    assert len(list(crl)) == 0
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    with pytest.raises(CaError, match="already exists"):
        CertificateAuthority.create(ca.dir)
    assert CertificateAuthority.load(ca.dir).ca_pem == ca.ca_pem


def test_issue_node_certificate(ca: CertificateAuthority) -> None:
    issued = ca.issue_node(make_csr(new_key(), NODE))
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == NODE
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert days <= 366
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(ca.cert)
    with pytest.raises(CaError):
        ca.issue_node(make_csr(new_key(), NODE), days=400)


def test_csr_errors_are_typed_and_explained() -> None:
    with pytest.raises(CsrError) as e:
        parse_csr(_csr(rsa.generate_private_key(65537, 2048), NODE))
    assert e.value.code == "csr_key_type" and "EC P-256" in str(e.value)
    with pytest.raises(CsrError) as e:
        parse_csr(_csr(ec.generate_private_key(ec.SECP384R1()), NODE))
    assert e.value.code == "csr_key_type"
    with pytest.raises(CsrError) as e:
        parse_csr(_csr(new_key(), "not-a-node"))
    assert e.value.code == "csr_cn" and "节点编号" in str(e.value)
    with pytest.raises(CsrError) as e:
        parse_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
    assert e.value.code == "csr_malformed"
    with pytest.raises(CsrError) as e:
        parse_csr(b"x" * 100_000)
    assert e.value.code == "csr_too_large"


def test_tampered_csr_has_a_bad_signature() -> None:
    key = new_key()
    good = x509.load_pem_x509_csr(make_csr(key, NODE))
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    # Change the CN's last character: the signature no longer matches the content.
    i = der.rfind(NODE.encode())
    der[i + len(NODE) - 1] = ord("b")
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrError) as e:
        parse_csr(tampered)
    assert e.value.code == "csr_signature"


@given(st.binary(max_size=2000))
def test_any_bytes_give_a_csr_or_a_typed_error(data: bytes) -> None:
    try:
        parse_csr(data)
    except CsrError as e:
        assert e.code.startswith("csr_") and " / " in str(e)


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=400))
def test_corrupted_pem_bodies_give_typed_errors(junk: bytes, at: int) -> None:
    pem = bytearray(make_csr(_KEY, NODE))
    at = 40 + at % (len(pem) - 80)  # inside the base64 body
    pem[at : at + len(junk)] = junk
    try:
        info = parse_csr(bytes(pem))
    except CsrError:
        return
    assert info.node_id  # a corruption that still parses must still be a valid, signed CSR


_KEY = new_key()


def test_revoke_updates_crl(ca: CertificateAuthority) -> None:
    a = ca.issue_node(make_csr(new_key(), NODE))
    ca.issue_node(make_csr(new_key(), "450102001001-b"))
    assert ca.revoke(NODE) == [a.serial]
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    assert [r.serial_number for r in crl] == [a.serial]
    assert ca.revoke(NODE) == []  # idempotent
    with pytest.raises(CaError, match="never issued"):
        ca.revoke("450102001001-zz")


def test_server_and_client_certificates(ca: CertificateAuthority) -> None:
    _, cert_pem = ca.issue_server(["broker.example", "10.0.0.5"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.0.0.5"}
    _, c = ca.issue_client("shilian-central")
    assert b"BEGIN CERTIFICATE" in c
    with pytest.raises(CaError):
        ca.issue_client(NODE)  # nodes make their own keys


def test_expired_certificates_can_be_made_with_an_injected_clock(tmp_path: Path) -> None:
    past = time.time() - 10 * 86400
    ca = CertificateAuthority.create(tmp_path / "ca2", clock=lambda: past)
    cert = x509.load_pem_x509_certificate(ca.issue_node(make_csr(new_key(), NODE), 1).cert_pem)
    assert cert.not_valid_after_utc.timestamp() < time.time()
