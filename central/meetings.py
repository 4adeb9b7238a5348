"""Meetings, central's side: relays an operator's WebRTC offer to a node and its answer back
(docs/meetings.md, wire contract in docs/protocol.md "meet/req and meet/res").

Central never touches media: the operator's browser and the node's agent exchange it directly
(host candidates on the government network, or the node's TURN server). Central authorises
(central.meeting_routes), keeps one :class:`wire.meeting.Call` per session and a record per
meeting in SQLite (table ``meetings``: who called which node, when it was answered and ended,
why, and the quality the page reported from getStats). A call record is written before the
offer is sent and updated when it ends. Media does not pass through central, so a call can
outlive central: when central is stopped (SIGTERM) it hangs up every call and ends its record
``central_stopped``; after a crash (SIGKILL, power cut) the next start finds records without an
end and reconciles them (:meth:`MeetingService.reconcile`): an answered call whose node says it
is still in that session is taken up again (the operator can hang it up, the node's hang-up is
recorded); every other one is ended ``central_restarted`` (and the node told to hang up).

No half-open session: an offer that is not answered in 30 s, a request the operator abandoned
(closed page, cancelled HTTP request) and an answer that arrives after either are all followed by
a ``hangup`` to the node.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from central.accounts import Throttle
from central.config import MeetingsConfig
from central.db import Target
from central.link import Inbound
from central.meeting_store import MeetingStore
from wire import Kind, RemoteWireError, Topics, decode, encode, parse_topic
from wire.meeting import (
    OFFER_EXPIRY_S,
    Answered,
    Call,
    Ended,
    EndReason,
    MeetingMode,
    MeetingReply,
    MeetingRequest,
    Receiving,
    Switched,
    turn_rest_credentials,
)

log = logging.getLogger("shilian.central.meetings")

#: Calls in progress at once. A county has a few hundred villages and a handful of operators;
#: beyond this central refuses rather than hold unbounded state for abandoned pages.
MAX_CALLS = 256
#: Session ids are 16 random bytes (32 hex digits, the wire's SessionId).
SESSION_BYTES = 16
#: Keys of the quality figures a page may post (from RTCPeerConnection.getStats); anything else
#: is dropped so a page cannot grow a record without bound.
STAT_KEYS = (
    "rtt_ms",
    "packets_lost",
    "loss_pct",
    "bitrate_kbps",
    "frames_decoded",
    "frames_dropped",
    "jitter_ms",
    "width",
    "height",
    "fps",
    "first_frame_ms",
    "audio_frames",  # a broadcast leg: reported by the node (MeetingReply "received")
)

#: How long central waits, after a restart, for nodes to say whether they are still in the calls
#: its records leave open: as long as an offer may wait for an answer (a node reconnecting after
#: an outage that took central down too needs a while to be back).
STATUS_WAIT_S = OFFER_EXPIRY_S

#: Prepares (an operator opened a village's meeting page: its camera is opened ahead of the
#: call and lingers ~60 s at the node) per user and per node in a sliding window: enough for a
#: duty officer going through villages and switching cameras, not for a page or script keeping
#: every camera of a county open.
PREPARES_PER_USER = 6
PREPARES_PER_NODE = 4
PREPARE_WINDOW_S = 60.0
#: Prepares remembered per key: bounds any limit set on a service (tests, benchmarks).
PREPARE_KEEP = 64
#: A prepare reaching a node later than this is dropped there: the operator has called or left.
PREPARE_EXPIRY_S = 10

#: publish(topic, payload, expiry_s); raises ConnectionError when the broker link is down.
Publish = Callable[[str, bytes, int], None]


class MeetingRefused(Exception):
    """A call central will not make or that did not come about: HTTP status, stable code and
    a zh / en message."""

    def __init__(self, status: int, code: str, zh: str, en: str) -> None:
        super().__init__(f"{code}: {en}")
        self.status = status
        self.code = code
        self.zh = zh
        self.en = en


@dataclass(frozen=True, slots=True)
class Connected:
    session: str
    node_id: str
    sdp: str
    camera: str | None


class MeetingService:
    """Calls in progress, keyed by session; the records in :class:`MeetingStore`."""

    def __init__(
        self,
        publish: Publish,
        node_online: Callable[[str], bool | None],
        db_path: Target,
        clock: Callable[[], float],
        ice: MeetingsConfig | None = None,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock``: wall time, for the records; ``mono``: the prepare limit's window, which a
        step of the wall clock must not end or extend."""
        self._mono = mono
        self._publish = publish
        self._ice = ice or MeetingsConfig()
        self._node_online = node_online
        self._clock = clock
        self.store = MeetingStore(db_path)
        #: Records left without an end by a crash, until :meth:`reconcile` settles them.
        self.orphans = self.store.unfinished()
        self._status: dict[str, asyncio.Future[bool]] = {}
        self._link_up = asyncio.Event()
        self.calls: dict[str, Call] = {}
        self._waiting: dict[str, asyncio.Future[Answered | Ended]] = {}
        self._lock = asyncio.Lock()  # one writer on the store's connection
        self._updates: set[asyncio.Task[Any]] = set()
        #: How long an offer waits for the answer (the contract's 30 s; shorter in tests).
        self.offer_expiry_s = OFFER_EXPIRY_S
        #: Prepares sent, per ``user:NAME`` and ``node:ID`` (a sliding window of events), and
        #: how many each may send per window (raised by benchmarks, at most PREPARE_KEEP).
        self._prepares = Throttle(PREPARE_KEEP, PREPARE_WINDOW_S)
        self.prepare_limits = (PREPARES_PER_USER, PREPARES_PER_NODE)

    def close(self) -> None:
        self.store.close()

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self._lock:
            return await asyncio.to_thread(fn, *args)

    def page_ice(self, user: str) -> dict[str, Any]:
        """The RTCConfiguration a meeting page uses: no server (host candidates only), or the
        TURN server with credentials for ``user`` derived from its shared secret (coturn
        use-auth-secret) that expire after ``turn_ttl_s``."""
        ice = self._ice
        if not ice.turn_urls:
            return {"iceServers": [], "iceTransportPolicy": "all"}
        name, password = turn_rest_credentials(
            ice.turn_secret, user or "operator", self._clock(), ice.turn_ttl_s
        )
        return {
            "iceServers": [{"urls": list(ice.turn_urls), "username": name, "credential": password}],
            "iceTransportPolicy": "relay" if ice.relay_only else "all",
        }

    def _check_free(self, node_id: str) -> None:
        """:class:`MeetingRefused` unless ``node_id`` is online and not in a call."""
        if self._node_online(node_id) is not True:
            raise MeetingRefused(
                409, "node_offline", f"节点 {node_id} 离线，无法呼叫", f"node {node_id} is offline"
            )
        if self.busy_node(node_id) is not None:
            raise MeetingRefused(
                409, "busy", f"节点 {node_id} 正在通话中", f"node {node_id} is already in a call"
            )

    def busy_node(self, node_id: str) -> Call | None:
        return next((c for c in self.calls.values() if c.node_id == node_id), None)

    async def call(
        self,
        node_id: str,
        sdp: str,
        camera: str | None,
        user: str | None,
        mode: MeetingMode = "call",
    ) -> Connected:
        """Offer ``sdp`` to ``node_id`` and wait for its answer; :class:`MeetingRefused`
        otherwise. Cancelling this (the operator gave up) hangs the call up. ``mode``
        ``broadcast``: one village's leg of a 1:N broadcast (the node only receives)."""
        self._check_free(node_id)
        if len(self.calls) >= MAX_CALLS:
            raise MeetingRefused(503, "too_many_calls", "进行中的通话过多", "too many calls")
        now = self._clock()
        call = Call(os.urandom(SESSION_BYTES).hex(), node_id, now, self.offer_expiry_s)
        try:
            offer = call.offer(sdp, camera, now, mode)
        except ValueError as e:
            zh, _, en = str(e).partition(" / ")
            raise MeetingRefused(
                400, "malformed_sdp", f"呼叫请求的 SDP 无效：{zh}", f"unusable offer SDP: {en}"
            ) from None
        self.calls[call.session] = call
        fut: asyncio.Future[Answered | Ended] = asyncio.get_running_loop().create_future()
        self._waiting[call.session] = fut
        await self._db(self.store.started, call, camera, user)
        try:
            try:
                self._send(call, offer)
            except ConnectionError:
                call.hang_up(self._clock())
                raise MeetingRefused(
                    503, "broker_unavailable", "MQTT 代理不可用", "the MQTT broker is unavailable"
                ) from None
            deadline = call.next_deadline()
            assert deadline is not None
            try:
                async with asyncio.timeout(max(0.0, deadline - self._clock())):
                    out = await fut
            except TimeoutError:
                self._expire(call)
                raise MeetingRefused(
                    504,
                    "expired",
                    f"节点 {node_id} 未在 {self.offer_expiry_s:g} 秒内接听",
                    f"node {node_id} did not answer within {self.offer_expiry_s:g} s",
                ) from None
            if isinstance(out, Ended):
                raise _refusal(node_id, out)
            return Connected(call.session, node_id, out.sdp, out.camera)
        except BaseException:
            bye = call.hang_up(self._clock())  # abandoned by the operator: no half-open call
            if bye is not None:
                self._send_quiet(call, bye)
            self._forget(call)
            await asyncio.shield(self._db(self.store.update, call))
            raise
        finally:
            self._waiting.pop(call.session, None)

    def prepare(self, node_id: str, camera: str | None, user: str) -> None:
        """Ask ``node_id`` to open ``camera`` (None: its conference camera) ahead of a call;
        :class:`MeetingRefused` when it is offline or in a call, or ``user`` or the node asked
        too often (``PREPARES_PER_USER`` / ``PREPARES_PER_NODE`` per ``PREPARE_WINDOW_S``)."""
        self._check_free(node_id)
        now = self._mono()
        per_user, per_node = self.prepare_limits
        keys = ((f"user:{user}", per_user), (f"node:{node_id}", per_node))
        for key, limit in keys:
            wait = self._prepares.retry_after(key, now, limit)
            if wait is not None:
                s = math.ceil(wait)
                raise MeetingRefused(
                    429, "rate_limited", f"预备摄像机过于频繁，请 {s} 秒后再试",
                    f"too many prepares: try again in {s} s",
                )  # fmt: skip
        req = MeetingRequest(
            session=os.urandom(SESSION_BYTES).hex(), op="prepare", ts=self._clock(), camera=camera
        )
        try:
            self._publish(Topics(node_id).meet_req, encode(req), PREPARE_EXPIRY_S)
        except ConnectionError:
            raise MeetingRefused(
                503, "broker_unavailable", "MQTT 代理不可用", "the MQTT broker is unavailable"
            ) from None
        for key, _ in keys:
            self._prepares.failed(key, now)

    async def hang_up(self, session: str) -> dict[str, Any] | None:
        """End a call from central; the record afterwards (None: no such meeting)."""
        call = self.calls.get(session)
        if call is not None:
            bye = call.hang_up(self._clock())
            if bye is not None:
                self._send_quiet(call, bye)
            self._forget(call)
            fut = self._waiting.get(session)
            if fut is not None and not fut.done() and call.end is not None:
                fut.set_result(call.end)
            await self._db(self.store.update, call)
        result: dict[str, Any] | None = await self._db(self.store.get, session)
        return result

    async def switch(self, session: str, camera: str) -> None:
        call = self.calls.get(session)
        if call is None:
            raise MeetingRefused(404, "no_meeting", "没有这个进行中的通话", "no such call")
        try:
            req = call.switch(camera, self._clock())
        except ValueError as e:
            zh, _, en = str(e).partition(" / ")
            raise MeetingRefused(409, "not_active", zh, en) from None
        try:
            self._send(call, req)
        except ConnectionError:
            raise MeetingRefused(
                503, "broker_unavailable", "MQTT 代理不可用", "the MQTT broker is unavailable"
            ) from None

    async def record_stats(self, session: str, stats: dict[str, Any]) -> bool:
        clean = {
            k: float(v)
            for k, v in stats.items()
            if k in STAT_KEYS and isinstance(v, int | float) and not isinstance(v, bool)
        }
        ok: bool = await self._db(self.store.set_stats, session, clean)
        return ok

    async def get(self, session: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._db(self.store.get, session)
        return result

    async def history(
        self, village: str, limit: int, offset: int
    ) -> tuple[int, list[dict[str, Any]]]:
        result: tuple[int, list[dict[str, Any]]] = await self._db(
            self.store.history, village, limit, offset
        )
        return result

    # -- after a restart -----------------------------------------------------------------------

    def link_up(self) -> None:
        """Central is connected to the broker (requests to nodes can go out)."""
        self._link_up.set()

    async def reconcile(self, wait_s: float = STATUS_WAIT_S) -> dict[str, str]:
        """Settle the records a crash left without an end; what became of each session
        (``resumed`` or an end reason). An answered call is asked about (``status`` on the
        node's ``meet/req``): if the node is still in it within ``wait_s``, central takes it up
        again; otherwise, and for offers never answered (their page lost its request with the
        restart), the record is ended ``central_restarted`` and the node told to hang up."""
        orphans, self.orphans = self.orphans, []
        if not orphans:
            return {}
        await self._link_up.wait()
        loop = asyncio.get_running_loop()
        asked: dict[str, asyncio.Future[bool]] = {}
        for rec in orphans:
            if rec["answered"] is None:
                continue
            req = MeetingRequest(session=rec["session"], op="status", ts=self._clock())
            fut: asyncio.Future[bool] = loop.create_future()
            self._status[rec["session"]] = fut
            try:
                self._publish(Topics(rec["node"]).meet_req, encode(req), max(1, int(wait_s)))
            except ConnectionError:
                fut.set_result(False)
            asked[rec["session"]] = fut
        if asked:
            await asyncio.wait(asked.values(), timeout=wait_s)
        out: dict[str, str] = {}
        ended = []
        for rec in orphans:  # first every call taken up, with no wait in between
            session, node = rec["session"], rec["node"]
            self._status.pop(session, None)
            answer = asked.get(session)
            active = answer is not None and answer.done() and answer.result()
            if active and self.busy_node(node) is None and len(self.calls) < MAX_CALLS:
                self.calls[session] = Call.resumed(
                    session, node, rec["started"], rec["answered"], rec["camera"]
                )
                out[session] = "resumed"
                log.info("会议 / meeting %s node %s: resumed after a restart", session, node)
            elif answer is None:
                ended.append((rec, "中心重启时尚未接通 / not answered when central restarted"))
            elif answer.done():
                ended.append((rec, "节点已不在此通话中 / the node is no longer in this call"))
            else:
                ended.append((rec, "节点未回应 / the node did not answer"))
        for rec, detail in ended:
            session, node = rec["session"], rec["node"]
            self._send_quiet_to(
                node, MeetingRequest(session=session, op="hangup", ts=self._clock())
            )
            await self._db(
                self.store.end, session, EndReason.CENTRAL_RESTARTED, detail, self._clock()
            )
            out[session] = EndReason.CENTRAL_RESTARTED.value
            log.info("会议 / meeting %s node %s: ended central_restarted (%s)", session, node,
                     detail)  # fmt: skip
        return out

    # -- from the MQTT link -------------------------------------------------------------------

    def take(self, batch: list[Inbound]) -> list[Inbound]:
        """Handle the batch's meeting replies; return the other messages (for ingest)."""
        if not any(m.topic.endswith("/meet/res") for m in batch):
            return batch
        rest = []
        for m in batch:
            try:
                route = parse_topic(m.topic) if m.topic.endswith("/meet/res") else None
            except RemoteWireError:
                route = None
            if route is None or route.kind is not Kind.MEET_RES:
                rest.append(m)
                continue
            try:
                reply = decode(MeetingReply, m.payload, node_id=route.node_id)
            except RemoteWireError as e:
                log.warning("拒绝会议信令 / refused meeting reply from %s: %s", route.node_id, e)
                continue
            self.on_reply(reply)
        return rest

    def on_reply(self, reply: MeetingReply) -> None:
        asked = self._status.get(reply.session)
        if asked is not None and reply.op in ("status", "hangup"):
            if not asked.done():
                asked.set_result(reply.op == "status" and reply.active is True)
            return
        call = self.calls.get(reply.session)
        if call is None:
            if reply.op == "answer":  # answered after central gave up: free the node's line
                bye = MeetingRequest(session=reply.session, op="hangup", ts=self._clock())
                self._send_quiet_to(reply.node, bye)
            return
        out = call.receive(reply, self._clock())
        if isinstance(out, Receiving):  # a broadcast leg's node: what it decoded so far
            counts = out.received
            stats = {"frames_decoded": counts.frames, "audio_frames": counts.audio_frames}
            if counts.width and counts.height:
                stats |= {"width": counts.width, "height": counts.height}
            self._later(self.record_stats(call.session, stats))
            return
        fut = self._waiting.get(call.session)
        if isinstance(out, Answered | Ended) and fut is not None and not fut.done():
            fut.set_result(out)
        if isinstance(out, Ended):
            if out.reason is EndReason.MALFORMED_SDP:
                self._send_quiet(
                    call, MeetingRequest(session=call.session, op="hangup", ts=self._clock())
                )
            self._forget(call)
        if isinstance(out, Answered | Ended | Switched):
            log.info(
                "会议 / meeting %s node %s: %s", call.session, call.node_id, type(out).__name__
            )
            self._update_later(call)

    # -- internals ------------------------------------------------------------------------------

    def _expire(self, call: Call) -> None:
        bye = call.on_timer(self._clock())
        if bye is None and call.end is None:  # the loop's timer ran a little early
            bye = call.hang_up(self._clock())
        if bye is not None:
            self._send_quiet(call, bye)

    def _send(self, call: Call, req: MeetingRequest) -> None:
        left = call.deadline - self._clock() if req.op == "offer" else OFFER_EXPIRY_S
        self._publish(Topics(call.node_id).meet_req, encode(req), max(1, int(left)))

    def _send_quiet(self, call: Call, req: MeetingRequest) -> None:
        self._send_quiet_to(call.node_id, req)

    def _send_quiet_to(self, node_id: str, req: MeetingRequest) -> None:
        try:
            self._publish(Topics(node_id).meet_req, encode(req), int(OFFER_EXPIRY_S))
        except ConnectionError as e:
            # The node's line is freed by its own checks (the call's media times out).
            log.warning("会议挂断未送达 / hang-up to %s not sent: %s", node_id, e)

    def _forget(self, call: Call) -> None:
        self.calls.pop(call.session, None)

    def _update_later(self, call: Call) -> None:
        """Write the record from the link's callback without holding up the batch; the task
        is kept until done and :meth:`drain` awaits the rest at shutdown."""
        task = asyncio.get_running_loop().create_task(self._db(self.store.update, call))
        self._updates.add(task)
        task.add_done_callback(self._updates.discard)

    def _later(self, write: Coroutine[Any, Any, Any]) -> None:
        """Run ``write`` (a record write) as :meth:`_update_later` does."""
        task = asyncio.get_running_loop().create_task(write)
        self._updates.add(task)
        task.add_done_callback(self._updates.discard)

    async def drain(self) -> None:
        """Hang up every call (central stops) and wait for the records to be written."""
        for call in list(self.calls.values()):
            bye = call.hang_up(self._clock(), EndReason.CENTRAL_STOPPED)
            if bye is not None:
                self._send_quiet(call, bye)
            self._forget(call)
            await self._db(self.store.update, call)
        if self._updates:
            await asyncio.gather(*self._updates, return_exceptions=True)


def _refusal(node_id: str, end: Ended) -> MeetingRefused:
    detail = end.detail
    if end.reason is EndReason.BUSY:
        return MeetingRefused(
            409, "busy", f"节点 {node_id} 正在通话中", f"node {node_id} is already in a call"
        )
    if end.reason is EndReason.MALFORMED_SDP:
        return MeetingRefused(502, "malformed_sdp", "节点的应答 SDP 无效", f"bad answer: {detail}")
    if end.reason is EndReason.REJECTED:
        zh, _, en = detail.partition(" / ")
        return MeetingRefused(
            502, "rejected", f"节点拒绝了呼叫：{zh}", f"the node refused the call: {en or zh}"
        )
    return MeetingRefused(
        409, end.reason.value, f"通话已结束（{end.reason.value}）", f"call ended ({end.reason})"
    )
