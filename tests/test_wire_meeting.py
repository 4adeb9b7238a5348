"""Meeting signalling (wire/meeting.py): every transition of a call at central and of a node's
line, with time passed in; the topics and payloads through the codec."""

from __future__ import annotations

import pytest

from wire import Kind, RemoteWireError, Topics, decode, encode, parse_topic
from wire.meeting import (
    OFFER_EXPIRY_S,
    Answer,
    Answered,
    Call,
    CallState,
    Drop,
    Ended,
    EndReason,
    Ignored,
    Line,
    MeetingReply,
    MeetingRequest,
    Prepare,
    Release,
    Reply,
    SwitchCamera,
    Switched,
    sdp_problem,
)
from wire.topics import CENTRAL_SUBSCRIPTIONS

NODE = "450102001001-a"
S1 = "0123456789abcdef0123456789abcdef"
S2 = "fedcba9876543210fedcba9876543210"
#: A complete offer as a browser sends it after gathering (trimmed to what is checked).
SDP = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "a=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 102\r\nc=IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\n"
    "a=fingerprint:sha-256 AA:BB:CC\r\na=setup:actpass\r\na=mid:0\r\na=recvonly\r\n"
    "a=rtpmap:102 H264/90000\r\n"
    "a=candidate:1 1 udp 2113937151 127.0.0.1 50000 typ host\r\n"
)


def _reply(op: str, session: str = S1, **kw: object) -> MeetingReply:
    return MeetingReply.model_validate(
        {"node": NODE, "session": session, "op": op, "ts": 1.0, **kw}
    )


def test_topics_and_payloads_round_trip() -> None:
    t = Topics(NODE)
    assert t.meet_req == f"shilian/v1/{NODE}/meet/req"
    assert parse_topic(t.meet_req).kind is Kind.MEET_REQ
    assert parse_topic(t.meet_res).kind is Kind.MEET_RES
    assert "shilian/v1/+/meet/res" in CENTRAL_SUBSCRIPTIONS
    req = MeetingRequest(session=S1, op="offer", ts=5.0, sdp=SDP, camera="cam-gate")
    assert decode(MeetingRequest, encode(req)) == req
    rep = _reply("answer", sdp=SDP, camera="cam-gate")
    assert decode(MeetingReply, encode(rep), node_id=NODE) == rep
    with pytest.raises(RemoteWireError):
        decode(MeetingReply, encode(rep), node_id="450102001001-b")  # topic is the identity
    with pytest.raises(RemoteWireError):
        decode(MeetingRequest, b'{"v":1,"session":"xyz","op":"offer","ts":1}')


@pytest.mark.parametrize(
    ("sdp", "why"),
    [
        (None, "empty"),
        ("", "empty"),
        ("hello", "v=0"),
        (SDP.replace("a=candidate", "b=candidate").replace("b=cand", "junk cand"), "malformed"),
        (SDP.replace("a=fingerprint", "a=xfingerprint"), "fingerprint"),
        (SDP.replace("a=candidate", "a=xcandidate"), "candidate"),
        (SDP.replace("a=ice-ufrag", "a=xice-ufrag"), "ICE"),
        (SDP.replace("m=video", "a=video"), "media"),
        ("v=0\r\n" + "a=x\r\n" * 10_000, "longer"),
    ],
)
def test_sdp_problems(sdp: str | None, why: str) -> None:
    problem = sdp_problem(sdp)
    assert problem is not None and why in problem
    assert " / " in problem  # Chinese first, then English


def test_complete_sdp_has_no_problem() -> None:
    assert sdp_problem(SDP) is None
    assert sdp_problem(SDP.replace("\r\n", "\n")) is None


def test_call_answered_then_hung_up_by_operator() -> None:
    call = Call(S1, NODE, now=100.0)
    req = call.offer(SDP, "cam-gate", now=100.0)
    assert (req.op, req.session, req.camera, req.sdp) == ("offer", S1, "cam-gate", SDP)
    assert call.next_deadline() == 100.0 + OFFER_EXPIRY_S
    out = call.receive(_reply("answer", sdp=SDP, camera="cam-gate"), now=101.0)
    assert out == Answered(SDP, "cam-gate")
    assert call.state is CallState.ACTIVE and call.answered_at == 101.0
    assert call.next_deadline() is None  # an active call does not expire
    assert call.on_timer(1000.0) is None
    bye = call.hang_up(now=200.0)
    assert bye is not None and (bye.op, bye.session) == ("hangup", S1)
    assert call.end == Ended(EndReason.HANGUP_LOCAL) and call.ended_at == 200.0
    assert call.hang_up(now=201.0) is None  # once
    assert call.receive(_reply("hangup"), now=202.0) == Ignored("ended")


