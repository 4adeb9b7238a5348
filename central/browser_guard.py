"""What central does against a hostile web page open in a logged-in operator's browser.

The session cookie is SameSite=Strict, which modern browsers honour; these checks hold without
relying on it:

- **JSON only.** Every state-changing request (POST, PUT, PATCH, DELETE) must say
  ``Content-Type: application/json`` (any charset), else 415 ``unsupported_media_type``. A page
  on another site can send a cross-site form or a ``text/plain`` fetch without asking the
  server, but not a JSON one (that needs a CORS preflight, which central never grants). The one
  exception is the firmware upload, which is raw bytes (``application/octet-stream``). A
  request with an empty body (``curl -X POST …/logout``) carries nothing to misread and passes
  this check whatever it says; the Origin check below still applies to it.
- **Same origin.** A state-changing request that does not carry ``Authorization: Bearer`` (so a
  browser may have attached the cookie) and whose ``Origin`` — or, without one, ``Referer`` —
  names another host or port than the request's own ``Host`` gets 403 ``csrf`` (``Origin:
  null`` too). A request with neither header is not from a browser page (browsers send
  ``Origin`` on every cross-origin POST) and passes. The scheme is not compared, so a TLS
  proxy in front of central works as long as it passes the original ``Host`` header.
- **Headers.** Every answer carries a Content-Security-Policy that allows scripts from central
  only (no inline scripts, no eval) and no framing, ``X-Frame-Options: DENY``,
  ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: same-origin``.

Refusals are counted in ``shilian_central_auth_denied_total{reason="csrf"|"content_type"}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from central import auth, http

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Routes whose body is not JSON, with the one media type each accepts.
RAW_BODY_ROUTES = {("POST", "/api/v1/firmware"): "application/octet-stream"}

#: The dashboard loads everything from central itself; inline ``style`` attributes are kept
#: (charts set them), inline scripts are not (they are in files under /dashboard/static).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def foreign_origin(request: web.Request) -> str | None:
    """The ``Origin`` (else ``Referer``) of ``request`` when it is not central itself; None when
    it is, or when the request names neither."""
    claimed = request.headers.get("Origin") or request.headers.get("Referer")
    if claimed is None:
        return None
    parts = urlsplit(claimed)
    if claimed == "null" or parts.scheme not in ("http", "https") or not parts.netloc:
        return claimed
    return None if parts.netloc.lower() == request.host.lower() else claimed


def _bearer(request: web.Request) -> bool:
    return request.headers.get("Authorization", "")[:7].lower() == "bearer "


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else ""


def _denied(request: web.Request, reason: str) -> None:
    if auth.AUTH in request.app:
        request.app[auth.AUTH].denied.labels(reason).inc()


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.method not in STATE_CHANGING or request.match_info.http_exception is not None:
        return await handler(request)  # reads, and the JSON 404/405 of unknown routes
    wanted = RAW_BODY_ROUTES.get((request.method, _route(request)), "application/json")
    if request.content_type != wanted and request.body_exists:
        _denied(request, "content_type")
        raise http.ApiError(
            415,
            "unsupported_media_type",
            f"请求体类型应为 {wanted}（收到 {request.content_type[:60]}）",
            f"the body must be sent as Content-Type: {wanted} (got {request.content_type[:60]})",
        )
    if not _bearer(request) and (origin := foreign_origin(request)) is not None:
        _denied(request, "csrf")
        raise http.ApiError(
            403,
            "csrf",
            f"拒绝来自其他网站的请求（{origin[:80]}）：请在中心自己的页面上操作",
            f"refused a request from another site ({origin[:80]}): act from central's own pages",
        )
    return await handler(request)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the headers of :data:`SECURITY_HEADERS` on every answer."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def setup(app: web.Application) -> None:
    """Headers on every answer of ``app``; the middleware is :func:`guard`."""
    app.on_response_prepare.append(add_security_headers)
