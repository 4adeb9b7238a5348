"""HTTP routes of alarm snapshots (docs/api.md), scoped like the alarm they belong to:

- ``GET /api/v1/alarms/{event_id}/snapshots``: the pictures of one alarm (camera, zone, when
  taken, size) with the URL of each;
- ``GET /api/v1/alarms/{event_id}/snapshots/{camera}``: one picture, ``image/jpeg``.

A user whose scope does not hold the alarm's village gets 403, as for acknowledging it.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from central import alarms, auth, http, snapshots

_CAMERA = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
#: Pictures never change once stored (a second one for the same alarm and camera is ignored):
#: the browser may keep them.
CACHE_CONTROL = "private, max-age=86400, immutable"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/alarms/{event_id}/snapshots", list_snapshots)
    app.router.add_get("/api/v1/alarms/{event_id}/snapshots/{camera}", snapshot_jpeg)


async def _alarm(request: web.Request) -> dict[str, Any]:
    raw = request.match_info["event_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise _unknown_alarm(raw)
    event_id = int(raw)
    alarm = await request.app[http.READS].run(lambda c: alarms.get_alarm(c, event_id))
    if alarm is None:
        raise _unknown_alarm(raw)
    auth.check_scope(request, alarm["village"])
    return alarm


def _unknown_alarm(raw: str) -> http.ApiError:
    return http.ApiError(
        404, "unknown_alarm", f"没有编号为 {raw[:40]} 的报警", f"no alarm with id {raw[:40]}"
    )


async def list_snapshots(request: web.Request) -> web.Response:
    http.params(request, ())
    a = await _alarm(request)
    rows = await request.app[http.READS].run(
        lambda c: snapshots.for_alarm(c, a["node_id"], a["boot_id"], a["seq"])
    )
    for r in rows:
        r["url"] = f"/api/v1/alarms/{a['id']}/snapshots/{r['camera']}"
    return http.ok({"alarm": a["id"], "snapshots": rows})


async def snapshot_jpeg(request: web.Request) -> web.Response:
    http.params(request, ())
    camera = request.match_info["camera"]
    a = await _alarm(request)
    jpeg = b""
    if _CAMERA.match(camera):
        jpeg = await request.app[http.READS].run(
            lambda c: snapshots.jpeg_of(c, a["node_id"], a["boot_id"], a["seq"], camera)
        )
    if not jpeg:
        raise http.ApiError(
            404,
            "no_snapshot",
            f"报警 {a['id']} 没有摄像机 {camera[:64]} 的抓拍",
            f"alarm {a['id']} has no snapshot from camera {camera[:64]}",
        )
    return web.Response(
        body=jpeg, content_type="image/jpeg", headers={"Cache-Control": CACHE_CONTROL}
    )