def test_call_hung_up_by_node() -> None:
    call = Call(S1, NODE, now=0.0)
    call.offer(SDP, None, now=0.0)
    call.receive(_reply("answer", sdp=SDP, camera="cam"), now=1.0)
    out = call.receive(_reply("hangup"), now=50.0)
    assert out == Ended(EndReason.HANGUP_REMOTE, "")
    assert call.state is CallState.ENDED and call.hang_up(51.0) is None


def test_unanswered_offer_expires_and_tells_the_node() -> None:
    call = Call(S1, NODE, now=0.0)
    call.offer(SDP, None, now=0.0)
    assert call.on_timer(OFFER_EXPIRY_S - 0.001) is None
    bye = call.on_timer(OFFER_EXPIRY_S)
    assert bye is not None and bye.op == "hangup"  # a late answer at the node is torn down
    assert call.end == Ended(EndReason.EXPIRED)
    assert call.receive(_reply("answer", sdp=SDP), now=OFFER_EXPIRY_S + 1) == Ignored("ended")


def test_busy_and_reject_end_the_call_with_the_nodes_reason() -> None:
    busy = Call(S1, NODE, now=0.0)
    busy.offer(SDP, None, now=0.0)
    err = {"code": "busy", "message": "本村正在通话中 / busy"}
    assert busy.receive(_reply("busy", error=err), now=1.0) == Ended(EndReason.BUSY, err["message"])
    rej = Call(S1, NODE, now=0.0)
    rej.offer(SDP, None, now=0.0)
    err = {"code": "no_camera", "message": "本节点没有摄像机 x / no camera x on this node"}
    out = rej.receive(_reply("reject", error=err), now=1.0)
    assert out == Ended(EndReason.REJECTED, err["message"])


def test_malformed_offer_is_refused_before_sending() -> None:
    call = Call(S1, NODE, now=0.0)
    with pytest.raises(ValueError, match="candidate"):
        call.offer(SDP.replace("a=candidate", "a=xcandidate"), None, now=0.0)
    assert call.end is not None and call.end.reason is EndReason.MALFORMED_SDP


def test_malformed_answer_ends_the_call() -> None:
    call = Call(S1, NODE, now=0.0)
    call.offer(SDP, None, now=0.0)
    out = call.receive(_reply("answer", sdp="v=0\r\n"), now=1.0)
    assert isinstance(out, Ended) and out.reason is EndReason.MALFORMED_SDP


def test_replies_of_other_sessions_or_nodes_and_repeats_are_ignored() -> None:
    call = Call(S1, NODE, now=0.0)
    call.offer(SDP, None, now=0.0)
    assert call.receive(_reply("answer", session=S2, sdp=SDP), now=1.0) == Ignored("other_session")
    other = MeetingReply(node="450102001001-b", session=S1, op="hangup", ts=1.0)
    assert call.receive(other, now=1.0) == Ignored("other_session")
    assert call.receive(_reply("camera", camera="cam2"), now=1.0) == Ignored("not_active")
    call.receive(_reply("answer", sdp=SDP, camera="cam"), now=1.0)
    assert call.receive(_reply("answer", sdp=SDP), now=2.0) == Ignored("repeated_answer")
    assert call.receive(_reply("camera", camera="cam2"), now=3.0) == Switched("cam2")
    assert call.camera == "cam2"


def test_switch_only_while_active() -> None:
    call = Call(S1, NODE, now=0.0)
    call.offer(SDP, None, now=0.0)
    with pytest.raises(ValueError):
        call.switch("cam2", now=1.0)
    call.receive(_reply("answer", sdp=SDP, camera="cam"), now=1.0)
    req = call.switch("cam2", now=2.0)
    assert (req.op, req.camera) == ("camera", "cam2")


# -- the node's line ---------------------------------------------------------------------------


def _offer(session: str = S1, sdp: str | None = SDP, camera: str | None = None) -> MeetingRequest:
    return MeetingRequest(session=session, op="offer", ts=1.0, sdp=sdp, camera=camera)


def _line() -> Line:
    return Line(NODE, frozenset({"cam-gate", "cam-road"}))


def test_line_answers_then_is_busy_then_frees_on_hangup() -> None:
    line = _line()
    assert line.receive(_offer(camera="cam-road"), expired=False, now=1.0) == Answer(
        S1, SDP, "cam-road"
    )
    busy = line.receive(_offer(S2), expired=False, now=2.0)
    assert isinstance(busy, Reply) and busy.reply.op == "busy" and busy.reply.session == S2
    assert busy.reply.error is not None and busy.reply.error.code == "busy"
    assert line.receive(_offer(S1), expired=False, now=2.0) == Drop("repeated_offer")
    ans = line.answered(S1, SDP, "cam-road", now=3.0)
    assert ans is not None and (ans.op, ans.sdp, ans.camera) == ("answer", SDP, "cam-road")
    hangup = MeetingRequest(session=S1, op="hangup", ts=4.0)
    assert line.receive(hangup, expired=False, now=4.0) == Release(S1)
    assert line.session is None
    assert isinstance(line.receive(_offer(S2), expired=False, now=5.0), Answer)


