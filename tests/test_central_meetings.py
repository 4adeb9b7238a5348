"""Meetings at central (central.meetings, central.meeting_routes) as a whole: the real central
service, a private mosquitto, and a scripted node (a real MQTT 5 client) that answers, refuses
or stays silent. What operators rely on: a call is relayed and answered; offline, out of scope,
busy, expired and malformed calls are clear zh/en errors; nothing is left half open; every
attempt is audited and each meeting is in the village's history."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

import wire
from central.db import Target
from central.meetings import (
    PREPARE_EXPIRY_S,
    PREPARE_WINDOW_S,
    PREPARES_PER_NODE,
    PREPARES_PER_USER,
    MeetingRefused,
    MeetingService,
)
from central.service import CentralService
from shilian.broker import Mosquitto
from tests.processes import add_user, login
from tests.test_central_service import NODE, VILLAGE, Node, central, make_cfg, wait_for
from tests.test_wire_meeting import SDP
from wire.meeting import MeetingReply, MeetingRequest

OTHER_COUNTY = "450103"

Script = Callable[[MeetingRequest], MeetingReply | None]


class VillageNode(Node):
    """A node that also takes meet/req and answers with ``script``."""

    def __init__(self, broker: Mosquitto, script: Script, node_id: str = NODE) -> None:
        super().__init__(broker, node_id)
        self.script = script
        self.requests: list[MeetingRequest] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.connect()
        assert self.client is not None
        await self.client.subscribe(self.topics.meet_req, qos=1)
        await self.health()
        self._task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        assert self.client is not None
        async for msg in self.client.messages:
            req = wire.decode(MeetingRequest, bytes(msg.payload))
            self.requests.append(req)
            reply = self.script(req)
            if reply is not None:
                await self.publish(self.topics.meet_res, wire.encode(reply))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        await self.close()

    def ops(self) -> list[str]:
        return [r.op for r in self.requests]


def answering(req: MeetingRequest) -> MeetingReply | None:
    if req.op == "offer":
        return MeetingReply(
            node=NODE, session=req.session, op="answer", ts=time.time(), sdp=SDP,
            camera=req.camera or "cam-gate",
        )  # fmt: skip
    if req.op == "camera":
        return MeetingReply(
            node=NODE, session=req.session, op="camera", ts=time.time(), camera=req.camera
        )
    return None


def busy(req: MeetingRequest) -> MeetingReply | None:
    err = wire.messages.CommandError(code="busy", message="本村正在通话中 / busy")
    return MeetingReply(node=NODE, session=req.session, op="busy", ts=time.time(), error=err)


def silent(req: MeetingRequest) -> MeetingReply | None:
    return None


@contextlib.asynccontextmanager
async def site(
    broker: Mosquitto, tmp_path: Path, script: Script, online: bool = True
) -> AsyncIterator[tuple[CentralService, VillageNode, str]]:
    cfg = make_cfg(broker, tmp_path)
    for name, role, scope in (
        ("op", "operator", VILLAGE[:6]),
        ("far", "operator", OTHER_COUNTY),
        ("view", "viewer", ""),
    ):
        add_user(cfg.store.path, name, role, scope, password=f"pw-{name}-0123")
    node = VillageNode(broker, script)
    async with central(cfg) as svc:
        await node.start()
        await wait_for(lambda: svc.coverage.node_online(NODE) is True, "node online")
        if not online:
            await node.publish(node.topics.state, node.state("offline", "stopped"), retain=True)
            await wait_for(lambda: svc.coverage.node_online(NODE) is False, "node offline")
        try:
            yield svc, node, f"http://127.0.0.1:{svc.http_port}"
        finally:
            await node.stop()


async def _as(base: str, user: str) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True))
    await login(http, user, f"pw-{user}-0123")
    return http


async def _post(http: aiohttp.ClientSession, path: str, body: Any, status: int) -> Any:
    async with http.post(path, json=body) as r:
        data = await r.json()
        assert r.status == status, data
        return data


def _audit(svc: CentralService) -> list[tuple[str, str, str, str]]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(svc.cfg.store.path)) as c:
        rows = c.execute(
            "SELECT user, action, target, outcome FROM audit WHERE action LIKE 'meeting%'"
            " ORDER BY id"
        ).fetchall()
    return [tuple(r) for r in rows]


async def test_call_answered_switched_measured_and_hung_up(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with (
        site(broker, tmp_path, answering) as (svc, node, base),
        await _as(base, "op") as http,
    ):
        got = await _post(
            http, "/api/v1/meetings", {"node_id": NODE, "sdp": SDP, "camera": "cam-road"}, 200
        )
        assert got["sdp"] == SDP and got["camera"] == "cam-road" and got["node"] == NODE
        session = got["session"]
        offer = node.requests[0]
        assert (offer.op, offer.session, offer.sdp, offer.camera) == (
            "offer", session, SDP, "cam-road",
        )  # fmt: skip
        await _post(http, f"/api/v1/meetings/{session}/camera", {"camera": "cam-gate"}, 200)
        await wait_for(lambda: svc.meetings.calls[session].camera == "cam-gate", "switched")
        stats = {"rtt_ms": 3.5, "frames_decoded": 250, "loss_pct": 0.0, "junk": "x"}
        rec = await _post(http, f"/api/v1/meetings/{session}/stats", stats, 200)
        assert rec["stats"] == {"rtt_ms": 3.5, "frames_decoded": 250.0, "loss_pct": 0.0}
        assert rec["state"] == "active"
        async with http.delete(f"/api/v1/meetings/{session}") as r:
            assert r.status == 200
            ended = await r.json()
        assert ended["state"] == "ended" and ended["end_reason"] == "hangup_local"
        await wait_for(lambda: node.ops() == ["offer", "camera", "hangup"], "node hung up")
        assert svc.meetings.calls == {}
        async with http.get(f"/api/v1/meetings?village={VILLAGE}") as r:
            hist = await r.json()
        assert hist["total"] == 1 and hist["meetings"][0]["session"] == session
        assert hist["meetings"][0]["user"] == "op"
        assert hist["meetings"][0]["camera"] == "cam-gate"
        assert _audit(svc) == [
            ("op", "meeting_call", NODE, "ok"),
            ("op", "meeting_camera", NODE, "ok"),
            ("op", "meeting_hangup", NODE, "ok"),
        ]


async def test_node_hangs_up(broker: Mosquitto, tmp_path: Path) -> None:
    async with (
        site(broker, tmp_path, answering) as (svc, node, base),
        await _as(base, "op") as http,
    ):
        got = await _post(http, "/api/v1/meetings", {"node_id": NODE, "sdp": SDP}, 200)
        bye = MeetingReply(node=NODE, session=got["session"], op="hangup", ts=time.time())
        await node.publish(node.topics.meet_res, wire.encode(bye))
        await wait_for(lambda: svc.meetings.calls == {}, "call ended")
        async with http.get(f"/api/v1/meetings/{got['session']}") as r:
            rec = await r.json()
        assert rec["end_reason"] == "hangup_remote"


async def test_offline_node_out_of_scope_and_viewer_send_nothing(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with (
        site(broker, tmp_path, answering, online=False) as (svc, node, base),
        await _as(base, "op") as http,
    ):
        err = await _post(http, "/api/v1/meetings", {"node_id": NODE, "sdp": SDP}, 409)
        assert err["error"]["code"] == "node_offline"
        assert "离线" in err["error"]["message"] and "offline" in err["error"]["message"]
        async with await _as(base, "far") as http:
            err = await _post(http, "/api/v1/meetings", {"node_id": NODE, "sdp": SDP}, 403)
            assert err["error"]["code"] == "out_of_scope"
        async with await _as(base, "view") as http:
            err = await _post(http, "/api/v1/meetings", {"node_id": NODE, "sdp": SDP}, 403)
        await asyncio.sleep(0.3)  # let anything wrongly sent arrive
        assert node.requests == []
        assert ("op", "meeting_call", NODE, "node_offline") in _audit(svc)


async def test_malformed_offer_sends_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    async with (
        site(broker, tmp_path, answering) as (svc, node, base),
        await _as(base, "op") as http,
    ):
        bad = SDP.replace("a=candidate", "a=xcandidate")
        err = await _post(http, "/api/v1/meetings", {"node_id": NODE, "sdp": bad}, 400)
        assert err["error"]["code"] == "malformed_sdp"
        assert "ICE" in err["error"]["message"]
        await asyncio.sleep(0.3)
        assert node.requests == [] and svc.meetings.calls == {}


async def test_busy_node_is_a_clear_error_and_no_session_stays(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with site(broker, tmp_path, busy) as (svc, _node, base), await _as(base, "op") as http:
        err = await _post(http, "/api/v1/meetings", {"node_id": NODE, "sdp": SDP}, 409)
        assert err["error"]["code"] == "busy" and "通话中" in err["error"]["message"]
        assert svc.meetings.calls == {}
        async with http.get(f"/api/v1/meetings?village={VILLAGE}") as r:
            rec = (await r.json())["meetings"][0]
        assert rec["end_reason"] == "busy"


async def test_second_call_to_a_node_in_a_call_is_busy_at_central(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with (
        site(broker, tmp_path, answering) as (_svc, node, base),
        await _as(base, "op") as http,
    ):
        await _post(http, "/api/v1/meetings", {"node_id": NODE, "sdp": SDP}, 200)
        err = await _post(http, "/api/v1/meetings", {"node_id": NODE, "sdp": SDP}, 409)
        assert err["error"]["code"] == "busy"
        assert node.ops() == ["offer"]


async def test_unanswered_offer_expires_and_a_late_answer_is_hung_up(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with site(broker, tmp_path, silent) as (svc, node, base):
        svc.meetings.offer_expiry_s = 1.0
        async with await _as(base, "op") as http:
            err = await _post(http, "/api/v1/meetings", {"node_id": NODE, "sdp": SDP}, 504)
            assert err["error"]["code"] == "expired" and "接听" in err["error"]["message"]
            await wait_for(lambda: node.ops() == ["offer", "hangup"], "hang-up after expiry")
            assert svc.meetings.calls == {}
            late = MeetingReply(
                node=NODE, session=node.requests[0].session, op="answer", ts=time.time(), sdp=SDP
            )
            await node.publish(node.topics.meet_res, wire.encode(late))
            await wait_for(lambda: node.ops() == ["offer", "hangup", "hangup"], "late answer")
            async with http.get(f"/api/v1/meetings?village={VILLAGE}") as r:
                rec = (await r.json())["meetings"][0]
            assert rec["end_reason"] == "expired" and rec["answered"] is None


async def test_abandoned_request_hangs_up(broker: Mosquitto, tmp_path: Path) -> None:
    async with site(broker, tmp_path, silent) as (svc, node, base), await _as(base, "op") as http:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await _post(http, "/api/v1/meetings", {"node_id": NODE, "sdp": SDP}, 200)
        await wait_for(lambda: node.ops() == ["offer", "hangup"], "hang-up on abandon")
        await wait_for(lambda: svc.meetings.calls == {}, "no session left")
        # the operator went away before the node's time to answer was up: the record says so,
        # not that the node failed to answer
        async with http.get(f"/api/v1/meetings?village={VILLAGE}") as r:
            rec = (await r.json())["meetings"][0]
        assert rec["end_reason"] == "hangup_local" and rec["answered"] is None


def test_pages_get_the_countys_turn_server_with_short_lived_credentials(tmp_path: Path) -> None:
    import base64
    import hashlib
    import hmac

    from central.config import MeetingsConfig
    from central.meetings import MeetingService

    for bad in (
        {"turn_urls": ["stun:10.0.0.1"], "turn_secret": "s"},
        {"turn_urls": ["turn:10.0.0.1:3478"]},  # no secret
        {"relay_only": True},  # nothing to relay through
    ):
        with pytest.raises(ValueError):
            MeetingsConfig.model_validate(bad)

    def service(ice: MeetingsConfig | None) -> MeetingService:
        db = tmp_path / "m.db"
        return MeetingService(lambda *_: None, lambda _: True, db, lambda: 1000.0, ice)

    plain = service(None)
    assert plain.page_ice("op") == {"iceServers": [], "iceTransportPolicy": "all"}
    plain.close()
    county = MeetingsConfig(
        turn_urls=["turn:10.0.0.1:3478?transport=udp"], turn_secret="north", turn_ttl_s=600,
        relay_only=True,
    )  # fmt: skip
    svc = service(county)
    ice = svc.page_ice("op")
    svc.close()
    (server,) = ice["iceServers"]
    assert ice["iceTransportPolicy"] == "relay"
    assert server["urls"] == ["turn:10.0.0.1:3478?transport=udp"]
    assert server["username"] == "1600:op"  # valid until now + turn_ttl_s (coturn REST API)
    mac = hmac.new(b"north", b"1600:op", hashlib.sha1).digest()
    assert server["credential"] == base64.b64encode(mac).decode()


async def test_after_a_crash_calls_never_answered_or_not_confirmed_are_ended(
    db_target: Target,
) -> None:
    """The records a crash left open, settled without a node that answers: an offer never
    answered is ended at once, an answered call whose node stays silent when the wait is over;
    both nodes are told to hang up."""
    from central.meeting_store import MeetingStore
    from central.meetings import MeetingService
    from wire.meeting import Call

    db = db_target
    store = MeetingStore(db)
    offered, answered = Call("a" * 32, NODE, 10.0), Call("b" * 32, NODE, 20.0)
    store.started(offered, None, "op")
    store.started(answered, "cam-gate", "op")
    answered.answered_at = 21.0
    store.update(answered)
    store.close()
    sent: list[tuple[str, MeetingRequest]] = []

    def publish(topic: str, payload: bytes, _expiry: int) -> None:
        sent.append((topic, wire.decode(MeetingRequest, payload)))

    svc = MeetingService(publish, lambda _: True, db, lambda: 100.0)
    svc.link_up()
    out = await svc.reconcile(wait_s=0.2)
    assert out == {"a" * 32: "central_restarted", "b" * 32: "central_restarted"}
    assert [(r.session[0], r.op) for _t, r in sent] == [("b", "status"), ("b", "hangup"),
                                                       ("a", "hangup")]  # fmt: skip
    recs = {s: await svc.get(s) for s in ("a" * 32, "b" * 32)}
    assert all(r is not None and r["end_reason"] == "central_restarted" for r in recs.values())
    assert "did not answer" in (recs["b" * 32] or {})["detail"]
    assert "not answered" in (recs["a" * 32] or {})["detail"]
    assert svc.calls == {} and await svc.reconcile() == {}  # settled once
    svc.close()


def test_the_records_of_a_call_on_either_backend(db_target: Target) -> None:
    from central.meeting_store import MeetingStore
    from wire.meeting import Call, Ended, EndReason

    store = MeetingStore(db_target)
    try:
        call = Call("c" * 32, NODE, 10.0)
        store.started(call, None, "张三")
        store.started(Call("d" * 32, NODE, 5.0), "cam-b", None)
        call.camera, call.answered_at = "cam-gate", 11.0
        store.update(call)
        assert store.set_stats(call.session, {"rtt_ms": 40.0})
        assert not store.set_stats("e" * 32, {"rtt_ms": 1.0})
        rec = store.get(call.session)
        assert rec is not None
        assert (rec["user"], rec["camera"], rec["state"], rec["stats"]) == (
            "张三", "cam-gate", "active", {"rtt_ms": 40.0},
        )  # fmt: skip
        call.ended_at, call.end = 30.0, Ended(EndReason.HANGUP_LOCAL)
        store.update(call)
        store.end("d" * 32, EndReason.CENTRAL_RESTARTED, "x" * 2000, 40.0)
        total, rows = store.history(NODE[:12], 10, 0)
        assert total == 2 and [(r["session"][0], r["state"]) for r in rows] == [
            ("c", "ended"), ("d", "ended"),
        ]  # fmt: skip
        assert len(rows[1]["detail"]) == 1000 and store.unfinished() == []
    finally:
        store.close()


async def test_a_prepare_is_relayed_scoped_rate_limited_and_audited(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with (
        site(broker, tmp_path, silent) as (svc, node, base),
        await _as(base, "op") as http,
    ):
        body = {"node_id": NODE, "camera": "cam-road"}
        got = await _post(http, "/api/v1/meetings/prepare", body, 202)
        assert got == {"node": NODE, "camera": "cam-road"}
        await wait_for(lambda: node.ops() == ["prepare"], "prepare relayed")
        assert node.requests[0].camera == "cam-road"
        for _ in range(PREPARES_PER_NODE - 1):
            await _post(http, "/api/v1/meetings/prepare", {"node_id": NODE}, 202)
        err = await _post(http, "/api/v1/meetings/prepare", {"node_id": NODE}, 429)
        assert err["error"]["code"] == "rate_limited"
        assert "频繁" in err["error"]["message"] and "too many" in err["error"]["message"]
        async with await _as(base, "far") as far:
            err = await _post(far, "/api/v1/meetings/prepare", {"node_id": NODE}, 403)
            assert err["error"]["code"] == "out_of_scope"
        async with await _as(base, "view") as view:
            await _post(view, "/api/v1/meetings/prepare", {"node_id": NODE}, 403)
        await asyncio.sleep(0.3)  # let anything wrongly sent arrive
        assert node.ops() == ["prepare"] * PREPARES_PER_NODE
        assert svc.meetings.calls == {}  # a prepare is no call
        prepares = [a for a in _audit(svc) if a[1] == "meeting_prepare"]
        assert prepares == [("op", "meeting_prepare", NODE, "ok")] * PREPARES_PER_NODE + [
            ("op", "meeting_prepare", NODE, "rate_limited")
        ]


def test_prepares_are_limited_per_user_and_per_node_in_a_sliding_window(tmp_path: Path) -> None:
    sent: list[tuple[str, bytes, int]] = []
    now = [1000.0]
    svc = MeetingService(
        lambda topic, payload, expiry: sent.append((topic, payload, expiry)),
        lambda node: True,
        tmp_path / "m.db",
        time.time,
        mono=lambda: now[0],
    )
    try:
        nodes = [f"45010200100{i}-a" for i in range(PREPARES_PER_USER + 1)]
        for n in nodes[:PREPARES_PER_USER]:
            svc.prepare(n, None, "op")
        with pytest.raises(MeetingRefused) as e:  # one user: not every village of a county
            svc.prepare(nodes[-1], None, "op")
        assert (e.value.status, e.value.code) == (429, "rate_limited")
        svc.prepare(nodes[-1], None, "other")  # another operator is not held up
        for _ in range(PREPARES_PER_NODE - 1):
            svc.prepare(nodes[-1], "cam-road", "other2")
        with pytest.raises(MeetingRefused):  # one node: not by every operator at once
            svc.prepare(nodes[-1], None, "other3")
        now[0] += PREPARE_WINDOW_S
        svc.prepare(nodes[-1], None, "op")  # the window moved on
        assert len(sent) == PREPARES_PER_USER + PREPARES_PER_NODE + 1
        req = wire.decode(MeetingRequest, sent[-1][1])
        assert (req.op, req.camera, sent[-1][0], sent[-1][2]) == (
            "prepare", None, wire.Topics(nodes[-1]).meet_req, PREPARE_EXPIRY_S,
        )  # fmt: skip
    finally:
        svc.close()
