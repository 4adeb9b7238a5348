"""Meetings at the node: answers operators' calls relayed by central (docs/meetings.md).

The session hands every ``meet/req`` message to :meth:`MeetingDesk.on_request` (never
blocking); :meth:`MeetingDesk.run` decides with the pure :class:`wire.meeting.Line` (one call at
a time: a second offer is ``busy``) and runs the call in a task it owns. A call's media
(edge.meeting_media: aiortc, imported here only when the first offer arrives) sends the chosen
camera, or the conference camera, without decoding it. An offer in ``broadcast`` mode (one
village's leg of an operator's 1:N broadcast) is received instead (edge.broadcast_media): the
node decodes the operator's media, counts its frames and sends nothing back.

A call ends when the operator hangs up (``hangup``), when the page's peer connection fails or
closes, when the camera's stream ended and could not be opened again, or when the agent stops;
the node tells central (``hangup``) in the last three cases. Ending frees the peer connection
(its sockets), the camera player (its thread; not for a camera in ``[meetings] keep_warm``,
which stays open between calls) and the call's task.

A ``prepare`` (an operator opened the node's meeting page) opens the camera before the call:
it lingers open ``[meetings] prepare_linger_s`` and a call within that time starts from its
buffered key frame; at most ``prepare_max`` cameras linger at once. A prepare while the line
is busy, for an unknown camera or beyond that bound is ignored (counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edge.config import EdgeConfig
from edge.meeting_options import CallOptions
from edge.mqtt_link import Incoming, Link, LinkError, PublishRejected
from wire import RemoteWireError, Topics, decode, encode
from wire.meeting import (
    Answer,
    Drop,
    Line,
    MeetingReply,
    MeetingRequest,
    Prepare,
    Release,
    Reply,
    SwitchCamera,
)

if TYPE_CHECKING:
    from edge.broadcast_media import BroadcastReceiver
    from edge.camera_tap import CameraTaps
    from edge.meeting_av import CallAv
    from edge.meeting_media import MediaCall, TurnServer

log = logging.getLogger("shilian.edge.meetings")

#: Requests waiting for the desk. Signalling is a few messages per call; a burst beyond this
#: is a misbehaving peer, and the excess is dropped (counted).
MAX_INBOX = 32
#: Attempts to open a camera again after its stream ended, and the pause before each: a
#: camera rebooting comes back within ~10 s; after that the call is ended (hang-up to central).
REOPEN_ATTEMPTS = 5
REOPEN_PAUSE_S = 2.0
#: The page must connect (ICE + DTLS) within this after the answer, else the call is ended:
#: host candidates on a LAN/VPN connect in well under a second; TURN adds a round trip or two.
CONNECT_TIMEOUT_S = 20.0
#: Bound on publishing the hang-up when the agent stops.
STOP_PUBLISH_S = 2.0
#: A broadcast leg tells central what it decoded this often: the operator's page shows it per
#: village (read every ~4 s), and 8-32 villages at this rate are a few messages a second.
RECEIVED_REPORT_S = 3.0
#: How often cameras kept warm are checked and reopened if their stream ended: MediaPlayer
#: never reconnects, and a camera rebooting comes back within ~10 s.
WARM_CHECK_S = 5.0
#: Buckets of the set-up stages' histogram (s): the whole set-up is aimed at under 1 s.
SETUP_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class LinkSource(Protocol):
    async def wait_link(self) -> Link: ...


class MeetingDesk:
    def __init__(
        self,
        config: EdgeConfig,
        topics: Topics,
        registry: CollectorRegistry,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.topics = topics
        self.clock = clock
        self.urls = {c.id: c.player_url for c in config.cameras}
        self.line = Line(config.node_id, frozenset(self.urls))
        self._inbox: asyncio.Queue[tuple[MeetingRequest, bool]] = asyncio.Queue(MAX_INBOX)
        self._calls: dict[str, asyncio.Task[None]] = {}
        self._switches: dict[str, asyncio.Queue[str]] = {}
        self._link: LinkSource | None = None
        self.signals = Counter(
            "shilian_edge_meeting_signals",
            "meeting requests received, by what was done (answer, busy, reject, release, "
            "switch, or why dropped)",
            ["result"],
            registry=registry,
        )
        self.calls_ended = Counter(
            "shilian_edge_meetings_ended", "calls ended, by reason", ["reason"], registry=registry
        )
        self.broadcast_frames = Counter(
            "shilian_edge_broadcast_frames",
            "frames of operators' broadcasts received and decoded, by kind (video, audio)",
            ["kind"],
            registry=registry,
        )
        self.setup_seconds = Histogram(
            "shilian_edge_meeting_setup_seconds",
            "a call's set-up at the node, seconds after the offer, by stage (camera_open, "
            "answer, first_packet)",
            ["stage"],
            buckets=SETUP_BUCKETS,
            registry=registry,
        )
        self.warm_failures = Counter(
            "shilian_edge_meeting_warm_failures",
            "attempts to open a camera kept warm ([meetings] keep_warm) that failed",
            registry=registry,
        )
        self.video_faults = Counter(
            "shilian_edge_meeting_video_faults",
            "what a call's camera had to give up, by kind: gop_overflow (a group of pictures "
            "over the buffer: the call waits for the next key frame), viewer_lagged (the "
            "sender fell behind: skipped to the next key frame)",
            ["kind"],
            registry=registry,
        )
        prepared = Gauge(
            "shilian_edge_meeting_prepared_cameras",
            "cameras opened because an operator opened the meeting page, waiting for a call",
            registry=registry,
        )
        prepared.set_function(lambda: len(self.taps.prepared()) if self.taps is not None else 0)
        #: The node's opened cameras (edge.camera_tap; created with the first call, or at the
        #: start when cameras are kept warm).
        self.taps: CameraTaps | None = None
        #: The media of the call in progress (tests and /metrics look at it).
        self.media: MediaCall | None = None
        #: The broadcast being received, if the line is taken by one.
        self.receiver: BroadcastReceiver | None = None
        #: TURN, sound devices and screen (edge.meeting_options).
        self.options = CallOptions(config, registry)

    # -- from the session -------------------------------------------------------------------

    def on_request(self, msg: Incoming) -> None:
        try:
            req = decode(MeetingRequest, msg.payload)
        except RemoteWireError as e:
            self.signals.labels(e.fault.value).inc()
            log.warning("node %s: bad meeting request: %s", self.topics.node_id, e)
            return
        expired = msg.expiry_s is not None and msg.expiry_s <= 0
        try:
            self._inbox.put_nowait((req, expired))
        except asyncio.QueueFull:
            self.signals.labels("inbox_full").inc()

    # -- the desk's task ----------------------------------------------------------------------

    async def run(self, link: LinkSource) -> None:
        """Take requests until cancelled; on cancel, every call is ended and freed."""
        self._link = link
        try:
            async with asyncio.TaskGroup() as tg:
                if self.config.meetings.keep_warm:
                    tg.create_task(self._keep_warm(), name="meeting-keep-warm")
                while True:
                    req, expired = await self._inbox.get()
                    self._act(tg, self.line.receive(req, expired, self.clock()))
        finally:
            for task in list(self._calls.values()):
                task.cancel()

    def _act(self, tg: asyncio.TaskGroup, action: Any) -> None:
        if isinstance(action, Answer):
            self.signals.labels("answer").inc()
            self._switches[action.session] = asyncio.Queue(MAX_INBOX)
            self._calls[action.session] = tg.create_task(
                self._call(action), name=f"meeting-{action.session[:8]}"
            )
        elif isinstance(action, Reply):
            self.signals.labels(action.reply.op).inc()
            tg.create_task(self._send(action.reply))
        elif isinstance(action, Release):
            self.signals.labels("release").inc()
            task = self._calls.get(action.session)
            if task is not None:
                task.cancel()
        elif isinstance(action, SwitchCamera):
            self.signals.labels("switch").inc()
            q = self._switches.get(action.session)
            if q is not None:
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(action.camera)
        elif isinstance(action, Prepare):
            camera = action.camera or self.config.conference_camera
            assert camera is not None  # the line drops prepares on a node without cameras
            if self.config.meetings.prepare_linger_s <= 0:
                self.signals.labels("prepare_off").inc()
            else:
                tg.create_task(self._prepare(camera), name=f"meeting-prepare-{camera}")
        elif isinstance(action, Drop):
            self.signals.labels(action.why).inc()

    async def stop(self) -> None:
        """The agent stops: tell central each call ended, then free it."""
        for session, task in list(self._calls.items()):
            bye = self.line.ended(session, self.clock())
            if bye is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STOP_PUBLISH_S):
                        await self._send(bye)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.taps is not None:
            await self.taps.close()

    # -- one call -----------------------------------------------------------------------------

    async def _call(self, a: Answer) -> None:
        from edge.meeting_media import MediaCall  # aiortc: only once a call comes

        if a.broadcast:
            receiver = self._new_receiver()
            try:
                await self._run_leg(
                    a, "broadcast", lambda: receiver.answer(a.sdp), receiver.close,
                    lambda: self._receive_broadcast(a.session, receiver),
                )  # fmt: skip
            finally:
                if self.receiver is receiver:
                    self.receiver = None
            return
        camera = a.camera or self.config.conference_camera
        assert camera is not None  # the line refuses offers on a node without cameras
        media = MediaCall(
            self._turn(),
            self._extras(),
            self._camera_taps(),
            lambda stage, s: self.setup_seconds.labels(stage).observe(s),
        )
        self.media = media
        try:
            await self._run_leg(
                a, "meeting", lambda: media.answer(a.sdp, camera, self.urls[camera]),
                media.close, lambda: self._serve(a.session, media), camera,
            )  # fmt: skip
        finally:
            if self.media is media:
                self.media = None

    async def _run_leg(
        self,
        a: Answer,
        what: str,
        answer: Callable[[], Awaitable[str]],
        close: Callable[[], Awaitable[None]],
        serve: Callable[[], Awaitable[str]],
        camera: str | None = None,
    ) -> None:
        """Answer ``a`` (``answer()``: the answer SDP), run ``serve()`` (why the call ended;
        cancel: central hung up), tell central unless it hung up, and ``close()``: what a
        call and a broadcast leg share."""
        from edge.meeting_media import MediaFailed

        reason = "hangup_local"
        try:
            try:
                sdp = await answer()
            except MediaFailed as e:
                reason = e.code
                log.warning("node %s: %s %s: %s", self.topics.node_id, what, a.session[:8], e)
                await self._send(self.line.failed(a.session, e.code, e.zh, e.en, self.clock()))
                return
            reply = self.line.answered(a.session, sdp, camera, self.clock())
            if reply is None:
                return  # hung up while we were setting up
            await self._send(reply)
            log.info("node %s: %s %s answered%s", self.topics.node_id, what, a.session[:8],
                     f", camera {camera}" if camera else "")  # fmt: skip
            reason = await serve()
            if reason != "hangup_remote":
                bye = self.line.ended(a.session, self.clock())
                if bye is not None:
                    await self._send(bye)
        finally:
            self._calls.pop(a.session, None)
            self._switches.pop(a.session, None)
            if self.line.session == a.session:
                self.line.ended(a.session, self.clock())
            await asyncio.shield(close())
            self.calls_ended.labels(reason).inc()
            log.info("node %s: %s %s ended (%s)", self.topics.node_id, what, a.session[:8], reason)

    def _new_receiver(self) -> BroadcastReceiver:
        from edge.broadcast_media import BroadcastReceiver

        self.receiver = BroadcastReceiver(
            self._turn(), lambda kind: self.broadcast_frames.labels(kind).inc()
        )
        return self.receiver

    async def _receive_broadcast(self, session: str, receiver: BroadcastReceiver) -> str:
        """One village's leg of a 1:N broadcast, answered: report what arrives until the page
        leaves; why it ended (cancel: central hung up)."""
        try:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await _first(receiver.peer_gone.wait(), receiver.connected.wait())
            except TimeoutError:
                return "connect_timeout"
            failed = receiver.peer_gone.is_set()
            while not receiver.peer_gone.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RECEIVED_REPORT_S):
                        await receiver.peer_gone.wait()
                report = self.line.received(session, receiver.counts(), self.clock())
                if report is not None and not receiver.peer_gone.is_set():
                    await self._send(report)
            return "peer_failed" if failed else "peer_gone"
        finally:
            log.info("node %s: broadcast %s: %d video frames received", self.topics.node_id,
                     session[:8], receiver.frames)  # fmt: skip

    async def _serve(self, session: str, media: MediaCall) -> str:
        """Run an answered call until it ends by itself; why (cancel: central hung up)."""
        from edge.meeting_media import MediaFailed

        switches = self._switches[session]
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await _first(media.peer_gone.wait(), media.connected.wait())
        except TimeoutError:
            return "connect_timeout"
        if media.peer_gone.is_set():
            return "peer_failed"
        while True:
            peer = asyncio.ensure_future(media.peer_gone.wait())
            ended = asyncio.ensure_future(media.stream_ended.wait())
            switch = asyncio.ensure_future(switches.get())
            try:
                await asyncio.wait((peer, ended, switch), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for f in (peer, ended, switch):
                    f.cancel()
            if media.peer_gone.is_set():
                return "peer_gone"
            if switch.done() and not switch.cancelled():
                camera = switch.result()
                try:
                    await media.switch(camera, self.urls[camera])
                except MediaFailed as e:
                    log.warning("node %s: camera switch to %s: %s", self.topics.node_id, camera, e)
                    continue
                rep = self.line.switched(session, camera, self.clock())
                if rep is not None:
                    await self._send(rep)
                continue
            if media.stream_ended.is_set() and not await self._reopen(media):
                return "stream_ended"

    async def _reopen(self, media: MediaCall) -> bool:
        """The camera's stream ended: open it again (MediaPlayer never reconnects)."""
        from edge.meeting_media import MediaFailed

        camera = media.camera
        assert camera is not None
        for attempt in range(1, REOPEN_ATTEMPTS + 1):
            log.info("node %s: camera %s stream ended: reopening (%d/%d)", self.topics.node_id,
                     camera, attempt, REOPEN_ATTEMPTS)  # fmt: skip
            try:
                await media.switch(camera, self.urls[camera])
                return True
            except MediaFailed:
                await asyncio.sleep(REOPEN_PAUSE_S)
        return False

    async def _prepare(self, camera: str) -> None:
        """Open ``camera`` ahead of a call (edge.camera_tap.CameraTaps.prepare)."""
        from edge.camera_tap import MediaFailed

        m = self.config.meetings
        try:
            ok = await self._camera_taps().prepare(
                camera, self.urls[camera], m.prepare_linger_s, m.prepare_max
            )
        except MediaFailed as e:
            self.signals.labels("prepare_failed").inc()
            log.warning("node %s: camera %s prepared: %s", self.topics.node_id, camera, e)
            return
        self.signals.labels("prepare" if ok else "prepare_full").inc()

    def _camera_taps(self) -> CameraTaps:
        if self.taps is None:
            from edge.camera_tap import CameraTaps

            self.taps = CameraTaps(
                frozenset(self.config.meetings.keep_warm),
                lambda kind: self.video_faults.labels(kind).inc(),
            )
        return self.taps

    async def _keep_warm(self) -> None:
        """Keep the ``keep_warm`` cameras open (edge.camera_tap.CameraTaps.keep_open)."""
        warm = {c: self.urls[c] for c in self.config.meetings.keep_warm}
        await self._camera_taps().keep_open(
            warm, WARM_CHECK_S, self.warm_failures.inc, self.topics.node_id
        )

    def _extras(self) -> CallAv:
        from edge.meeting_av import CallAv  # sound, screen, what the call receives

        return CallAv(self.config.meetings, self.topics.node_id, self.options.fault)

    def _turn(self) -> TurnServer | None:
        return self.options.turn(self.clock())

    async def _send(self, reply: MeetingReply) -> None:
        assert self._link is not None
        link = await self._link.wait_link()
        try:
            await link.publish(self.topics.meet_res, encode(reply))
        except (LinkError, PublishRejected) as e:
            log.warning("node %s: meeting reply %s not sent: %s", self.topics.node_id, reply.op, e)


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
