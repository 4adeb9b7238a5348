"""The one adapter over aiohttp's server internals: errors aiohttp answers by itself, before any
middleware runs (a request line or header over 8,190 bytes, too many headers, a bad method, TLS
or other non-HTTP bytes on the port), become the same JSON error as every other answer
(docs/api.md), logged as one line without a traceback.

aiohttp writes those answers in ``RequestHandler.handle_error`` as ``text/plain`` and logs each
with a traceback. :class:`JsonErrorsRunner` is an ``AppRunner`` whose server builds request
handlers that override it. It relies on ``Server._loop``/``Server._kwargs`` and on
``handle_error``'s signature (aiohttp 3.14, pinned in constraints.txt); tests/test_http_errors.py
fails loudly if an upgrade changes them.

Slow clients (slowloris): aiohttp closes a connection that has no complete request
``keepalive_timeout`` seconds after it opened or after its last answer, however many bytes
trickle in meanwhile (the timer is not moved by received data). Central sets that timeout from
``[http] idle_timeout_s`` and counts each connection so closed in
``shilian_http_connections_cut_total{reason}`` (central.slow_clients): ``incomplete_request``
when bytes of a request had arrived, ``idle`` when none had. The count relies on
``RequestHandler._process_keepalive`` and ``_force_close`` (tests/test_slowloris.py fails if
they change).
"""

from __future__ import annotations

import logging
from typing import Any

import prometheus_client
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from central.browser_guard import SECURITY_HEADERS
from central.http import error_response
from central.slow_clients import CUTS

log = logging.getLogger("shilian.central.http")

#: Longest part of aiohttp's own reason quoted back and logged: it may echo the client's bytes.
MAX_REASON_CHARS = 120

_CODES = {
    400: ("bad_request", "请求格式错误"),
    413: ("body_too_large", "请求体过大"),
    431: ("headers_too_large", "请求头过大"),
}


class _JsonErrorHandler(RequestHandler):
    _pending = 0  # bytes received since the last complete request

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        self._pending = 0 if self._request_count != before else self._pending + len(data)

    def _process_keepalive(self) -> None:
        was_open = not self._force_close
        peer = self.transport.get_extra_info("peername") if self.transport else None
        super()._process_keepalive()
        if was_open and self._force_close:
            reason = "incomplete_request" if self._pending else "idle"
            cut = getattr(self._manager, "cut", None)
            if cut is not None:
                cut.labels(reason).inc()
            if self._pending:  # counted above; one line each only when debugging: a flood is many
                log.debug(
                    "http: %s closed: no complete request within the idle timeout (%d bytes)",
                    peer,
                    self._pending,
                )

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        reason = " ".join(str(message or getattr(exc, "message", "") or exc or "").split())
        reason = reason[:MAX_REASON_CHARS]
        if status >= 500:  # not a malformed request: a fault of ours, which deserves its trace
            log.error("http: internal error from %s", request.remote, exc_info=exc)
        else:
            log.info(
                "http: malformed request from %s refused (%d): %s", request.remote, status, reason
            )
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had started: the connection is closed instead")
        code, zh = _CODES.get(status, ("http_error", "请求失败"))
        if status >= 500:
            code, zh, reason = "internal", "服务器内部错误", "internal server error"
        resp = error_response(status, code, f"{zh} / {reason or 'malformed HTTP request'}")
        resp.headers.update(SECURITY_HEADERS)
        resp.force_close()
        return resp


class _JsonErrorServer(web.Server):
    cut: prometheus_client.Counter | None = None

    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorsRunner(web.AppRunner):
    """``web.AppRunner`` whose protocol-level errors are JSON (see the module docstring)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        assert isinstance(server, _JsonErrorServer)
        server.cut = self.app.get(CUTS)
        return server


def runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """The runner central serves ``app`` with."""
    return JsonErrorsRunner(app, **kwargs)
