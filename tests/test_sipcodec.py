"""The SIP OPTIONS codec (sipcodec): golden messages from RFC 3261, the rules of matching an
answer to its request, and hypothesis (any bytes → a response or a typed error)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sipcodec
from sipcodec import LocalSipError, OptionsRequest, RemoteSipError

# RFC 3261 §11.1, the example OPTIONS request: only its identifiers are needed to match §11.2.
RFC_REQUEST = OptionsRequest("a84b4c76e66710", "z9hG4bKhjhs8ass877", b"")

# RFC 3261 §11.2, the example answer to it (SDP body not shown in the RFC): a folded Via line
# (§7.3.1), two Contact headers.
RFC_11_2 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKhjhs8ass877\r\n"
    b" ;received=192.0.2.4\r\n"
    b"To: <sip:carol@chicago.com>;tag=93810874\r\n"
    b"From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 63104 OPTIONS\r\n"
    b"Contact: <sip:carol@chicago.com>\r\n"
    b"Contact: <mailto:carol@chicago.com>\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\n"
    b"Accept: application/sdp\r\n"
    b"Accept-Encoding: gzip\r\n"
    b"Accept-Language: en\r\n"
    b"Supported: foo\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 274\r\n"
    b"\r\n"
)

# RFC 3261 §24.1 F2, a registrar's 200 OK to a REGISTER: a SIP response, but not to an OPTIONS.
RFC_24_1_F2 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP bobspc.biloxi.com:5060;branch=z9hG4bKnashds7\r\n"
    b" ;received=192.0.2.4\r\n"
    b"To: Bob <sip:bob@biloxi.com>;tag=2493k59kd\r\n"
    b"From: Bob <sip:bob@biloxi.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"Contact: <sip:bob@192.0.2.4>\r\n"
    b"Expires: 7200\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_rfc3261_options_answer_is_parsed_and_matched() -> None:
    r = sipcodec.parse_options_response(RFC_11_2, RFC_REQUEST)
    assert (r.status, r.reason, r.final) == (200, "OK", True)
    assert r.headers["via"] == (
        "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKhjhs8ass877 ;received=192.0.2.4"
    )
    assert r.headers["contact"] == "<sip:carol@chicago.com>"  # the first of a repeated header
    assert r.headers["allow"] == "INVITE, ACK, CANCEL, OPTIONS, BYE"
    assert r.user_agent is None


def test_rfc3261_register_answer_is_sip_but_not_ours() -> None:
    r = sipcodec.parse_response(RFC_24_1_F2)
    assert r.status == 200 and r.headers["cseq"] == "1826 REGISTER"
    same_ids = OptionsRequest("843817637684230@998sdasdh09", "z9hG4bKnashds7", b"")
    with pytest.raises(RemoteSipError) as e:
        sipcodec.match_response(r, same_ids)
    assert e.value.reason == "method"


GOLDEN_REQUEST = (
    b"OPTIONS sip:192.0.2.9:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:40000;branch=z9hG4bK5f3a;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:shilian@192.0.2.1>;tag=77aa\r\n"
    b"To: <sip:192.0.2.9:5060>\r\n"
    b"Call-ID: c1@192.0.2.1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Contact: <sip:shilian@192.0.2.1:40000>\r\n"
    b"Accept: application/sdp\r\n"
    b"User-Agent: shilian-provision\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_request_bytes() -> None:
    """The headers RFC 3261 §8.1.1 requires, in the shape of the §11.1 example."""
    req = sipcodec.build_options(
        "192.0.2.9", 5060, "192.0.2.1", 40000, call_id="c1@192.0.2.1", branch="5f3a", tag="77aa"
    )
    assert req.data == GOLDEN_REQUEST
    assert (req.call_id, req.branch) == ("c1@192.0.2.1", "z9hG4bK5f3a")
    v6 = sipcodec.build_options("2001:db8::9", 5060, "2001:db8::1", 5062, transport="tcp")
    assert v6.data.startswith(b"OPTIONS sip:[2001:db8::9]:5060 SIP/2.0\r\n")
    assert b"Via: SIP/2.0/TCP [2001:db8::1]:5062;branch=" + v6.branch.encode() in v6.data
    a, b = (sipcodec.build_options("h", 5060, "l", 1) for _ in range(2))
    assert a.call_id != b.call_id and a.branch != b.branch  # fresh transaction each time


def _echo(req: OptionsRequest, status: str = "200 OK", *, via: str | None = None) -> bytes:
    """A UAS's answer: Via, From, Call-ID, CSeq copied from the request (RFC 3261 §8.2.6.2)."""
    lines = req.data.decode().split("\r\n")
    copied = [h for h in lines if h.split(":", 1)[0] in ("Via", "From", "Call-ID", "CSeq")]
    if via is not None:
        copied = [via if h.startswith("Via:") else h for h in copied]
    body = "\r\n".join([f"SIP/2.0 {status}", *copied, "Server: Yealink SIP-T46U"])
    return (body + "\r\nContent-Length: 0\r\n\r\n").encode()


