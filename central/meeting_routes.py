"""HTTP routes of meetings (docs/api.md, docs/meetings.md):

- ``POST /api/v1/meetings`` ``{node_id, sdp, camera?, mode?}``: call a node with the page's
  complete offer; answers ``{session, node, camera, sdp}`` (the node's answer) once the node
  answered. ``mode: "broadcast"`` is one village's leg of a 1:N broadcast.
- ``POST /api/v1/meetings/prepare`` ``{node_id, camera?}``: the meeting page opened (or the
  operator chose another camera): the node opens that camera now so the call starts at once
  (202; it lingers there a minute without a call). Rate-limited per user and per node (429).
- ``DELETE /api/v1/meetings/{session}``: hang up; answers the meeting record.
- ``POST /api/v1/meetings/{session}/camera`` ``{camera}``: switch the call's camera.
- ``POST /api/v1/meetings/{session}/stats`` ``{rtt_ms, loss_pct, bitrate_kbps, frames_decoded,
  …}``: the page's getStats figures, stored with the record.
- ``GET /api/v1/meetings/{session}``, ``GET /api/v1/meetings?village=&limit=&offset=``: one
  record, a village's history (newest first).
- ``GET /dashboard/meeting?node=&lang=``: the meeting page (central/dashboard/meeting.html).

Calling, preparing, hanging up, switching and posting stats need an operator (or admin) whose
scope holds the node's village; reading needs a viewer in scope. Every call attempt, prepare and
hang-up is audited with its outcome.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from central import assets, auth, http, i18n, views
from central.meetings import MeetingRefused, MeetingService
from wire.meeting import MAX_SDP_CHARS, OFFER_EXPIRY_S, MeetingMode

MEETINGS: web.AppKey[MeetingService] = web.AppKey("meetings", MeetingService)
#: History page sizes: a village has a few meetings a week; the cap bounds one answer.
DEFAULT_PAGE = 50
MAX_PAGE = 500
#: The HTTP answer waits for the node at most the offer's expiry plus this margin.
ANSWER_GRACE_S = 2.0

_SESSION = r"^[0-9a-f]{32}$"
_CAMERA = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class CallBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str = Field(max_length=40, description="the node to call")
    sdp: str = Field(max_length=MAX_SDP_CHARS, description="the page's complete offer")
    camera: str | None = Field(default=None, pattern=_CAMERA, description="camera device id")
    mode: MeetingMode = Field(
        default="call",
        description="call: see the village's camera; broadcast: one village's leg of a 1:N "
        "broadcast (the village receives the operator's media and sends none)",
    )


class PrepareBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str = Field(max_length=40, description="the node whose meeting page is open")
    camera: str | None = Field(
        default=None, pattern=_CAMERA, description="camera device id (absent: the default)"
    )


class CameraBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    camera: str = Field(pattern=_CAMERA)


def add_routes(app: web.Application, service: MeetingService) -> None:
    app[MEETINGS] = service
    app.router.add_post("/api/v1/meetings", call)
    app.router.add_post("/api/v1/meetings/prepare", prepare)
    app.router.add_get("/api/v1/meetings", history)
    app.router.add_get("/api/v1/meetings/{session}", meeting)
    app.router.add_delete("/api/v1/meetings/{session}", hang_up)
    app.router.add_post("/api/v1/meetings/{session}/camera", camera)
    app.router.add_post("/api/v1/meetings/{session}/stats", stats)
    app.router.add_get("/dashboard/meeting", page)


def _body(raw: bytes, model: type[BaseModel]) -> Any:
    data = http.json_body(raw)  # bounded depth: a deeply nested body is a 400, not a 500
    try:
        return model.model_validate(data)
    except ValidationError as e:
        where = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()
        )
        raise http.ApiError(
            400, "bad_body", f"请求体字段无效：{where}", f"invalid body: {where}"
        ) from None


def _refused(e: MeetingRefused) -> http.ApiError:
    return http.ApiError(e.status, e.code, e.zh, e.en)


async def _record(request: web.Request) -> dict[str, Any]:
    session = request.match_info["session"]
    rec = await request.app[MEETINGS].get(session) if re.match(_SESSION, session) else None
    if rec is None:
        raise http.ApiError(404, "no_meeting", "没有这个通话", f"no meeting {session[:40]!r}")
    auth.check_scope(request, rec["village"])
    return rec


async def call(request: web.Request) -> web.Response:
    http.params(request, ())
    body: CallBody = _body(await request.read(), CallBody)
    node_id = await _node_in_scope(request, body.node_id)
    service = request.app[MEETINGS]
    user = auth.principal(request).user
    outcome = "ok"
    try:
        async with asyncio.timeout(OFFER_EXPIRY_S + ANSWER_GRACE_S):
            # a page closed while the node is asked hangs up at once, not at the offer's expiry
            got = await http.unless_client_gone(
                request, service.call(node_id, body.sdp, body.camera, user, body.mode)
            )
    except http.ClientGone:
        outcome = "abandoned"  # nobody reads the answer; the status is for the access log
        raise http.ApiError(
            499, "client_closed", "页面已关闭，呼叫已挂断", "the page closed; the call was hung up"
        ) from None
    except MeetingRefused as e:
        outcome = e.code
        raise _refused(e) from None
    except TimeoutError:
        outcome = "expired"
        raise http.ApiError(
            504, "expired", f"节点 {node_id} 未及时接听", f"node {node_id} did not answer"
        ) from None
    finally:
        await asyncio.shield(
            auth.audit(
                request, "meeting_call", node_id, outcome, camera=body.camera, mode=body.mode
            )
        )
    return http.ok({"session": got.session, "node": node_id, "camera": got.camera, "sdp": got.sdp})


async def prepare(request: web.Request) -> web.Response:
    http.params(request, ())
    body: PrepareBody = _body(await request.read(), PrepareBody)
    node_id = await _node_in_scope(request, body.node_id)
    outcome = "ok"
    try:
        request.app[MEETINGS].prepare(node_id, body.camera, auth.principal(request).user)
    except MeetingRefused as e:
        outcome = e.code
        raise _refused(e) from None
    finally:
        await auth.audit(request, "meeting_prepare", node_id, outcome, camera=body.camera)
    return http.ok({"node": node_id, "camera": body.camera}, status=202)


async def _node_in_scope(request: web.Request, raw: str) -> str:
    """The body's node id, checked before anything is sent (a 403 or 404 leaves no trace)."""
    node_id = http.node_id_param(raw)
    if node_id is None:
        raise http.ApiError(400, "bad_body", "请指定节点 node_id", "node_id is required")
    auth.check_scope(request, node_id[:12])
    if not await request.app[http.READS].run(lambda c: _node_exists(c, node_id)):
        raise http.ApiError(404, "unknown_node", f"没有节点 {node_id}", f"no node {node_id}")
    return node_id