def test_line_drops_expired_offers_and_others_hangups() -> None:
    line = _line()
    assert line.receive(_offer(), expired=True, now=1.0) == Drop("expired")
    assert line.session is None
    hangup = MeetingRequest(session=S2, op="hangup", ts=1.0)
    assert line.receive(hangup, expired=False, now=1.0) == Drop("other_session")


def test_line_rejects_malformed_sdp_and_unknown_camera() -> None:
    line = _line()
    bad = line.receive(_offer(sdp="v=0\r\n"), expired=False, now=1.0)
    assert isinstance(bad, Reply) and bad.reply.op == "reject"
    assert bad.reply.error is not None and bad.reply.error.code == "malformed_sdp"
    cam = line.receive(_offer(camera="cam-x"), expired=False, now=1.0)
    assert isinstance(cam, Reply) and cam.reply.error is not None
    assert cam.reply.error.code == "no_camera" and "cam-x" in cam.reply.error.message
    nocam = Line(NODE, frozenset()).receive(_offer(), expired=False, now=1.0)
    assert isinstance(nocam, Reply) and nocam.reply.op == "reject"
    assert line.session is None


def test_line_answer_after_hangup_is_not_sent() -> None:
    line = _line()
    line.receive(_offer(), expired=False, now=1.0)
    line.receive(MeetingRequest(session=S1, op="hangup", ts=2.0), expired=False, now=2.0)
    assert line.answered(S1, SDP, "cam-gate", now=3.0) is None  # the shell releases it


def test_line_failure_and_node_hangup_free_the_line() -> None:
    line = _line()
    line.receive(_offer(), expired=False, now=1.0)
    rep = line.failed(S1, "camera_failed", "摄像机无法打开", "camera cannot be opened", now=2.0)
    assert rep.op == "reject" and rep.error is not None and rep.error.code == "camera_failed"
    assert line.session is None
    line.receive(_offer(S2), expired=False, now=3.0)
    assert line.ended(S1, now=4.0) is None
    bye = line.ended(S2, now=4.0)
    assert bye is not None and bye.op == "hangup" and line.session is None


def test_line_switches_camera_only_for_its_session_and_known_cameras() -> None:
    line = _line()
    line.receive(_offer(), expired=False, now=1.0)
    sw = MeetingRequest(session=S1, op="camera", ts=2.0, camera="cam-road")
    assert line.receive(sw, expired=False, now=2.0) == SwitchCamera(S1, "cam-road")
    bad = MeetingRequest(session=S1, op="camera", ts=2.0, camera="cam-x")
    assert line.receive(bad, expired=False, now=2.0) == Drop("no_camera")
    other = MeetingRequest(session=S2, op="camera", ts=2.0, camera="cam-road")
    assert line.receive(other, expired=False, now=2.0) == Drop("other_session")


def test_line_confirms_a_switch_only_for_its_session() -> None:
    line = _line()
    line.receive(_offer(), expired=False, now=1.0)
    rep = line.switched(S1, "cam-road", now=2.0)
    assert rep is not None and (rep.op, rep.camera) == ("camera", "cam-road")
    assert line.switched(S2, "cam-road", now=2.0) is None


def test_broadcast_offer_needs_no_camera_and_takes_the_line() -> None:
    call = Call(S1, NODE, 10.0)
    req = call.offer(SDP, "cam-gate", 10.0, mode="broadcast")
    assert req.mode == "broadcast" and req.camera is None
    assert decode(MeetingRequest, encode(req)) == req
    line = Line(NODE, frozenset())  # a node without cameras still receives a broadcast
    assert line.receive(req, False, 10.1) == Answer(S1, SDP, None, broadcast=True)
    assert line.session == S1
    ans = line.answered(S1, SDP, None, 10.2)
    assert ans is not None and ans.op == "answer" and ans.camera is None
    assert isinstance(call.receive(ans, 10.3), Answered)
    # a second offer (call or broadcast) meets a busy line
    other = MeetingRequest(session=S2, op="offer", ts=10.4, sdp=SDP, mode="broadcast")
    busy = line.receive(other, False, 10.4)
    assert isinstance(busy, Reply) and busy.reply.op == "busy"
    assert line.receive(MeetingRequest(session=S1, op="hangup", ts=11.0), False, 11.0) == Release(
        S1
    )
    assert line.session is None


