"""The enrolment certificate authority (cryptography): one EC P-256 key that signs node, central,
operator and broker certificates and the revocation list (CRL) the broker reads.

Files in the CA directory (the key 0600, the rest 0644 so the broker can read the CRL):

    ca.key       the CA private key (never leaves central / the offline CA machine)
    ca.pem       the CA certificate (given to every node and to the broker)
    crl.pem      the CRL, written at creation (empty) so the broker's ``crlfile`` exists from
                 day one: mosquitto ignores a ``crlfile`` line added later until a restart
    issued.tsv   serial, CN, not-after of every certificate issued (revoke --node looks here)
    revoked.tsv  serial, revocation time

Every file is replaced atomically (write, fsync, rename), so a power cut leaves the old or the
new version. Errors about a CSR are :class:`CsrError` (the requester was wrong); they carry a
stable code and a zh-CN / English message.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wire import valid_node_id

#: Node certificates live at most a year: a stolen box stops working by itself.
MAX_NODE_CERT_DAYS = 365
#: The CA itself: ten years, longer than any box's service life.
CA_DAYS = 3650
#: Broker and central certificates: two years; they are replaced on the operator's schedule.
SERVICE_CERT_DAYS = 730
#: CRL validity. OpenSSL refuses every client once the CRL's nextUpdate has passed, so an
#: unattended broker must never see it expire: as long as the CA.
CRL_DAYS = CA_DAYS
#: Largest CSR accepted: a P-256 CSR is ~500 bytes; checked before parsing.
MAX_CSR_BYTES = 16 * 1024
#: Backdating of notBefore, for clocks a little behind ours.
CLOCK_SLACK = dt.timedelta(minutes=5)
#: CN of central's MQTT client certificate (its ACL reads everything, writes commands).
CENTRAL_CN = "shilian-central"
#: CN of the certificate of central's alarm session (its ACL reads alarm-priority events only).
#: A certificate of its own: the broker makes the CN the client id, so two sessions under one
#: certificate would keep taking each other over.
CENTRAL_ALARMS_CN = "shilian-central-alarms"

CA_KEY, CA_CERT, CRL, ISSUED, REVOKED = "ca.key", "ca.pem", "crl.pem", "issued.tsv", "revoked.tsv"


class CaError(Exception):
    """A provisioning error with a stable ``code`` and a Chinese-first message."""

    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(f"{zh} / {en}")
        self.code = code
        self.zh = zh
        self.en = en


class CsrError(CaError):
    """The certificate signing request is unusable (the requester's fault)."""


@dataclass(frozen=True, slots=True)
class CsrInfo:
    node_id: str
    public_key: ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class Issued:
    node_id: str
    serial: int
    cert_pem: bytes
    not_after: dt.datetime


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # umask must not widen or narrow what we ask for
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_csr(key: ec.EllipticCurvePrivateKey, node_id: str) -> bytes:
    """A PEM CSR whose subject CN is ``node_id`` (made on the box; the key stays there)."""
    if not valid_node_id(node_id):
        raise CsrError(
            "bad_node_id",
            f"节点编号无效：{node_id[:60]!r}（应为 12 位村代码-名称，如 450102001001-a）",
            f"not a node id: {node_id[:60]!r} (12-digit village code, dash, name)",
        )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def parse_csr(data: bytes | str) -> CsrInfo:
    """Validate a node's CSR: PEM, a valid self-signature, an EC P-256 key, one CN that is a
    node id. Any input gives a :class:`CsrInfo` or a :class:`CsrError`."""
    raw = data.encode("utf-8", errors="replace") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_CSR_BYTES:
        raise CsrError(
            "csr_too_large",
            f"证书请求过大（上限 {MAX_CSR_BYTES} 字节）",
            f"CSR larger than {MAX_CSR_BYTES} bytes",
        )
    try:
        csr = x509.load_pem_x509_csr(raw)
        key = csr.public_key()
        signed = csr.is_signature_valid
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except Exception:  # cryptography raises ValueError and others for malformed DER inside PEM
        raise CsrError(
            "csr_malformed",
            "证书请求格式错误（应为 PEM 格式的 CSR）",
            "malformed certificate signing request (expected a PEM CSR)",
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CsrError(
            "csr_key_type",
            "证书请求的密钥类型不对：应为 EC P-256（请用 shilian provision keygen 生成）",
            "wrong key type in CSR: EC P-256 required (use shilian provision keygen)",
        )
    if not signed:
        raise CsrError(
            "csr_signature",
            "证书请求签名无效（请求被篡改或损坏）",
            "CSR signature is invalid (tampered with or corrupted)",
        )
    cn = cns[0].value if len(cns) == 1 else None
    if not isinstance(cn, str) or not valid_node_id(cn):
        shown = repr(cn)[:60] if len(cns) <= 1 else f"{len(cns)} CNs"
        raise CsrError(
            "csr_cn",
            f"证书请求的 CN 不是节点编号：{shown}（应为 12 位村代码-名称，如 450102001001-a）",
            f"CSR common name is not a node id: {shown} (e.g. 450102001001-a)",
        )
    return CsrInfo(cn, key)


class CertificateAuthority:
    """A CA directory. Create once with :meth:`create`; open with :meth:`load`."""

    def __init__(
        self,
        directory: Path,
        key: ec.EllipticCurvePrivateKey,
        cert: x509.Certificate,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dir = directory
        self.key = key
        self.cert = cert
        self.clock = clock

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        name: str = "shilian CA",
        clock: Callable[[], float] = time.time,
    ) -> CertificateAuthority:
        """A new CA (refuses to overwrite an existing one) with an empty CRL."""
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / CA_KEY).exists():
            raise CaError(
                "ca_exists",
                f"{directory} 中已有 CA，不会覆盖",
                f"a CA already exists in {directory}; not overwriting it",
            )
        key = new_key()
        now = _now(clock)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SLACK)
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write(directory / CA_KEY, key_pem(key), 0o600)
        _write(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
        for f in (ISSUED, REVOKED):
            _write(directory / f, b"")
        ca = cls(directory, key, cert, clock)
        ca.write_crl()
        return ca

    @classmethod
    def load(
        cls, directory: Path, *, clock: Callable[[], float] = time.time
    ) -> CertificateAuthority:
        try:
            key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
            cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        except (OSError, ValueError) as e:
            raise CaError(
                "ca_missing",
                f"无法读取 CA（{directory}），请先运行 shilian provision ca init：{e}",
                f"cannot read the CA in {directory} (run shilian provision ca init first): {e}",
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CaError("ca_key_type", "CA 密钥类型不对", "CA key is not an EC key")
        return cls(directory, key, cert, clock)

    @property
    def ca_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def crl_path(self) -> Path:
        return self.dir / CRL

    # -- issuing ------------------------------------------------------------------------------

    def _issue(
        self,
        cn: str,
        public_key: ec.EllipticCurvePublicKey,
        days: float,
        eku: list[x509.ObjectIdentifier],
        san: list[x509.GeneralName] | None = None,
    ) -> x509.Certificate:
        now = _now(self.clock)
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SLACK)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        _append(
            self.dir / ISSUED,
            f"{cert.serial_number:x}\t{cn}\t{cert.not_valid_after_utc.isoformat()}",
        )
        return cert

    def issue_node(self, csr_pem: bytes | str, days: float = MAX_NODE_CERT_DAYS) -> Issued:
        """A node's client certificate from its CSR: CN = node id, clientAuth, ≤ 1 year."""
        if not 0 < days <= MAX_NODE_CERT_DAYS:
            raise CaError(
                "bad_validity",
                f"节点证书有效期应为 1 到 {MAX_NODE_CERT_DAYS} 天",
                f"node certificate validity must be 1 to {MAX_NODE_CERT_DAYS} days",
            )
        info = parse_csr(csr_pem)
        cert = self._issue(info.node_id, info.public_key, days, [ExtendedKeyUsageOID.CLIENT_AUTH])
        return Issued(
            info.node_id,
            cert.serial_number,
            cert.public_bytes(serialization.Encoding.PEM),
            cert.not_valid_after_utc,
        )

    def issue_client(self, cn: str, days: float = SERVICE_CERT_DAYS) -> tuple[bytes, bytes]:
        """Key and certificate (PEM) for central or an operator tool: clientAuth, CN ``cn``.
        Node ids are refused here: nodes make their own keys."""
        if valid_node_id(cn) or not cn or len(cn) > 64 or any(c in cn for c in "+#/"):
            raise CaError(
                "bad_cn",
                f"账户名无效：{cn[:60]!r}（不能是节点编号，不能含 + # /）",
                f"invalid account name {cn[:60]!r} (not a node id, no + # /)",
            )
        key = new_key()
        cert = self._issue(cn, key.public_key(), days, [ExtendedKeyUsageOID.CLIENT_AUTH])
        return key_pem(key), cert.public_bytes(serialization.Encoding.PEM)

    def issue_server(
        self, names: Iterable[str] = (), days: float = SERVICE_CERT_DAYS
    ) -> tuple[bytes, bytes]:
        """Key and certificate (PEM) for the broker: serverAuth; SAN localhost, 127.0.0.1 and
        ``names`` (host names or IP addresses nodes use to reach it)."""
        san: list[x509.GeneralName] = []
        seen: set[str] = set()
        for n in ("localhost", "127.0.0.1", *names):
            if n in seen:
                continue
            seen.add(n)
            try:
                san.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                san.append(x509.DNSName(n))
        first = next(iter(n for n in names), "localhost")
        key = new_key()
        cert = self._issue(first, key.public_key(), days, [ExtendedKeyUsageOID.SERVER_AUTH], san)
        return key_pem(key), cert.public_bytes(serialization.Encoding.PEM)

    # -- revocation ---------------------------------------------------------------------------

    def issued(self) -> list[tuple[int, str, str]]:
        """(serial, CN, not-after ISO) of every certificate issued, oldest first."""
        out = []
        for line in (self.dir / ISSUED).read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                out.append((int(parts[0], 16), parts[1], parts[2]))
        return out

    def revoked(self) -> dict[int, dt.datetime]:
        out = {}
        for line in (self.dir / REVOKED).read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) == 2:
                out[int(parts[0], 16)] = dt.datetime.fromisoformat(parts[1])
        return out

    def revoke_superseded(self, cn: str, current: int) -> list[int]:
        """Revoke every certificate of ``cn`` issued before ``current`` (a renewal completed:
        the old pair must not work any more); rewrite the CRL. Returns the serials revoked."""
        already = self.revoked()
        serials = []
        for s, c, _ in self.issued():
            if s == current:
                break
            if c == cn and s not in already:
                serials.append(s)
        self._record_revocations(serials)
        return serials

    def revoke(self, cn: str) -> list[int]:
        """Revoke every certificate issued to ``cn`` (a node id or an account); rewrite the CRL.
        Returns the serials newly revoked. The broker refuses them once it rereads the CRL
        (SIGHUP); sessions already connected are cut off by the broker ACL's deny lines
        (provisioning.broker_config.write_acl)."""
        already = self.revoked()
        serials = [s for s, c, _ in self.issued() if c == cn and s not in already]
        if not serials and not any(c == cn for _, c, _ in self.issued()):
            raise CaError(
                "unknown_cn",
                f"此 CA 从未给 {cn[:60]} 签发证书",
                f"this CA never issued a certificate to {cn[:60]}",
            )
        self._record_revocations(serials)
        return serials

    def _record_revocations(self, serials: list[int]) -> None:
        if not serials:
            return
        now = _now(self.clock)
        for s in serials:
            _append(self.dir / REVOKED, f"{s:x}\t{now.isoformat()}")
        self.write_crl()

    def write_crl(self) -> None:
        now = _now(self.clock)
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - CLOCK_SLACK)
            .next_update(now + dt.timedelta(days=CRL_DAYS))
        )
        for serial, when in sorted(self.revoked().items()):
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        crl = b.sign(self.key, hashes.SHA256())
        _write(self.dir / CRL, crl.public_bytes(serialization.Encoding.PEM))


def revoked_identities(directory: Path) -> frozenset[str]:
    """CNs (node ids, accounts) whose latest certificate is revoked: ``revoke --node`` was run
    and nothing was issued to them since. A certificate superseded by a renewal is revoked too,
    but its CN, holding a newer one, is not a revoked identity. Reads ``issued.tsv`` and
    ``revoked.tsv`` only (no key needed)."""
    latest: dict[str, int] = {}
    for line in (directory / ISSUED).read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            latest[parts[1]] = int(parts[0], 16)
    revoked = set()
    for line in (directory / REVOKED).read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) == 2:
            revoked.add(int(parts[0], 16))
    return frozenset(cn for cn, serial in latest.items() if serial in revoked)


def _now(clock: Callable[[], float]) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(clock()), dt.UTC)


def write_private(path: Path, data: bytes) -> None:
    """A private key file, 0600 from its creation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, data, 0o644)
