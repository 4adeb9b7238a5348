"""The 1:N broadcast page (docs/meetings.md "1:N"): ``GET /dashboard/broadcast?code=&lang=``.

A broadcast is one WebRTC leg per village, each made by the page through
``POST /api/v1/meetings`` with ``mode: "broadcast"`` (central.meeting_routes): so every village
is scope-checked, audited (``meeting_call`` with ``mode``) and refused on its own (offline,
busy, out of scope) with a zh/en reason, without failing the others. Central relays signalling
only; the operator's media goes from the browser to each village directly (the measured choice
in docs/meetings.md).
"""

from __future__ import annotations

import json

from aiohttp import web

from central import assets, auth, http, i18n
from central.meeting_routes import MEETINGS

#: Villages one broadcast addresses at most. The page encodes and sends one stream per village:
#: measured ~2.5-3 % of a core and 0.15-0.2 Mbit/s (fake camera, 640x360 at 15 fps) more per
#: village (docs/meetings.md "1:N"), so 32 stay under one core and ~20 Mbit/s with a real
#: camera's busier picture; a bigger audience is split into several broadcasts.
MAX_VILLAGES = 32


def add_routes(app: web.Application) -> None:
    app.router.add_get("/dashboard/broadcast", page)


async def page(request: web.Request) -> web.Response:
    """The broadcast page for ``?code=`` (a county, township or village code; absent: every
    node in the user's scope). The villages listed are those of /api/v1/nodes (scope applied)."""
    q = http.params(request, ("code", "lang"))
    code = q.get("code") or ""
    if code and not (code.isdigit() and len(code) in (4, 6, 9, 12)):
        raise http.ApiError(
            400, "bad_param", "code 应为 4/6/9/12 位区划代码", "code must be a 4/6/9/12-digit code"
        )
    lang = i18n.language(q.get("lang"))
    strings = i18n.strings(lang)
    boot = {"lang": lang, "code": code, "max": MAX_VILLAGES, "strings": strings}
    # Every leg's RTCConfiguration: the county's TURN server, as on the meeting page.
    boot["ice"] = request.app[MEETINGS].page_ice(auth.principal(request).user)
    # No "<" inside the inline JSON: nothing in it can end its <script> element.
    payload = json.dumps(boot, ensure_ascii=False).replace("<", "\\u003c")
    html = (assets.ASSETS / "broadcast.html").read_text(encoding="utf-8")
    body = (
        html.replace("{{lang}}", lang)
        .replace("{{title}}", strings["broadcast_title"])
        .replace("{{boot}}", payload)
    )
    return web.Response(
        text=body, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-cache"}
    )
