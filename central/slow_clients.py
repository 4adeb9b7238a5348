"""Bounds on slow HTTP clients (slowloris), and their count.

A request head must be complete within ``[http] idle_timeout_s`` of the connection opening or
of its previous answer (aiohttp's keep-alive timer, counted by central.http_server); a request
body must then arrive within ``[http] body_timeout_s`` of its head: aiohttp has no timeout of
its own for a body, so a client trickling one would hold a connection and a handler for as
long as it likes. Both cuts are counted in ``shilian_http_connections_cut_total{reason}``:
``incomplete_request``, ``idle`` and ``slow_body``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import prometheus_client
from aiohttp import web

log = logging.getLogger("shilian.central.http")

#: JSON bodies are at most 64 KiB and a firmware image under 1 MiB: seconds even on a slow 4G
#: uplink, so 30 s only cuts clients that send a body on purpose slowly.
DEFAULT_BODY_TIMEOUT_S = 30.0

CUTS: web.AppKey[prometheus_client.Counter] = web.AppKey("http_cuts", prometheus_client.Counter)
BODY_TIMEOUT: web.AppKey[float] = web.AppKey("body_timeout_s", float)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup(
    app: web.Application, registry: prometheus_client.CollectorRegistry, body_s: float
) -> None:
    app[CUTS] = prometheus_client.Counter(
        "shilian_http_connections_cut",
        "未在时限内发完请求而被断开的连接 / HTTP connections closed for a request not sent in "
        "time ([http] idle_timeout_s, body_timeout_s), by reason",
        ["reason"],
        registry=registry,
    )
    app[BODY_TIMEOUT] = body_s


@web.middleware
async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Close the connection when the body has not fully arrived ``body_timeout_s`` after the
    head; the handler's read then fails, and nothing is answered (the peer is gone)."""
    if not request.body_exists or request.content.is_eof():
        return await handler(request)
    cut = False

    def on_timeout() -> None:
        nonlocal cut
        if request.content.is_eof() or request.transport is None:
            return
        cut = True
        request.app[CUTS].labels("slow_body").inc()
        log.debug(  # counted above: a flood of slow clients must not flood the log
            "http: %s %s from %s: body not received within %g s, connection closed",
            request.method,
            request.path[:100],
            request.remote,
            request.app[BODY_TIMEOUT],
        )
        request.transport.close()

    timer = asyncio.get_running_loop().call_later(request.app[BODY_TIMEOUT], on_timeout)
    try:
        return await handler(request)
    except ConnectionError:
        if not cut:
            raise
        return web.Response(status=408)  # never sent: the transport is closed
    finally:
        timer.cancel()
