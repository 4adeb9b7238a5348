"""The camera probe's pure cores: RTSP parsing and requests, Digest auth (RFC 2617 / RFC 7616
vectors), the SDP H.264 track, RTP/H.264 key-frame watching, the SIP OPTIONS codec. Golden
bytes are captured from the gst-rtsp-server test camera (tests/rtsp_camera.py)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.digest import AuthError, Challenge, authorization, best, digest_response, parse_challenges
from edge.rtp_h264 import FU_A, MAX_KEYFRAME_BYTES, H264Watcher, RtpError, parse_rtp
from edge.rtsp import (
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    Interleaved,
    Response,
    RtspClient,
    RtspParser,
    RtspProtocolError,
)
from edge.sdp import SdpError, h264_track
from edge.sip_probe import SipReplyError, build_options, parse_status

GST_401 = (
    b"RTSP/1.0 401 Unauthorized\r\nCSeq: 2\r\n"
    b'WWW-Authenticate: Digest realm="GStreamer RTSP Server", nonce="75be1da529c368fa"\r\n'
    b"Server: GStreamer RTSP server\r\nDate: Sat, 05 Dec 2026 13:11:16 GMT\r\n\r\n"
)
GST_SDP = (
    b"v=0\r\no=- 18136884206154189621 1 IN IP4 127.0.0.1\r\ns=Session streamed with GStreamer\r\n"
    b"i=rtsp-server\r\nt=0 0\r\na=tool:GStreamer\r\na=type:broadcast\r\na=control:*\r\n"
    b"a=range:npt=now-\r\nm=video 0 RTP/AVP 96\r\nc=IN IP4 0.0.0.0\r\nb=AS:2097\r\n"
    b"a=rtpmap:96 H264/90000\r\na=framerate:10\r\na=fmtp:96 packetization-mode=1;"
    b"sprop-parameter-sets=Z0LAFdoFB+wFqDAwNSgAAAMACAAAAwCkeLF1,aM48gA==;"
    b"profile-level-id=42c015;level-asymmetry-allowed=1\r\na=control:stream=0\r\n"
    b"a=ts-refclk:local\r\na=mediaclk:sender\r\n"
    b"a=ssrc:2446442431 cname:user2504239011@host-71e584c2\r\n"
)
GST_DESCRIBE = (
    b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nContent-Type: application/sdp\r\n"
    b"Content-Base: rtsp://127.0.0.1:39493/cam0/\r\nServer: GStreamer RTSP server\r\n"
    b"Content-Length: %d\r\n\r\n" % len(GST_SDP)
) + GST_SDP


# -- RTSP parser ----------------------------------------------------------------------------


def test_gst_answers_split_anywhere_parse_the_same() -> None:
    stream = GST_401 + b"$\x00\x00\x05hello" + GST_DESCRIBE
    for cut in range(len(stream)):
        p = RtspParser()
        p.receive_data(stream[:cut])
        p.receive_data(stream[cut:])
        evs = p.events()
        assert [type(e) for e in evs] == [Response, Interleaved, Response]
        r401, frame, desc = evs
        assert isinstance(r401, Response) and isinstance(desc, Response)
        assert (r401.status, r401.cseq, desc.status, desc.cseq) == (401, 2, 200, 3)
        assert frame == Interleaved(0, b"hello")
        assert desc.body == GST_SDP


def test_bounds_are_checked_before_buffering() -> None:
    p = RtspParser()
    with pytest.raises(RtspProtocolError) as e:
        p.receive_data(b"RTSP/1.0 200 OK\r\n" + b"X: " + b"a" * MAX_HEAD_BYTES)
    assert e.value.reason == "head_too_large"
    p = RtspParser()
    with pytest.raises(RtspProtocolError) as e:
        p.receive_data(b"RTSP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1))
    assert e.value.reason == "body_too_large"
    with pytest.raises(RtspProtocolError) as e:
        RtspParser().receive_data(b"HTTP/1.1 200 OK\r\n\r\n")
    assert e.value.reason == "bad_status_line"
    with pytest.raises(RtspProtocolError) as e:
        RtspParser().receive_data(b"SSH-2.0-dropbear")
    assert e.value.reason == "not_rtsp"


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=300))
def test_parser_is_total(data: bytes, cut: int) -> None:
    p = RtspParser()
    try:
        p.receive_data(data[:cut])
        p.receive_data(data[cut:])
    except RtspProtocolError:
        return
    for ev in p.events():
        assert isinstance(ev, Response | Interleaved)


_token = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
_value = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)


@given(
    st.integers(min_value=100, max_value=999),
    st.lists(st.tuples(_token, _value), max_size=8),
    st.binary(max_size=200),
    st.lists(st.integers(min_value=0, max_value=400), max_size=4),
)
def test_serialised_responses_round_trip_at_any_split(
    status: int, headers: list[tuple[str, str]], body: bytes, cuts: list[int]
) -> None:
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    head = f"RTSP/1.0 {status} Why\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    data = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    p = RtspParser()
    last = 0
    for c in sorted(cuts):
        p.receive_data(data[last:c])
        last = max(last, c)
    p.receive_data(data[last:])
    (resp,) = p.events()
    assert isinstance(resp, Response)
    assert (resp.status, resp.body) == (status, body)
    assert [(k, v.strip()) for k, v in resp.headers][:-1] == [(k, v.strip()) for k, v in headers]


# -- Digest ---------------------------------------------------------------------------------


def test_rfc2617_example() -> None:
    ch = Challenge(
        "digest",
        {
            "realm": "testrealm@host.com",
            "qop": "auth,auth-int",
            "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        },
    )
    resp, qop = digest_response(
        ch, "Mufasa", "Circle Of Life", "GET", "/dir/index.html", nc=1, cnonce="0a4f113b"
    )
    assert (resp, qop) == ("6629fae49393a05397450978507c4ef1", "auth")


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    header = (
        'Digest realm="http-auth@example.org", qop="auth, auth-int", '
        f"algorithm={algorithm}, "
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    (ch,) = parse_challenges([header])
    cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    resp, _ = digest_response(
        ch, "Mufasa", "Circle of Life", "GET", "/dir/index.html", cnonce=cnonce
    )
    assert resp == expected
    auth = authorization(ch, "Mufasa", "Circle of Life", "GET", "/dir/index.html", cnonce=cnonce)
    assert f'response="{expected}"' in auth and "nc=00000001" in auth and "opaque=" in auth


def test_strongest_challenge_is_answered_and_basic_works() -> None:
    chs = parse_challenges(
        [
            'Basic realm="cam"',
            'Digest realm="cam", nonce="n1"',
            'Digest realm="cam", nonce="n2", algorithm=SHA-256',
        ]
    )
    picked = best(chs)
    assert picked is not None and picked.params["nonce"] == "n2"
    (basic,) = parse_challenges(['Basic realm="cam"'])
    assert authorization(basic, "admin", "pw", "DESCRIBE", "rtsp://x/") == "Basic " + (
        base64.b64encode(b"admin:pw").decode()
    )
    with pytest.raises(AuthError):
        digest_response(
            Challenge("digest", {"nonce": "n", "algorithm": "SHA-512-256x"}), "a", "b", "M", "u"
        )


@given(st.lists(st.text(max_size=120), max_size=3))
def test_challenge_parsing_is_total(values: list[str]) -> None:
    try:
        for ch in parse_challenges(values):
            assert ch.scheme in ("digest", "basic")
    except AuthError:
        pass


def test_client_answers_gst_challenge_once_then_reports_refusal() -> None:
    c = RtspClient("admin", "pw")
    c.receive_data(GST_401)
    (r,) = c.events()
    assert isinstance(r, Response)
    assert c.challenged(r) is True  # first challenge: retry with credentials
    req = c.request("DESCRIBE", "rtsp://127.0.0.1/cam0").decode()
    assert 'Authorization: Digest username="admin", realm="GStreamer RTSP Server"' in req
    assert "CSeq: 1" in req
    assert c.challenged(r) is False  # same nonce refused again: wrong credentials
    assert RtspClient().challenged(r) is False  # no credentials configured


def test_session_and_timeout_from_setup() -> None:
    c = RtspClient()
    c.took_session(Response(200, "OK", (("Session", "abcDEF;timeout=30"),), b""))
    assert (c.session, c.session_timeout_s) == ("abcDEF", 30.0)
    assert "Session: abcDEF" in c.request("PLAY", "rtsp://x/").decode()


# -- SDP ------------------------------------------------------------------------------------


def test_gst_sdp_track() -> None:
    t = h264_track(GST_SDP, "rtsp://127.0.0.1:39493/cam0/")
    assert t.control == "rtsp://127.0.0.1:39493/cam0/stream=0"
    assert t.payload_type == 96
    assert [s[0] & 0x1F for s in t.parameter_sets] == [7, 8]  # SPS, PPS


def test_sdp_without_h264_is_refused() -> None:
    with pytest.raises(SdpError):
        h264_track(b"v=0\r\nm=video 0 RTP/AVP 26\r\na=rtpmap:26 JPEG/90000\r\n", "rtsp://x/")


@given(st.binary(max_size=400))
def test_sdp_is_total(data: bytes) -> None:
    try:
        t = h264_track(data, "rtsp://x/")
    except SdpError:
        return
    assert t.control.startswith("rtsp:") and isinstance(t.payload_type, int)


# -- RTP / H.264 ----------------------------------------------------------------------------


def rtp(seq: int, ts: int, payload: bytes, *, marker: bool = False, pt: int = 96) -> bytes:
    return (
        bytes([0x80, (0x80 if marker else 0) | pt])
        + seq.to_bytes(2, "big")
        + ts.to_bytes(4, "big")
        + b"\x00\x00\x00\x01"
        + payload
    )


def fu_a(nal_header: int, body: bytes, *, start: bool, end: bool) -> bytes:
    ind = (nal_header & 0xE0) | FU_A
    hdr = (0x80 if start else 0) | (0x40 if end else 0) | (nal_header & 0x1F)
    return bytes([ind, hdr]) + body


def test_key_frame_found_from_headers_and_gathered_on_demand() -> None:
    w = H264Watcher(96, (b"\x67sps", b"\x68pps"))
    w.feed(rtp(1, 100, b"\x41slice"), now=1.0)  # non-IDR slice
    assert (w.last_rtp, w.last_keyframe) == (1.0, None)
    w.feed(rtp(2, 200, fu_a(0x65, b"AAAA", start=True, end=False)), now=2.0)
    assert w.last_keyframe == 2.0  # the IDR's first fragment is enough to see it
    w.want_sample()
    assert w.take_sample() is None
    # the next key frame: in-band SPS/PPS in a STAP-A, then an IDR in two fragments
    stap = b"\x18" + b"".join(len(n).to_bytes(2, "big") + n for n in (b"\x67SPS2", b"\x68PPS2"))
    w.feed(rtp(3, 300, stap), now=3.0)
    w.feed(rtp(4, 300, fu_a(0x65, b"head", start=True, end=False)), now=3.0)
    w.feed(rtp(5, 300, fu_a(0x65, b"tail", start=False, end=True), marker=True), now=3.0)
    sample = w.take_sample()
    assert sample == b"\x00\x00\x00\x01\x67SPS2\x00\x00\x00\x01\x68PPS2\x00\x00\x00\x01\x65headtail"
    assert w.take_sample() is None  # one sample per request


def test_lost_fragment_drops_the_sample_and_waits_for_the_next_key_frame() -> None:
    w = H264Watcher(96, (b"\x67s", b"\x68p"))
    w.want_sample()
    w.feed(rtp(10, 1, fu_a(0x65, b"a", start=True, end=False)), now=1.0)
    w.feed(rtp(12, 1, fu_a(0x65, b"c", start=False, end=True), marker=True), now=1.0)  # 11 lost
    assert w.take_sample() is None
    w.feed(rtp(13, 2, b"\x65whole", marker=True), now=2.0)
    assert w.take_sample() == b"\x00\x00\x00\x01\x67s\x00\x00\x00\x01\x68p\x00\x00\x00\x01\x65whole"


def test_oversized_key_frame_is_not_held() -> None:
    w = H264Watcher(96)
    w.want_sample()
    chunk = b"x" * 60_000
    w.feed(rtp(0, 1, fu_a(0x65, chunk, start=True, end=False)), now=0.0)
    for i in range(1, MAX_KEYFRAME_BYTES // len(chunk) + 2):
        w.feed(rtp(i, 1, fu_a(0x65, chunk, start=False, end=False)), now=0.0)
    w.feed(rtp(999, 1, fu_a(0x65, b"", start=False, end=True), marker=True), now=0.0)
    assert w.take_sample() is None


@given(st.binary(max_size=80))
def test_rtp_parsing_and_watching_are_total(data: bytes) -> None:
    try:
        pkt = parse_rtp(data)
    except RtpError:
        pkt = None
    assert pkt is None or len(pkt.payload) <= len(data) - 12
    w = H264Watcher(data[1] & 0x7F if len(data) > 1 else 96)
    w.want_sample()
    w.feed(data, now=0.0)
    w.take_sample()


# -- SIP OPTIONS codec ----------------------------------------------------------------------


def test_sip_answer_must_match_the_request() -> None:
    req = build_options("10.0.0.5", 5060, ("10.0.0.2", 40000), "udp")
    assert req.data.startswith(
        b"OPTIONS sip:10.0.0.5:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:40000"
    )
    answer = (
        "SIP/2.0 503 Service Unavailable\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.2:40000;branch={req.branch}\r\n"
        f"Call-ID: {req.call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    assert parse_status(answer, req) == 503
    other = build_options("10.0.0.5", 5060, ("10.0.0.2", 40000), "udp")
    with pytest.raises(SipReplyError):
        parse_status(answer, other)


@given(st.binary(max_size=200))
def test_sip_parsing_is_total(data: bytes) -> None:
    req = build_options("h", 5060, ("l", 1), "tcp")
    try:
        status = parse_status(data, req)
    except SipReplyError:
        return
    raise AssertionError(f"a random answer matched our request's Call-ID and branch: {status}")
