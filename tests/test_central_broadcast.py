"""1:N broadcast at central (central.meeting_routes with ``mode: "broadcast"``,
central.broadcast_routes) against a real central and broker with a scripted node. What operators
rely on: a broadcast leg reaches the node as a broadcast (no camera), is audited as one, and the
broadcast page opens only for areas in the user's scope."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from shilian.broker import Mosquitto
from tests.test_central_meetings import OTHER_COUNTY, _as, _post, answering, site
from tests.test_central_service import NODE, VILLAGE, wait_for
from tests.test_wire_meeting import SDP


def _audit_details(svc: object, action: str) -> list[dict[str, object]]:
    path = svc.cfg.store.path  # type: ignore[attr-defined]
    with contextlib.closing(sqlite3.connect(path)) as c:
        rows = c.execute("SELECT detail FROM audit WHERE action = ? ORDER BY id", (action,))
        return [json.loads(r[0]) for r in rows.fetchall()]


async def test_a_broadcast_leg_reaches_the_node_as_one_and_is_audited(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with (
        site(broker, tmp_path, answering) as (svc, node, base),
        await _as(base, "op") as http,
    ):
        body = {"node_id": NODE, "sdp": SDP, "mode": "broadcast", "camera": "cam-road"}
        got = await _post(http, "/api/v1/meetings", body, 200)
        offer = node.requests[0]
        assert (offer.op, offer.mode, offer.camera) == ("offer", "broadcast", None)
        assert _audit_details(svc, "meeting_call")[-1]["mode"] == "broadcast"
        async with http.delete(f"/api/v1/meetings/{got['session']}") as r:
            assert r.status == 200
        await wait_for(lambda: node.ops() == ["offer", "hangup"], "node hung up")
        assert svc.meetings.calls == {}
        # an ordinary call still says so
        got = await _post(http, "/api/v1/meetings", {"node_id": NODE, "sdp": SDP}, 200)
        assert node.requests[-1].mode == "call"
        await http.delete(f"/api/v1/meetings/{got['session']}")
        err = await _post(http, "/api/v1/meetings", {**body, "mode": "shout"}, 400)
        assert err["error"]["code"] == "bad_body"


async def test_the_broadcast_page_opens_for_areas_in_scope_only(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with (
        site(broker, tmp_path, answering) as (_svc, _node, base),
        await _as(base, "op") as http,
    ):
        async with http.get(f"/dashboard/broadcast?code={VILLAGE[:9]}") as r:
            assert r.status == 200
            html = await r.text()
        assert '"code": "450102001"' in html and "broadcast.js" in html
        async with http.get(f"/dashboard/broadcast?code={OTHER_COUNTY}") as r:
            assert r.status == 403
        async with http.get("/dashboard/broadcast?code=4501020") as r:
            assert r.status == 400
            assert "code" in (await r.json())["error"]["message"]
        async with http.get("/dashboard/broadcast?code=450102001&lang=en") as r:
            assert "Video broadcast" in await r.text()
