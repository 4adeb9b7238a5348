"""Who is asking, for the dashboard's routes (alerts, reports, history).

Logins, roles and county scope are enforced for every route by central.auth's middleware (GET:
viewer; changing alert rules: admin by its default rule; ``code`` query parameters must lie in
the user's scope). The handlers here only need the user's name (recorded with a rule change)
and the scope prefix to narrow an unfiltered list to. On an app without auth set up (a test
app) everyone is ``api`` with no narrowing.
"""

from __future__ import annotations

from aiohttp import web

from central import auth
from central.accounts import Role
from central.dashboard import HUB
from central.live import Message


def caller(request: web.Request) -> tuple[str, str | None]:
    """(user name, scope prefix to narrow lists to, or None for everything)."""
    if auth.AUTH not in request.app:
        return "api", None
    return auth.principal(request).user, auth.list_scope(request)


def is_admin(request: web.Request) -> bool:
    """The caller is an administrator (everyone is, on an app without auth set up)."""
    if auth.AUTH not in request.app:
        return True
    return auth.principal(request).role >= Role.admin


def check_scope(request: web.Request, code: str) -> None:
    """403 ``out_of_scope`` unless ``code`` ("": the whole registry) is in the caller's scope."""
    if auth.AUTH in request.app:
        auth.check_scope(request, code)


async def audit(
    request: web.Request, action: str, target: str, outcome: str, **detail: object
) -> None:
    """An audit row for the caller's change (none on an app without auth set up)."""
    if auth.AUTH in request.app:
        await auth.audit(request, action, target, outcome, **detail)


def announce(request: web.Request, what: str) -> None:
    """Tell the open admin pages that ``what`` ("rules", "webhooks", "users") changed, so they
    re-read it (a ``admin`` message on the live stream, sent to admins only)."""
    if HUB in request.app:
        by, _ = caller(request)
        request.app[HUB].publish([Message("admin", {"what": what, "by": by})])