def test_an_offer_without_mode_is_a_call() -> None:
    raw = encode(MeetingRequest(session=S1, op="offer", ts=1.0, sdp=SDP)).replace(
        b',"mode":"call"', b""
    )
    assert b"mode" not in raw
    assert decode(MeetingRequest, raw).mode == "call"
    line = Line(NODE, frozenset())
    refused = line.receive(decode(MeetingRequest, raw), False, 1.0)
    assert isinstance(refused, Reply) and refused.reply.op == "reject"


def test_a_broadcast_legs_counts_reach_central_only_while_it_is_active() -> None:
    from wire.meeting import Received, Receiving

    call = Call(S1, NODE, 10.0)
    call.offer(SDP, None, 10.0, mode="broadcast")
    line = Line(NODE, frozenset())
    line.receive(
        MeetingRequest(session=S1, op="offer", ts=10.0, sdp=SDP, mode="broadcast"), False, 10.0
    )
    counts = Received(frames=30, audio_frames=50, width=640, height=360)
    early = line.received(S1, counts, 10.1)
    assert early is not None and call.receive(early, 10.1) == Ignored("not_active")
    ans = line.answered(S1, SDP, None, 10.2)
    assert ans is not None and isinstance(call.receive(ans, 10.2), Answered)
    report = line.received(S1, counts, 11.0)
    assert report is not None and decode(MeetingReply, encode(report), node_id=NODE) == report
    assert call.receive(report, 11.0) == Receiving(counts)
    assert call.receive(_reply("received"), 11.1) == Ignored("no_counts")
    assert call.state is CallState.ACTIVE  # counts never end a leg
    line.ended(S1, 12.0)
    assert line.received(S1, counts, 12.1) is None


def test_line_says_whether_it_is_in_a_session() -> None:
    line = _line()
    line.receive(_offer(), expired=False, now=1.0)
    for session, active in ((S1, True), (S2, False)):
        got = line.receive(MeetingRequest(session=session, op="status", ts=2.0), False, 2.0)
        assert isinstance(got, Reply) and got.reply.op == "status"
        assert got.reply.session == session and got.reply.active is active
    assert line.session == S1  # asking changes nothing
    late = MeetingRequest(session=S1, op="status", ts=2.0)
    assert line.receive(late, expired=True, now=40.0) == Drop("expired")


def test_a_call_taken_up_after_a_restart_is_active_and_ends_with_a_reason() -> None:
    call = Call.resumed(S1, NODE, started=1.0, answered_at=2.0, camera="cam-gate")
    assert call.state is CallState.ACTIVE and call.next_deadline() is None
    assert isinstance(call.receive(_reply("status", active=True), now=5.0), Ignored)
    assert isinstance(call.switch("cam-road", now=6.0), MeetingRequest)
    bye = call.hang_up(7.0, EndReason.CENTRAL_STOPPED)
    assert bye is not None and bye.op == "hangup"
    assert call.end == Ended(EndReason.CENTRAL_STOPPED) and call.ended_at == 7.0


def _prepare(camera: str | None = None, session: str = S2) -> MeetingRequest:
    return MeetingRequest(session=session, op="prepare", ts=1.0, camera=camera)


def test_an_idle_line_prepares_a_known_camera_or_the_conference_camera() -> None:
    line = _line()
    assert line.receive(_prepare("cam-road"), expired=False, now=1.0) == Prepare("cam-road")
    assert line.receive(_prepare(), expired=False, now=1.0) == Prepare(None)
    assert line.session is None  # preparing does not take the line


def test_a_prepare_is_dropped_while_busy_late_or_for_an_unknown_camera() -> None:
    line = _line()
    assert line.receive(_prepare(), expired=True, now=1.0) == Drop("expired")
    assert line.receive(_prepare("cam-none"), expired=False, now=1.0) == Drop("prepare_no_camera")
    assert Line(NODE, frozenset()).receive(_prepare(), expired=False, now=1.0) == Drop(
        "prepare_no_camera"
    )
    assert isinstance(line.receive(_offer(), expired=False, now=1.0), Answer)
    assert line.receive(_prepare("cam-road"), expired=False, now=2.0) == Drop("prepare_busy")


def test_a_prepare_round_trips_and_an_older_node_refuses_it_as_malformed() -> None:
    req = _prepare("cam-road")
    assert decode(MeetingRequest, encode(req)) == req
    # a node whose contract lacks the op fails validation: dropped, never acted on
    payload = encode(req).replace(b'"prepare"', b'"prepared"')
    with pytest.raises(RemoteWireError):
        decode(MeetingRequest, payload)