def _node_exists(conn: Any, node_id: str) -> bool:
    return bool(views.node_exists(conn, node_id))


async def hang_up(request: web.Request) -> web.Response:
    http.params(request, ())
    rec = await _record(request)
    after = await request.app[MEETINGS].hang_up(rec["session"])
    await auth.audit(request, "meeting_hangup", rec["node"], "ok", session=rec["session"])
    return http.ok(after)


async def camera(request: web.Request) -> web.Response:
    http.params(request, ())
    rec = await _record(request)
    body: CameraBody = _body(await request.read(), CameraBody)
    outcome = "ok"
    try:
        await request.app[MEETINGS].switch(rec["session"], body.camera)
    except MeetingRefused as e:
        outcome = e.code
        raise _refused(e) from None
    finally:
        await auth.audit(
            request, "meeting_camera", rec["node"], outcome, session=rec["session"],
            camera=body.camera,
        )  # fmt: skip
    return http.ok({"session": rec["session"], "camera": body.camera})


async def stats(request: web.Request) -> web.Response:
    http.params(request, ())
    rec = await _record(request)
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise http.ApiError(400, "bad_json", "请求体应为 JSON 对象", "body must be a JSON object")
    await request.app[MEETINGS].record_stats(rec["session"], data)
    return http.ok(await request.app[MEETINGS].get(rec["session"]))


async def meeting(request: web.Request) -> web.Response:
    http.params(request, ())
    return http.ok(await _record(request))


async def history(request: web.Request) -> web.Response:
    q = http.params(request, ("village", "limit", "offset"))
    village = http.digits(q, "village", 12)
    if village is None:
        raise http.ApiError(
            400, "bad_param", "请给出 village（12 位村代码）", "give village (12-digit code)"
        )
    limit = http.int_param(q, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    offset = http.int_param(q, "offset", 0, 0, 2**31)
    total, rows = await request.app[MEETINGS].history(village, limit, offset)
    return http.ok({"village": village, "total": total, "meetings": rows})


async def page(request: web.Request) -> web.Response:
    """The meeting page for ``?node=`` (its village in the user's scope: central.auth)."""
    q = http.params(request, ("node", "lang"))
    node_id = http.node_id_param(q.get("node"))
    if node_id is None:
        raise http.ApiError(400, "bad_param", "请给出 node（节点编号）", "give node (a node id)")
    lang = i18n.language(q.get("lang"))
    strings = i18n.strings(lang)
    boot = {"lang": lang, "node": node_id, "strings": strings}
    # The page's RTCConfiguration: TURN credentials are per user and short-lived.
    boot["ice"] = request.app[MEETINGS].page_ice(auth.principal(request).user)
    # No "<" inside the inline JSON: nothing in it can end its <script> element.
    payload = json.dumps(boot, ensure_ascii=False).replace("<", "\\u003c")
    html = (assets.ASSETS / "meeting.html").read_text(encoding="utf-8")
    title = strings["meeting_title"].replace("{node}", node_id)
    body = html.replace("{{lang}}", lang).replace("{{title}}", title).replace("{{boot}}", payload)
    return web.Response(
        text=body, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-cache"}
    )
