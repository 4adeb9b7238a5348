"""Central's enrolment endpoint: ``POST /api/v1/enrol {"token", "csr_pem"}``.

Answer 200: ``{"node_id", "cert_pem", "ca_pem", "not_after", "broker": {"host", "port", "tls"}}``.
Errors are JSON ``{"error": {"code", "message"}}`` (message zh-CN first, then English):
400 bad body / bad CSR / token for another node, 401 unknown token, 409 token already used,
410 token expired, 503 CA not readable. The CSR is checked before the token is redeemed, so a
technician's typo in the CSR does not burn the token.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from central import auth
from central.config import CaConfig
from central.db import Target, open_db
from central.http import error_response
from central.tokens import TokenError, TokenStore
from pki.ca import CaError, CertificateAuthority, Issued, parse_csr
from wire import bounded_json

#: Largest enrol request: a CSR (capped at 16 KiB by the CA) and a token, with room for JSON.
MAX_ENROL_BODY = 32 * 1024
_DUMPS = functools.partial(json.dumps, ensure_ascii=False)


def _error(
    status: int, code: str, zh: str, en: str, headers: dict[str, str] | None = None
) -> web.Response:
    return error_response(status, code, f"{zh} / {en}", headers)


class Enroller:
    """Redeem a token and sign the CSR (blocking: run in a worker thread)."""

    def __init__(self, cfg: CaConfig, db: Target, clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.db_target = db
        self.clock = clock
        self._ca: CertificateAuthority | None = None

    def ca(self) -> CertificateAuthority:
        if self._ca is None:  # loaded on first use: a missing CA is a 503, not a dead central
            self._ca = CertificateAuthority.load(self.cfg.dir, clock=self.clock)
        return self._ca

    def enrol(self, token: str, csr_pem: str) -> tuple[Issued, bytes]:
        info = parse_csr(csr_pem)
        ca = self.ca()
        db = open_db(self.db_target)
        try:
            TokenStore(db, self.clock).redeem(token, info.node_id)
        finally:
            db.close()
        return ca.issue_node(csr_pem, days=self.cfg.cert_days), ca.ca_pem


def add_enrol_routes(
    app: web.Application, cfg: CaConfig, db: Target, clock: Callable[[], float] = time.time
) -> None:
    """``db``: central's database (a SQLite path or a PostgreSQL URL)."""
    enroller = Enroller(cfg, db, clock)
    lock = asyncio.Lock()  # one enrolment at a time: they are rare, and the CA files are shared

    async def enrol(request: web.Request) -> web.Response:
        if (retry := auth.guess_wait(request, "enrol")) is not None:
            status, code, zh, en, headers = auth.throttled_answer(retry)
            return _error(status, code, zh, en, headers)
        raw = await request.content.read(MAX_ENROL_BODY + 1)
        if len(raw) > MAX_ENROL_BODY:
            return _error(413, "body_too_large", "请求体过大", "request body too large")
        try:
            body: Any = bounded_json.loads(raw)
        except bounded_json.JsonError as e:
            return _error(
                400, "bad_json", f"请求体不是有效 JSON：{e.reason}", f"body is not JSON: {e.reason}"
            )
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("token"), str)
            or not isinstance(body.get("csr_pem"), str)
            or set(body) - {"token", "csr_pem"}
        ):
            return _error(
                400,
                "bad_body",
                '请求体应为 JSON 对象 {"token": "...", "csr_pem": "..."}',
                'body must be a JSON object {"token": "...", "csr_pem": "..."}',
            )
        try:
            async with lock:
                issued, ca_pem = await asyncio.to_thread(
                    enroller.enrol, body["token"], body["csr_pem"]
                )
        except TokenError as e:
            auth.guess_failed(request, "enrol")
            return _error(e.status, e.code, e.zh, e.en)
        except CaError as e:
            status = 400 if e.code.startswith("csr_") else 503
            return _error(status, e.code, e.zh, e.en)
        return web.json_response(
            {
                "node_id": issued.node_id,
                "cert_pem": issued.cert_pem.decode(),
                "ca_pem": ca_pem.decode(),
                "not_after": issued.not_after.isoformat(),
                "broker": {"host": cfg.broker_host, "port": cfg.broker_port, "tls": True},
            },
            dumps=_DUMPS,
        )

    app.router.add_post("/api/v1/enrol", enrol)
