"""Meeting signalling: session-keyed WebRTC offer/answer over MQTT (docs/protocol.md,
docs/meetings.md). Pure: messages and time in, messages and outcomes out; no I/O.

Central (on behalf of an operator's browser) publishes a :class:`MeetingRequest` on the node's
``meet/req``; the node answers with a :class:`MeetingReply` on its own ``meet/res``. A session
id (32 hex digits, random) keys every message of one call. SDPs are complete: ICE candidates
are gathered before an offer or answer is sent (no trickle), so one message each way suffices.

:class:`Call` is one call as central sees it; :class:`Line` is a node's single line (one call at
a time, so a second offer is ``busy``). Both take the current time as ``now``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from wire.messages import CommandError, NodeId, Timestamp, _Payload

#: An unanswered offer ends after this. The operator waits on a page; 30 s covers a node that
#: opens its camera (~0.3-2 s) and gathers candidates on a slow uplink, and no more.
OFFER_EXPIRY_S = 30.0
#: Largest SDP accepted either way. A browser's video+audio offer with a few host candidates is
#: 3-6 kB; TURN relays add a few lines. Bounded well inside the 64 KiB payload limit.
MAX_SDP_CHARS = 32 * 1024

SessionId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="random, one per call")]
CameraId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
#: ``call``: the operator sees the village's camera (the node sends video). ``broadcast``: the
#: operator addresses many villages at once (docs/meetings.md "1:N"); the node only receives
#: the operator's video (and audio, if offered) and sends no media back.
MeetingMode = Literal["call", "broadcast"]


class MeetingRequest(_Payload):
    """Central -> node on ``meet/req`` (QoS 1, message expiry = what is left of the offer's
    30 s). ``offer``: call with ``sdp`` (complete, candidates included), optionally a
    ``camera`` (device id; absent: the node's conference camera). ``hangup``: end the call.
    ``camera``: switch the call's video to ``camera``. ``status``: is the node still in
    ``session``? (central asks after a restart about the calls its records leave open; the node
    answers ``status`` with ``active``). ``mode`` (offers only): ``call``, or ``broadcast`` (the
    node receives the operator's media and sends none; ``camera`` unused). ``prepare``: an
    operator opened the node's meeting page; open ``camera`` (absent: the conference camera)
    now and keep it open a while, so a call soon after starts at once (``session`` is the
    prepare's own id; no reply; a node of an older version drops it as malformed)."""

    session: SessionId
    op: Literal["offer", "hangup", "camera", "status", "prepare"]
    ts: Timestamp
    sdp: str | None = Field(default=None, max_length=MAX_SDP_CHARS)
    camera: CameraId | None = None
    mode: MeetingMode = "call"


class Received(BaseModel):
    """What a node decoded so far of a broadcast it receives (counts since the leg began)."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    frames: int = Field(ge=0, description="video frames decoded")
    audio_frames: int = Field(default=0, ge=0, description="audio frames decoded")
    width: int | None = Field(default=None, ge=0, le=16384)
    height: int | None = Field(default=None, ge=0, le=16384)


class MeetingReply(_Payload):
    """Node -> central on its own ``meet/res``. ``answer`` carries the complete answer ``sdp``
    and the ``camera`` being sent; ``busy`` (already in another call), ``reject`` (with
    ``error``: the camera is unknown or cannot be opened, the offer's SDP is unusable) and
    ``hangup`` (the node ended the call: its camera stream ended for good, or it stops) end the
    call; ``camera`` confirms a switch; ``received`` (broadcast legs, every few seconds) carries
    what the node decoded so far in ``received``; ``status`` answers a ``status`` request:
    ``active`` is true when the node's line is in that session."""

    node: NodeId
    session: SessionId
    op: Literal["answer", "busy", "reject", "hangup", "camera", "received", "status"]
    ts: Timestamp
    sdp: str | None = Field(default=None, max_length=MAX_SDP_CHARS)
    camera: CameraId | None = None
    error: CommandError | None = None
    received: Received | None = None
    active: bool | None = None


class EndReason(StrEnum):
    """Why a call ended; stored with the meeting record and used as a metric label."""

    EXPIRED = "expired"  # no answer within OFFER_EXPIRY_S
    BUSY = "busy"  # the node was in another call
    REJECTED = "rejected"  # the node refused (reply's error says why)
    HANGUP_LOCAL = "hangup_local"  # the operator hung up
    HANGUP_REMOTE = "hangup_remote"  # the node hung up
    MALFORMED_SDP = "malformed_sdp"  # the answer's SDP was unusable
    CENTRAL_STOPPED = "central_stopped"  # central was stopped (SIGTERM) during the call
    #: central restarted (after a crash) and the node no longer had the call, or did not say
    CENTRAL_RESTARTED = "central_restarted"


_SDP_LINE = re.compile(r"^[a-z]=")


def turn_rest_credentials(secret: str, name: str, now: float, ttl_s: float) -> tuple[str, str]:
    """Short-lived TURN credentials for a server sharing ``secret`` (coturn ``use-auth-secret``
    / ``static-auth-secret``, the "TURN REST API"): user name ``<expiry>:<name>`` (Unix time),
    password base64(HMAC-SHA1(secret, user name)). The server accepts them until the expiry;
    nothing is stored on it per user."""
    user = f"{int(now + ttl_s)}:{name}"
    digest = hmac.new(secret.encode(), user.encode(), hashlib.sha1).digest()
    return user, base64.b64encode(digest).decode()


def turn_url_problem(url: str) -> str | None:
    """Why ``url`` is not ``turn:HOST[:PORT][?transport=udp|tcp]`` or ``turns:...``, or None."""
    scheme, _, rest = url.partition(":")
    host = rest.split("?", 1)[0].rsplit(":", 1)
    if scheme not in ("turn", "turns") or not host[0] or rest.startswith("//"):
        return "must be turn:HOST[:PORT][?transport=udp|tcp] or turns:..."
    if len(host) == 2 and not (host[1].isdigit() and 1 <= int(host[1]) <= 65535):
        return "port must be 1-65535"
    return None


def sdp_problem(sdp: str | None) -> str | None:
    """Why ``sdp`` is not a complete WebRTC SDP, or None. Checked before anything is sent or
    set: version line, origin, at least one media section, ICE credentials, a DTLS fingerprint
    and at least one candidate (ICE is gathered before sending)."""
    if not sdp:
        return "SDP 为空 / empty SDP"
    if len(sdp) > MAX_SDP_CHARS:
        return f"SDP 过长 / SDP longer than {MAX_SDP_CHARS} characters"
    lines = [ln for ln in sdp.replace("\r\n", "\n").split("\n") if ln]
    if not lines or lines[0] != "v=0":
        return "SDP 首行应为 v=0 / SDP must start with v=0"
    bad = next((ln for ln in lines if not _SDP_LINE.match(ln)), None)
    if bad is not None:
        return f"SDP 行格式错误 / malformed SDP line {bad[:40]!r}"
    need = (
        ("o=", "缺少 o= 行 / no o= line"),
        ("m=", "没有媒体段 / no media section"),
        ("a=ice-ufrag:", "缺少 ICE 凭据 / no ICE credentials"),
        ("a=fingerprint:", "缺少 DTLS 指纹 / no DTLS fingerprint"),
        (
            "a=candidate:",
            "没有 ICE 候选地址（应先收集完再发送） / no ICE candidate (gather before sending)",
        ),
    )
    for prefix, why in need:
        if not any(ln.startswith(prefix) for ln in lines):
            return why
    return None


class CallState(StrEnum):
    OFFERED = "offered"
    ACTIVE = "active"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Answered:
    sdp: str
    camera: str | None


@dataclass(frozen=True, slots=True)
class Ended:
    reason: EndReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Switched:
    camera: str | None


@dataclass(frozen=True, slots=True)
class Receiving:
    """A broadcast leg's node reported what it decoded so far."""

    received: Received


@dataclass(frozen=True, slots=True)
class Ignored:
    """A reply that changes nothing (late, repeated, for an ended call); ``why`` is a label."""

    why: str


Outcome = Answered | Ended | Switched | Receiving | Ignored


class Call:
    """One call as central sees it: offered -> active -> ended, or offered -> ended.

    :meth:`offer` builds the request to send; :meth:`receive` takes the node's replies;
    :meth:`hang_up` ends it from this side (the returned request tells the node);
    :meth:`on_timer` expires an unanswered offer (and returns a hang-up for the node, so a
    late answer there never leaves a half-open call). :meth:`next_deadline` says when to call
    :meth:`on_timer`.
    """

    def __init__(
        self, session: str, node_id: str, now: float, expiry_s: float = OFFER_EXPIRY_S
    ) -> None:
        self.session = session
        self.node_id = node_id
        self.started = now
        self.deadline = now + expiry_s
        self.state = CallState.OFFERED
        self.end: Ended | None = None
        self.camera: str | None = None
        self.answered_at: float | None = None
        self.ended_at: float | None = None

    @classmethod
    def resumed(
        cls, session: str, node_id: str, started: float, answered_at: float, camera: str | None
    ) -> Call:
        """A call answered before central restarted that the node says is still going."""
        call = cls(session, node_id, started)
        call.state = CallState.ACTIVE
        call.answered_at = answered_at
        call.camera = camera
        return call

    def offer(
        self, sdp: str, camera: str | None, now: float, mode: MeetingMode = "call"
    ) -> MeetingRequest:
        """The offer to publish; ValueError with a zh/en reason if ``sdp`` is unusable."""
        problem = sdp_problem(sdp)
        if problem is not None:
            self._finish(Ended(EndReason.MALFORMED_SDP, problem), now)
            raise ValueError(problem)
        if mode == "broadcast":
            camera = None  # the node sends nothing in a broadcast
        return MeetingRequest(
            session=self.session, op="offer", ts=now, sdp=sdp, camera=camera, mode=mode
        )

    def receive(self, reply: MeetingReply, now: float) -> Outcome:
        if reply.session != self.session or reply.node != self.node_id:
            return Ignored("other_session")
        if self.state is CallState.ENDED:
            return Ignored("ended")
        if reply.op == "answer":
            if self.state is not CallState.OFFERED:
                return Ignored("repeated_answer")
            problem = sdp_problem(reply.sdp)
            if problem is not None:
                return self._finish(Ended(EndReason.MALFORMED_SDP, problem), now)
            assert reply.sdp is not None  # sdp_problem(None) is a problem
            self.state = CallState.ACTIVE
            self.answered_at = now
            self.camera = reply.camera
            return Answered(reply.sdp, reply.camera)
        if reply.op == "camera":
            if self.state is not CallState.ACTIVE:
                return Ignored("not_active")
            self.camera = reply.camera
            return Switched(reply.camera)
        if reply.op == "status":
            return Ignored("status")
        if reply.op == "received":
            if self.state is not CallState.ACTIVE or reply.received is None:
                return Ignored("not_active" if reply.received is not None else "no_counts")
            return Receiving(reply.received)
        detail = reply.error.message if reply.error is not None else ""
        reason = {
            "busy": EndReason.BUSY,
            "reject": EndReason.REJECTED,
            "hangup": EndReason.HANGUP_REMOTE,
        }[reply.op]
        return self._finish(Ended(reason, detail), now)

    def hang_up(
        self, now: float, reason: EndReason = EndReason.HANGUP_LOCAL
    ) -> MeetingRequest | None:
        """End the call from this side (the operator, or central stopping: ``reason``); the
        request tells the node (None: already ended)."""
        if self.state is CallState.ENDED:
            return None
        self._finish(Ended(reason), now)
        return MeetingRequest(session=self.session, op="hangup", ts=now)

    def switch(self, camera: str, now: float) -> MeetingRequest:
        """Ask the node to send ``camera`` instead; ValueError unless the call is active."""
        if self.state is not CallState.ACTIVE:
            raise ValueError("通话未接通 / the call is not active")
        return MeetingRequest(session=self.session, op="camera", ts=now, camera=camera)

    def next_deadline(self) -> float | None:
        return self.deadline if self.state is CallState.OFFERED else None

    def on_timer(self, now: float) -> MeetingRequest | None:
        """Expire an unanswered offer; the hang-up to publish so the node frees what it set up."""
        if self.state is not CallState.OFFERED or now < self.deadline:
            return None
        self._finish(Ended(EndReason.EXPIRED), now)
        return MeetingRequest(session=self.session, op="hangup", ts=now)

    def _finish(self, end: Ended, now: float) -> Ended:
        self.state = CallState.ENDED
        self.end = end
        self.ended_at = now
        return end


# -- the node's side ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """Set up a call for ``session`` with the offer ``sdp`` and ``camera`` (None: default);
    ``broadcast``: receive the operator's media only (no camera is opened)."""

    session: str
    sdp: str
    camera: str | None
    broadcast: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """Publish this reply; nothing else to do."""

    reply: MeetingReply


@dataclass(frozen=True, slots=True)
class Release:
    """Tear down the call of ``session`` (peer connection, player, tasks)."""

    session: str


@dataclass(frozen=True, slots=True)
class SwitchCamera:
    session: str
    camera: str


@dataclass(frozen=True, slots=True)
class Prepare:
    """Open ``camera`` (None: the conference camera) and keep it open a while."""

    camera: str | None


@dataclass(frozen=True, slots=True)
class Drop:
    """Nothing to do; ``why`` is a metric label."""

    why: str


Action = Answer | Reply | Release | SwitchCamera | Prepare | Drop


class Line:
    """A node's one meeting line: idle, or busy with one session. Pure; the node's shell acts
    on the returned :data:`Action` and reports back with :meth:`answered` / :meth:`failed` /
    :meth:`ended`."""

    def __init__(self, node_id: str, cameras: frozenset[str]) -> None:
        self.node_id = node_id
        self.cameras = cameras
        self.session: str | None = None

    def receive(self, req: MeetingRequest, expired: bool, now: float) -> Action:
        """``expired``: the request's MQTT message expiry had run out (the caller gave up)."""
        if req.op == "offer":
            if expired:
                return Drop("expired")
            if self.session == req.session:
                return Drop("repeated_offer")
            if self.session is not None:
                return Reply(
                    self._reply(req.session, "busy", now, "busy", "本村正在通话中", "busy")
                )
            problem = sdp_problem(req.sdp)
            if problem is not None:
                return Reply(self._reject(req.session, now, "malformed_sdp", problem))
            assert req.sdp is not None
            if req.mode == "broadcast":  # receive only: no camera needed
                self.session = req.session
                return Answer(req.session, req.sdp, None, broadcast=True)
            if req.camera is not None and req.camera not in self.cameras:
                zh, en = f"本节点没有摄像机 {req.camera}", f"no camera {req.camera} on this node"
                return Reply(self._reply(req.session, "reject", now, "no_camera", zh, en))
            if not self.cameras:
                zh, en = "本节点未配置摄像机", "this node has no camera configured"
                return Reply(self._reply(req.session, "reject", now, "no_camera", zh, en))
            self.session = req.session
            return Answer(req.session, req.sdp, req.camera)
        if req.op == "status":
            if expired:
                return Drop("expired")
            return Reply(
                MeetingReply(
                    node=self.node_id, session=req.session, op="status", ts=now,
                    active=self.session == req.session,
                )
            )  # fmt: skip
        if req.op == "prepare":
            if expired:
                return Drop("expired")
            if self.session is not None:  # the call in progress has its camera open
                return Drop("prepare_busy")
            if not self.cameras or (req.camera is not None and req.camera not in self.cameras):
                return Drop("prepare_no_camera")
            return Prepare(req.camera)
        if req.session != self.session:
            return Drop("other_session")
        if req.op == "hangup":
            self.session = None
            return Release(req.session)
        assert req.camera is not None or req.op != "camera"
        if req.camera is None or req.camera not in self.cameras:
            return Drop("no_camera")
        return SwitchCamera(req.session, req.camera)

    def answered(
        self, session: str, sdp: str, camera: str | None, now: float
    ) -> MeetingReply | None:
        """The call was set up; its answer (None if it was hung up meanwhile: release it)."""
        if self.session != session:
            return None
        return MeetingReply(
            node=self.node_id, session=session, op="answer", ts=now, sdp=sdp, camera=camera
        )

    def switched(self, session: str, camera: str, now: float) -> MeetingReply | None:
        """The call now sends ``camera``; the confirmation (None if the call is gone)."""
        if self.session != session:
            return None
        return MeetingReply(node=self.node_id, session=session, op="camera", ts=now, camera=camera)

    def received(self, session: str, counts: Received, now: float) -> MeetingReply | None:
        """A broadcast leg's counts so far (None if the leg is gone)."""
        if self.session != session:
            return None
        return MeetingReply(
            node=self.node_id, session=session, op="received", ts=now, received=counts
        )

    def failed(self, session: str, code: str, zh: str, en: str, now: float) -> MeetingReply:
        """Setting up the call failed: free the line, tell central."""
        if self.session == session:
            self.session = None
        return self._reply(session, "reject", now, code, zh, en)

    def ended(self, session: str, now: float) -> MeetingReply | None:
        """The node ends the call (stream gone for good, agent stopping)."""
        if self.session != session:
            return None
        self.session = None
        return MeetingReply(node=self.node_id, session=session, op="hangup", ts=now)

    def _reject(self, session: str, now: float, code: str, message: str) -> MeetingReply:
        return MeetingReply(
            node=self.node_id,
            session=session,
            op="reject",
            ts=now,
            error=CommandError(code=code, message=message),
        )

    def _reply(
        self, session: str, op: Literal["busy", "reject"], now: float, code: str, zh: str, en: str
    ) -> MeetingReply:
        return MeetingReply(
            node=self.node_id,
            session=session,
            op=op,
            ts=now,
            error=CommandError(code=code, message=f"{zh} / {en}"),
        )
