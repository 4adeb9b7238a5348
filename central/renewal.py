"""Certificate renewal over MQTT, central's side (docs/provisioning.md, docs/protocol.md).

A node publishes a :class:`wire.messages.CertRequest` (a CSR for a key it made on the box) on its
own ``shilian/v1/<node>/cert/req``; the broker's ACL guarantees that the topic's node id is the
MQTT identity (certificate CN) of the sender. Central, when it holds the CA (``[ca]``), checks

1. the payload decodes and names the topic's node;
2. the CSR is well formed (EC P-256, valid self-signature) and its CN is that node id;
3. the node was enrolled (this CA issued it a certificate) and its latest certificate, and the
   one it says it uses now, are not revoked;
4. the node has not had :data:`MAX_RENEWALS_PER_WINDOW` certificates in the last
   :data:`RENEWAL_WINDOW_S` (a looping node cannot fill the CA's issued list);

then issues a certificate with the enrolment rules (``[ca] cert_days``, at most a year) and
answers a :class:`wire.messages.CertResponse` on the node's own ``cert/res`` with the request's
correlation data. Central always answers on that topic, whatever response topic the request
names: it never publishes into another node's subtree on a node's say-so. Refusals carry a code
and a zh-CN / English message; every outcome is counted in
``shilian_central_renewals_total{outcome}``. Requests are queued (bounded) and handled one at a
time in a worker thread (signing and the CA files are blocking); the MQTT message is acknowledged
with its batch, so a central crash before the answer loses the request: the node asks again.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from central.config import CaConfig
from central.link import Inbound
from pki.ca import CaError, CertificateAuthority, Issued, parse_csr
from resilience.log_limiter import LogLimiter
from wire import Kind, RemoteWireError, Topics, decode, encode, parse_topic
from wire.messages import CertRequest, CertResponse, CommandError, Health

log = logging.getLogger("shilian.central.renewal")

#: Certificates one node may get per window. Three covers a lost answer and a retry or two;
#: more means a node in a loop, which must not grow issued.tsv without bound.
MAX_RENEWALS_PER_WINDOW = 3
RENEWAL_WINDOW_S = 24 * 3600.0
#: Requests waiting at once. Renewals are rare (a fleet renews over weeks); a burst beyond this is
#: refused with ``busy`` and the nodes retry later.
MAX_QUEUE = 256
#: Renewals answered and awaiting the node's first health with the new certificate: a fleet's
#: worth; beyond it an answered node keeps its old pair valid until its next renewal.
MAX_ANSWERED = 100_000
#: A certificate's not-after as the node reports it (a float of seconds) against ours.
NOT_AFTER_SLACK_S = 1.0
#: Refusals from one node for one reason are logged at most once per window.
LOG_WINDOW_S = 60.0
#: Seconds the broker reload command may take (``systemctl reload`` returns in well under one).
RELOAD_TIMEOUT_S = 30.0


class RenewalRefused(Exception):
    """A renewal that central will not do: stable ``code``, zh-CN / English message."""

    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(f"{code}: {en}")
        self.code = code
        self.zh = zh
        self.en = en


@dataclass(frozen=True, slots=True)
class Pending:
    node_id: str
    payload: bytes
    correlation: bytes | None


class RateLimit:
    """Issued certificates per node in a sliding window. Pure: the time is passed in. Lost on
    restart (the window then starts afresh), which only ever allows a little more."""

    def __init__(
        self, limit: int = MAX_RENEWALS_PER_WINDOW, window_s: float = RENEWAL_WINDOW_S
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._issued: dict[str, deque[float]] = {}

    def check(self, node_id: str, now: float) -> None:
        times = self._issued.get(node_id)
        if times is None:
            return
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if not times:
            del self._issued[node_id]
        elif len(times) >= self.limit:
            wait = int(times[0] + self.window_s - now) + 1
            raise RenewalRefused(
                "rate_limited",
                f"续期过于频繁：{self.window_s / 3600:g} 小时内最多 {self.limit} 次，"
                f"请 {wait} 秒后再试",
                f"too many renewals: at most {self.limit} per {self.window_s / 3600:g} h; "
                f"retry in {wait} s",
            )

    def record(self, node_id: str, now: float) -> None:
        self._issued.setdefault(node_id, deque()).append(now)


class Renewer:
    """The checks and the signing (blocking: run in a worker thread)."""

    def __init__(self, cfg: CaConfig, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self._ca: CertificateAuthority | None = None

    def ca(self) -> CertificateAuthority:
        if self._ca is None:  # loaded on first use: a missing CA is a refusal, not a dead central
            self._ca = CertificateAuthority.load(self.cfg.dir, clock=self.clock)
        return self._ca

    def renew(self, node_id: str, req: CertRequest) -> tuple[Issued, bytes]:
        info = parse_csr(req.csr_pem)
        if info.node_id != node_id:
            raise RenewalRefused(
                "csr_other_node",
                f"证书请求的 CN 是 {info.node_id}，但请求来自节点 {node_id}：节点只能为自己续期",
                f"the CSR's CN is {info.node_id} but the request came from node {node_id}: "
                "a node renews only its own certificate",
            )
        ca = self.ca()
        serials = [s for s, cn, _ in ca.issued() if cn == node_id]
        if not serials:
            raise RenewalRefused(
                "not_enrolled",
                f"节点 {node_id} 未经本中心入网，不能续期；请用入网令牌重新入网",
                f"node {node_id} was never enrolled by this central; enrol it with a token",
            )
        revoked = ca.revoked()
        current = int(req.serial, 16) if req.serial else serials[-1]
        if current not in serials:
            raise RenewalRefused(
                "unknown_serial",
                f"本中心未给节点 {node_id} 签发过序列号 {req.serial} 的证书",
                f"this CA never issued serial {req.serial} to node {node_id}",
            )
        if serials[-1] in revoked or current in revoked:
            raise RenewalRefused(
                "revoked",
                f"节点 {node_id} 的证书已被吊销，不能续期；请联系管理员",
                f"node {node_id}'s certificate was revoked; it cannot be renewed: "
                "contact the administrator",
            )
        return ca.issue_node(req.csr_pem, days=self.cfg.cert_days), ca.ca_pem

    def supersede(self, node_id: str, current: int) -> list[int]:
        """The renewal completed (the node uses the new certificate): revoke the node's older
        certificates and have the broker reread its CRL, so the replaced pair stops working."""
        serials = self.ca().revoke_superseded(node_id, current)
        if serials and self.cfg.broker_reload:
            try:
                done = subprocess.run(
                    self.cfg.broker_reload, capture_output=True, timeout=RELOAD_TIMEOUT_S
                )
            except (OSError, subprocess.TimeoutExpired) as e:
                log.error("代理重载失败 / broker reload failed: %s", e)
            else:
                if done.returncode != 0:
                    log.error(
                        "代理重载失败 / broker reload failed (%d): %s",
                        done.returncode,
                        done.stderr[:300].decode(errors="replace"),
                    )
        return serials


#: publish(topic, payload, correlation data); raises ConnectionError when the link is down.
Publish = Callable[[str, bytes, bytes | None], None]


class RenewalService:
    """Takes ``cert/req`` messages out of central's ingest batches and answers them."""

    def __init__(
        self,
        cfg: CaConfig,
        publish: Publish,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock``: wall time, for the certificates' validity; ``mono``: the rate limit's
        and the log limiter's windows, which a step of the wall clock must not end or extend."""
        self.renewer = Renewer(cfg, clock)
        self.limit = RateLimit()
        self.clock = clock
        self.mono = mono
        self._publish = publish
        self._queue: deque[Pending] = deque()
        self._superseding: deque[tuple[str, int]] = deque()
        self._wake = asyncio.Event()
        self._log = LogLimiter(LOG_WINDOW_S)
        #: Renewals answered but not yet in use: node -> (new serial, its not-after). The old
        #: certificate is revoked only once the node's health reports the new one: an answer
        #: lost on the way must leave the node its old pair to connect and ask again. Lost on a
        #: central restart (the old pair then stays valid until the next renewal supersedes it).
        self._answered: dict[str, tuple[int, float]] = {}
        self.outcomes = Counter(
            "shilian_central_renewals",
            "证书续期请求结果 / certificate renewal requests, by outcome (issued or refusal code)",
            ["outcome"],
            registry=registry,
        )

    def take(self, batch: list[Inbound]) -> list[Inbound]:
        """Queue the batch's renewal requests; return the other messages (for ingest). Health
        of a node whose renewal was answered tells whether it now uses the new certificate."""
        if self._answered:
            self._confirm(batch)
        if not any(m.topic.endswith("/cert/req") for m in batch):
            return batch
        rest = []
        for m in batch:
            try:
                route = parse_topic(m.topic) if m.topic.endswith("/cert/req") else None
            except RemoteWireError:
                route = None
            if route is None or route.kind is not Kind.CERT_REQ:
                rest.append(m)
            elif len(self._queue) >= MAX_QUEUE:
                self._answer_refusal(
                    Pending(route.node_id, b"", m.correlation),
                    RenewalRefused(
                        "busy", "中心繁忙，请稍后再试续期", "central is busy; renew again later"
                    ),
                )
            else:
                self._queue.append(Pending(route.node_id, m.payload, m.correlation))
                self._wake.set()
        return rest

    async def run(self, stop: asyncio.Event) -> None:
        """Answer queued requests one at a time until ``stop`` is set (requests still queued
        then are dropped: their nodes ask again)."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                waking = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({stopping, waking}, return_when=asyncio.FIRST_COMPLETED)
                waking.cancel()
                self._wake.clear()
                while self._queue and not stop.is_set():
                    await self.handle(self._queue.popleft())
                await self._supersede_confirmed()
        finally:
            stopping.cancel()

    async def handle(self, p: Pending) -> None:
        try:
            try:
                req = decode(CertRequest, p.payload, node_id=p.node_id)
            except RemoteWireError as e:
                raise RenewalRefused(
                    "bad_request",
                    f"续期请求格式错误：{e.detail[:200]}",
                    f"malformed renewal request: {e.detail[:200]}",
                ) from None
            self.limit.check(p.node_id, self.mono())
            issued, ca_pem = await asyncio.to_thread(self.renewer.renew, p.node_id, req)
        except RenewalRefused as e:
            self._answer_refusal(p, e)
            return
        except CaError as e:  # a bad CSR (csr_*) or central's CA unreadable (ca_missing)
            self._answer_refusal(p, RenewalRefused(e.code, e.zh, e.en))
            return
        self.limit.record(p.node_id, self.mono())
        self.outcomes.labels("issued").inc()
        log.info(
            "证书已续期 / certificate renewed: node %s serial %x until %s",
            p.node_id,
            issued.serial,
            issued.not_after.isoformat(),
        )
        self._send(
            p,
            CertResponse(
                node=p.node_id,
                ok=True,
                cert_pem=issued.cert_pem.decode(),
                ca_pem=ca_pem.decode(),
                serial=f"{issued.serial:x}",
                not_after=issued.not_after.timestamp(),
            ),
        )
        if len(self._answered) < MAX_ANSWERED or p.node_id in self._answered:
            self._answered[p.node_id] = (issued.serial, issued.not_after.timestamp())

    def _confirm(self, batch: list[Inbound]) -> None:
        for m in batch:
            if not m.topic.endswith("/health"):
                continue
            try:
                route = parse_topic(m.topic)
            except RemoteWireError:
                continue
            answered = self._answered.get(route.node_id)
            if answered is None or route.kind is not Kind.HEALTH:
                continue
            try:
                health = decode(Health, m.payload, node_id=route.node_id)
            except RemoteWireError:
                continue
            not_after = health.cert_not_after
            if not_after is not None and abs(not_after - answered[1]) < NOT_AFTER_SLACK_S:
                del self._answered[route.node_id]
                self._superseding.append((route.node_id, answered[0]))
                self._wake.set()

    async def _supersede_confirmed(self) -> None:
        while self._superseding:
            node_id, serial = self._superseding.popleft()
            try:
                old = await asyncio.to_thread(self.renewer.supersede, node_id, serial)
            except (CaError, OSError) as e:
                log.error("旧证书未能吊销 / superseded certificate not revoked: %s: %s", node_id, e)
            else:
                if old:
                    self.outcomes.labels("superseded_revoked").inc(len(old))

    def _answer_refusal(self, p: Pending, e: RenewalRefused) -> None:
        self.outcomes.labels(e.code).inc()
        if self._log.allow((p.node_id, e.code), self.mono()):
            log.warning(
                "拒绝证书续期 / renewal refused: node %s code %s: %s", p.node_id, e.code, e.en
            )
        err = CommandError(code=e.code, message=f"{e.zh} / {e.en}"[:1024])
        self._send(p, CertResponse(node=p.node_id, ok=False, error=err))

    def _send(self, p: Pending, resp: CertResponse) -> None:
        try:
            self._publish(Topics(p.node_id).cert_res, encode(resp), p.correlation)
        except ConnectionError as e:  # link down: the node times out and asks again
            log.warning("续期应答未发出 / renewal answer to %s not sent: %s", p.node_id, e)

    @property
    def queued(self) -> int:
        return len(self._queue)
