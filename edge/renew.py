"""Certificate renewal over MQTT, the node's side (docs/provisioning.md).

Once a day (``[broker.tls] renew_check_interval_s``) the agent reads its certificate's expiry with
the stdlib ``ssl`` module; with fewer than ``renew_before_days`` left it renews:

1. a short-lived subprocess (``python -m edge.renew csr``) makes a new key on the box and a CSR:
   ``cryptography`` is never imported into the agent, whose idle RSS is at its 40 MB target;
2. the CSR goes to central on ``cert/req`` (QoS 1, MQTT 5 response topic and correlation data);
   central answers on ``cert/res`` with a certificate or a refusal (code, zh/en message);
3. the certificate is written next to the new key (``node.pem.new``, ``node.key.new``: tmp,
   fsync, rename), the stdlib checks that they match, and the session reconnects with them;
4. only after a successful connection with the new pair does it replace the old one (rename,
   key first, then certificate). If the new pair is refused, the session goes back to the old
   one and the renewal is tried again later (the new pair is dropped after
   :data:`MAX_CANDIDATE_FAILURES`).

What survives a power cut: at every moment the files hold a working pair. A cut between the two
renames of step 4 leaves the new key with a ``node.pem.new``; :meth:`CertRenewer.recover` (run
before the first connect) completes the promotion. A pending ``node.key.new`` without its
certificate is reused by the next request, so a lost answer does not waste a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from edge.config import EdgeConfig, TlsConfig
from edge.durable_file import fsync_dir, write_atomic
from edge.mqtt_link import Incoming, LinkError, PublishRejected
from wire import RemoteWireError, Topics, decode, encode
from wire.messages import CertRequest, CertResponse

if TYPE_CHECKING:
    from edge.session import NodeSession

log = logging.getLogger("shilian.edge.renew")

#: Seconds the key + CSR subprocess may take (Python start and an EC key: ~1 s on a Pi).
CSR_TIMEOUT_S = 60.0
#: Seconds to wait for central's answer (QoS 1 both ways; a slow 4G uplink).
ANSWER_TIMEOUT_S = 60.0
#: Seconds to wait for the reconnection with the new pair to succeed or fail.
SWITCH_TIMEOUT_S = 120.0
#: After a failed renewal, the next attempt: an hour (the check runs daily and the certificate
#: has weeks left; a refusal such as ``revoked`` will not change within minutes).
RETRY_S = 3600.0
#: A new pair refused this many times is dropped and a fresh key is requested next time.
MAX_CANDIDATE_FAILURES = 3


class RenewError(Exception):
    """A renewal attempt failed; ``code`` is the metric label (central's refusal code or ours)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class CertInfo:
    not_after: float  # Unix seconds
    serial: str  # lower-case hex


def cert_info(path: Path) -> CertInfo:
    """Expiry and serial of a PEM certificate, with the stdlib only (CPython's
    ``_ssl._test_decode_cert``, present since 2.7). :class:`RenewError` if unreadable."""
    decoder: Callable[[str], dict[str, Any]] = getattr(ssl, "_ssl")._test_decode_cert  # noqa: B009
    try:
        d = decoder(str(path))
        return CertInfo(float(ssl.cert_time_to_seconds(d["notAfter"])), d["serialNumber"].lower())
    except (OSError, ssl.SSLError, KeyError, ValueError) as e:
        raise RenewError("cert_unreadable", f"cannot read {path}: {e}") from None


def _new(path: Path) -> Path:
    return path.with_name(path.name + ".new")


@dataclass(frozen=True, slots=True)
class Pair:
    """TLS files for one connect: the configured CA with a given certificate and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


class CertRenewer:
    """Owned by the agent when ``[broker.tls]`` is set; hooked into :class:`NodeSession` as its
    ``renewal`` (an :class:`edge.session.Renewal`: ``tls_files``, ``connected``,
    ``connect_failed``, ``on_answer``)."""

    def __init__(
        self,
        config: EdgeConfig,
        topics: Topics,
        session: NodeSession,
        registry: CollectorRegistry,
        clock: Callable[[], float],
    ) -> None:
        assert config.broker.tls is not None
        self.tls: TlsConfig = config.broker.tls
        self.topics = topics
        self.session = session
        self.clock = clock
        self.not_after: float | None = None
        self.renewed_at: float | None = None
        self.last_error: str | None = None
        self._trying: Pair | None = None
        self._switch: asyncio.Future[bool] | None = None
        self._answers: dict[bytes, asyncio.Future[CertResponse]] = {}
        self._candidate_failures = 0
        self.expiry = Gauge(
            "shilian_edge_cert_not_after_seconds",
            "本节点证书到期时间 / expiry of this node's certificate (Unix seconds)",
            registry=registry,
        )
        self.outcomes = Counter(
            "shilian_edge_cert_renewals",
            "证书续期结果 / certificate renewals, by outcome (renewed or error code)",
            ["outcome"],
            registry=registry,
        )

    @property
    def key_new(self) -> Path:
        return _new(self.tls.key_file)

    @property
    def cert_new(self) -> Path:
        return _new(self.tls.cert_file)

    # -- start-up ----------------------------------------------------------------------------

    def recover(self) -> None:
        """Finish a promotion a power cut interrupted, and read the current expiry. Runs before
        the first connect."""
        if self.cert_new.exists() and not self.key_new.exists():
            os.replace(self.cert_new, self.tls.cert_file)  # the key was renamed already
            fsync_dir(self.tls.cert_file.parent)
            log.info("node %s: completed an interrupted certificate switch", self.topics.node_id)
        self._read_expiry()

    def _read_expiry(self) -> None:
        try:
            self.not_after = cert_info(self.tls.cert_file).not_after
            self.expiry.set(self.not_after)
        except RenewError as e:
            log.warning("node %s: %s", self.topics.node_id, e.message)

    # -- session hooks -----------------------------------------------------------------------

    def tls_files(self) -> Pair | TlsConfig:
        return self._trying or self.tls

    def connected(self, files: object) -> None:
        if self._trying is not None and files is self._trying:
            self._trying = None
            if self._switch is not None and not self._switch.done():
                self._switch.set_result(True)

    def connect_failed(self, files: object, error: Exception) -> None:
        if self._trying is not None and files is self._trying:
            self._trying = None  # the next attempt uses the old pair
            log.warning("node %s: new certificate refused: %s", self.topics.node_id, error)
            if self._switch is not None and not self._switch.done():
                self._switch.set_result(False)

    def on_answer(self, msg: Incoming) -> None:
        fut = self._answers.get(msg.correlation or b"")
        if fut is None or fut.done():
            return  # late or not ours: the request already gave up
        try:
            fut.set_result(decode(CertResponse, msg.payload, node_id=self.topics.node_id))
        except RemoteWireError as e:
            fut.set_exception(RenewError("bad_answer", str(e)))

    # -- the task ----------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        if self.not_after is None:
            return False
        return self.not_after - now < self.tls.renew_before_days * 86400.0

    async def run(self) -> None:
        """Check at start and then every ``renew_check_interval_s``; renew when due."""
        while True:
            await self.session.wait_link()
            delay = self.tls.renew_check_interval_s
            if self.due(self.clock()):
                try:
                    await self.renew()
                except RenewError as e:
                    self.last_error = e.message
                    self.outcomes.labels(e.code).inc()
                    log.warning("node %s: renewal failed: %s", self.topics.node_id, e.message)
                    delay = min(delay, RETRY_S)
            await asyncio.sleep(delay)

    async def renew(self) -> None:
        """One renewal: CSR, request, answer, switch, promote. :class:`RenewError` on failure."""
        node = self.topics.node_id
        if not (self.key_new.exists() and self.cert_new.exists() and self._pair_matches()):
            csr = await self._make_csr()
            answer = await self._request(csr)
            if not answer.ok or answer.cert_pem is None:
                err = answer.error
                raise RenewError(
                    err.code if err else "refused", err.message if err else "refused by central"
                )
            write_atomic(self.cert_new, answer.cert_pem.encode(), 0o644)
            if not self._pair_matches():
                raise RenewError("mismatch", "central's certificate does not match the new key")
        log.info("node %s: new certificate received; reconnecting with it", node)
        if not await self._switch_to_new():
            self._candidate_failures += 1
            if self._candidate_failures >= MAX_CANDIDATE_FAILURES:
                self._drop_new()
            raise RenewError("switch_failed", "the broker refused the new certificate")
        os.replace(self.key_new, self.tls.key_file)
        os.replace(self.cert_new, self.tls.cert_file)
        fsync_dir(self.tls.key_file.parent)
        self._candidate_failures = 0
        self._read_expiry()
        self.renewed_at = self.clock()
        self.last_error = None
        self.outcomes.labels("renewed").inc()
        log.info("node %s: certificate renewed, valid until %s", node, self.not_after)

    def _pair_matches(self) -> bool:
        try:
            ssl.create_default_context().load_cert_chain(str(self.cert_new), str(self.key_new))
        except (OSError, ssl.SSLError):
            return False
        return True

    def _drop_new(self) -> None:
        self._candidate_failures = 0
        for p in (self.cert_new, self.key_new):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    async def _make_csr(self) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edge.renew",
            "csr",
            self.topics.node_id,
            str(self.key_new),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), CSR_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RenewError("keygen", "key/CSR subprocess timed out") from None
        if proc.returncode != 0:
            raise RenewError("keygen", err.decode(errors="replace")[-500:].strip())
        return out.decode()

    async def _request(self, csr: str) -> CertResponse:
        serial = None
        with contextlib.suppress(RenewError):
            serial = cert_info(self.tls.cert_file).serial
        payload = encode(
            CertRequest(node=self.topics.node_id, ts=self.clock(), csr_pem=csr, serial=serial)
        )
        corr = os.urandom(16)
        fut: asyncio.Future[CertResponse] = asyncio.get_running_loop().create_future()
        self._answers[corr] = fut
        try:
            link = await self.session.wait_link()
            try:
                await link.publish(
                    self.topics.cert_req,
                    payload,
                    correlation=corr,
                    response_topic=self.topics.cert_res,
                )
            except (LinkError, PublishRejected) as e:
                raise RenewError("unsent", f"request not sent: {e}") from None
            try:
                return await asyncio.wait_for(fut, ANSWER_TIMEOUT_S)
            except TimeoutError:
                raise RenewError("timeout", f"no answer in {ANSWER_TIMEOUT_S:g} s") from None
        finally:
            self._answers.pop(corr, None)

    async def _switch_to_new(self) -> bool:
        self._trying = Pair(self.tls.ca_file, self.cert_new, self.key_new)
        self._switch = asyncio.get_running_loop().create_future()
        try:
            await self.session.reconnect()
            return await asyncio.wait_for(self._switch, SWITCH_TIMEOUT_S)
        except TimeoutError:
            return False
        finally:
            self._trying = None
            self._switch = None

    def status(self) -> dict[str, Any]:
        return {
            "not_after": self.not_after,
            "renewed_at": self.renewed_at,
            "last_error": self.last_error,
        }


# -- the key + CSR subprocess -------------------------------------------------------------------


def make_key_and_csr(node_id: str, key_path: Path) -> bytes:
    """The new key (kept if it exists: a retried request reuses it; 0600, fsynced) and a CSR for
    ``node_id``. Imports ``cryptography``: only ever run in the short-lived subprocess."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from pki.ca import key_pem, make_csr, new_key

    if key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC private key")
    else:
        key = new_key()
        write_atomic(key_path, key_pem(key), 0o600)
    return make_csr(key, node_id)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "csr":
        print("usage: python -m edge.renew csr NODE_ID KEY_PATH", file=sys.stderr)
        return 2
    try:
        sys.stdout.buffer.write(make_key_and_csr(argv[1], Path(argv[2])))
    except Exception as e:  # reported to the agent, which counts and retries
        print(f"密钥或证书请求生成失败 / key or CSR failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