def test_an_answer_must_be_to_this_request() -> None:
    req = sipcodec.build_options("192.0.2.9", 5060, "192.0.2.1", 40000)
    r = sipcodec.parse_options_response(_echo(req), req)
    assert r.status == 200 and r.user_agent == "Yealink SIP-T46U"
    assert not sipcodec.parse_options_response(_echo(req, "100 Trying"), req).final
    other = sipcodec.build_options("192.0.2.9", 5060, "192.0.2.1", 40000)
    cases = {
        "call_id": _echo(req).replace(req.call_id.encode(), other.call_id.encode()),
        # a branch that only starts with ours is another transaction
        "branch": _echo(req, via=f"Via: SIP/2.0/UDP 192.0.2.1:40000;branch={req.branch}x"),
        "method": _echo(req).replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"),
        "not_sip": b"HTTP/1.1 200 OK\r\n\r\n",
        "too_large": _echo(req) + b"x" * sipcodec.MAX_SIP_BYTES,
        "malformed": b"SIP/2.0 200 OK\r\n continued\r\n\r\n",
    }
    for reason, data in cases.items():
        with pytest.raises(RemoteSipError) as e:
            sipcodec.parse_options_response(data, req)
        assert e.value.reason == reason, data
    for status in (b"SIP/2.0 99 Low", b"SIP/2.0 700 High", b"SIP/2.0 \xc2\xb2\xc2\xb2\xc2\xb2 x"):
        with pytest.raises(RemoteSipError, match="not a SIP"):
            sipcodec.parse_response(status + b"\r\n\r\n")


def test_compact_headers_are_read_by_their_full_names() -> None:
    req = sipcodec.build_options("h", 5060, "l", 1)
    data = _echo(req).replace(b"Call-ID:", b"i:").replace(b"Via:", b"v:")
    assert sipcodec.parse_options_response(data, req).status == 200


@pytest.mark.parametrize(
    "host", ["192.0.2.9\r\nX-Injected: 1", "", "a b", "<sip:x>", "h;transport=tcp"]
)
def test_a_field_that_would_break_the_request_is_refused(host: str) -> None:
    with pytest.raises(LocalSipError) as e:
        sipcodec.build_options(host, 5060, "192.0.2.1", 40000)
    assert e.value.reason == "bad_field"
    with pytest.raises(LocalSipError):
        sipcodec.build_options("h", 70000, "l", 1)
    with pytest.raises(LocalSipError):
        sipcodec.build_options("h", 5060, "l", 1, user_agent="x\r\nVia: evil")


@given(st.binary(max_size=2000))
def test_any_bytes_are_a_response_or_a_remote_error(data: bytes) -> None:
    req = sipcodec.build_options("h", 5060, "l", 1)
    try:
        r = sipcodec.parse_options_response(data, req)
    except RemoteSipError as e:
        assert e.reason in ("too_large", "not_sip", "malformed", "call_id", "branch", "method")
    else:
        assert 100 <= r.status <= 699


_HEADER_LINE = st.one_of(
    st.text(max_size=40).map(lambda t: t.replace("\r\n", "")),
    st.sampled_from(["Via: SIP/2.0/UDP l:1;branch=z9hG4bKx", "i: c", "CSeq: 1 OPTIONS", " ;x"]),
)


@given(st.integers(0, 999), st.lists(_HEADER_LINE, max_size=12))
def test_sip_shaped_messages_are_a_response_or_a_remote_error(
    status: int, lines: list[str]
) -> None:
    """Mostly well-formed messages reach the header and matching code, not just the first line."""
    data = "\r\n".join([f"SIP/2.0 {status:03d} Reason", *lines, "", ""]).encode()
    req = OptionsRequest("c", "z9hG4bKx", b"")
    try:
        r = sipcodec.parse_options_response(data, req)
    except RemoteSipError:
        return
    assert r.status == status and r.headers["call-id"] == "c"


@given(st.text(max_size=30), st.integers(-1, 70000))
def test_any_host_is_a_matchable_request_or_a_local_error(host: str, port: int) -> None:
    try:
        req = sipcodec.build_options(host, port, "192.0.2.1", 40000)
    except LocalSipError:
        return
    assert sipcodec.parse_options_response(_echo(req), req).status == 200
