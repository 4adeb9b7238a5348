"""Central's HTTP application: the middlewares, the shared keys and every route module mounted
on one aiohttp app. The dashboard, reports, alert and device routes are added by
central.service, which owns the objects they serve."""

from __future__ import annotations

import asyncio

from aiohttp import web

from central import alarms, api, auth, browser_guard, openapi, slow_clients, user_routes, views
from central.http import CTX, MAX_BODY_BYTES, READS, ApiContext, json_errors, setup_db_errors


def make_app(ctx: ApiContext) -> web.Application:
    """The API application; its read pool is closed on the app's cleanup. Every route needs a
    login unless central.auth lists it as public (routes added later included)."""
    app = web.Application(
        middlewares=[
            json_errors,
            browser_guard.guard,
            auth.require_login,
            slow_clients.body_deadline,
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    browser_guard.setup(app)
    slow_clients.setup(app, ctx.metrics_registry, ctx.body_timeout_s)
    setup_db_errors(app, ctx.metrics_registry)
    app[CTX] = ctx
    auth.setup(app, ctx, ctx.clock)
    app[READS] = views.ReadViews(ctx.db_target)

    async def close_reads(app: web.Application) -> None:
        await asyncio.to_thread(app[READS].close)

    app.on_cleanup.append(close_reads)
    api.add_routes(app)
    alarms.add_routes(app)
    user_routes.add_routes(app)
    openapi.add_routes(app)
    return app
