"""The OPTIONS request (RFC 3261 §11) and the parsing and matching of its response.

A request is written with the identifiers that let its answer be recognised: the Call-ID and
the Via branch (RFC 3261 §17.1.3 matches a response to its client transaction by the branch and
the CSeq method). :func:`parse_response` is total over bytes; :func:`match_response` refuses an
answer to any other request.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from sipcodec.errors import LocalSipError, RemoteSipError

#: Largest response parsed: the largest UDP payload (65,535 − 8 − 20). A TCP transport reads at
#: most this much before giving the bytes to the parser.
MAX_SIP_BYTES = 65507
#: Magic cookie every RFC 3261 branch starts with (§8.1.1.7).
BRANCH_COOKIE = "z9hG4bK"

#: Status-Line (RFC 3261 §7.2): ``SIP/2.0 3DIGIT Reason-Phrase``; classes 1xx–6xx (§21).
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?")
#: Compact header forms (RFC 3261 §7.3.3, §20) mapped to their full names.
_COMPACT = {
    "i": "call-id",
    "v": "via",
    "f": "from",
    "t": "to",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "e": "content-encoding",
    "k": "supported",
    "s": "subject",
}
#: Characters that would end a token, header or URI early if put into a request field.
_UNSAFE = re.compile(r"[\s<>;,\"]")


@dataclass(frozen=True, slots=True)
class OptionsRequest:
    """The request's bytes and what its answer must echo."""

    call_id: str
    branch: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SipResponse:
    """A parsed response: status code, reason phrase, headers by lower-case full name (the
    first of each name; folded lines joined)."""

    status: int
    reason: str
    headers: dict[str, str]

    @property
    def final(self) -> bool:
        """A final response (RFC 3261 §7.2: 1xx is provisional, the transaction goes on)."""
        return self.status >= 200

    @property
    def user_agent(self) -> str | None:
        """What the peer says it is (``User-Agent``, else ``Server``)."""
        return self.headers.get("user-agent") or self.headers.get("server")


def _field(name: str, value: str) -> str:
    if not value or _UNSAFE.search(value):
        raise LocalSipError("bad_field", f"{name} {value!r} cannot be written into a request")
    return value


def _port(name: str, value: int) -> int:
    if not 0 < value <= 65535:
        raise LocalSipError("bad_field", f"{name} {value} is not a port")
    return value


def _hostport(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets (RFC 3261 §25.1 ``IPv6reference``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_options(
    host: str,
    port: int,
    local_host: str,
    local_port: int,
    *,
    user: str = "shilian",
    user_agent: str = "shilian-provision",
    transport: str = "UDP",
    call_id: str | None = None,
    branch: str | None = None,
    tag: str | None = None,
) -> OptionsRequest:
    """An OPTIONS request for ``sip:host:port`` from ``user@local_host:local_port``.

    ``call_id``, ``branch`` (without the ``z9hG4bK`` cookie) and ``tag`` are random unless
    given (golden tests give them). :class:`LocalSipError` for a field that cannot be written.
    """
    host = _field("host", host)
    local_host = _field("local host", local_host)
    user = _field("user", user)
    transport = _field("transport", transport).upper()
    _port("port", port)
    _port("local port", local_port)
    call_id = _field("Call-ID", call_id or f"{secrets.token_hex(8)}@{local_host}")
    branch = BRANCH_COOKIE + _field("branch", branch or secrets.token_hex(8))
    tag = _field("tag", tag or secrets.token_hex(4))
    if not re.fullmatch(r"[^\r\n]+", user_agent):
        raise LocalSipError("bad_field", f"User-Agent {user_agent!r} cannot be written")
    local = _hostport(local_host, local_port)
    target = f"sip:{_hostport(host, port)}"
    data = (
        f"OPTIONS {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {local};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{local_host}>;tag={tag}\r\n"
        f"To: <{target}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"Contact: <sip:{user}@{local}>\r\n"
        "Accept: application/sdp\r\n"
        f"User-Agent: {user_agent}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    return OptionsRequest(call_id, branch, data)


def parse_response(data: bytes) -> SipResponse:
    """Any bytes → the response's status line and headers, or :class:`RemoteSipError`.

    Lines end in CRLF (RFC 3261 §7); a line starting with a space or tab continues the header
    before it (§7.3.1). The body is not read (an OPTIONS answer's body is not needed).
    """
    if len(data) > MAX_SIP_BYTES:
        raise RemoteSipError("too_large", f"response too large ({len(data)} bytes)")
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", errors="replace")
    lines = head.split("\r\n")
    status = _STATUS_LINE.fullmatch(lines[0])
    if status is None:
        raise RemoteSipError("not_sip", f"not a SIP response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    folding: str | None = None  # the header a continuation line extends (first of its name)
    for n, line in enumerate(lines[1:]):
        if line[:1] in (" ", "\t"):
            if n == 0:
                raise RemoteSipError("malformed", "continuation line before any header")
            if folding is not None:
                headers[folding] = f"{headers[folding]} {line.strip()}"
            continue
        raw, sep, value = line.partition(":")
        key = raw.strip().lower()
        name = _COMPACT.get(key, key)
        if not sep or name in headers:
            folding = None  # not a header line, or a repeated header: only the first is kept
            continue
        headers[name] = value.strip()
        folding = name
    return SipResponse(int(status.group(1)), status.group(2) or "", headers)


def match_response(resp: SipResponse, req: OptionsRequest) -> SipResponse:
    """``resp`` if it answers ``req`` (same Call-ID, the topmost Via's branch, CSeq method
    OPTIONS: RFC 3261 §17.1.3), else :class:`RemoteSipError`."""
    if resp.headers.get("call-id") != req.call_id:
        raise RemoteSipError("call_id", "answers another request (Call-ID)")
    if _via_branch(resp.headers.get("via", "")) != req.branch:
        raise RemoteSipError("branch", "answers another transaction (Via branch)")
    cseq = resp.headers.get("cseq", "").split()
    if len(cseq) != 2 or cseq[1].upper() != "OPTIONS":
        raise RemoteSipError("method", "answers another method (CSeq)")
    return resp


def parse_options_response(data: bytes, req: OptionsRequest) -> SipResponse:
    """:func:`parse_response` then :func:`match_response`: the answer to ``req``, or
    :class:`RemoteSipError`."""
    return match_response(parse_response(data), req)


def _via_branch(via: str) -> str | None:
    """The ``branch`` parameter of the topmost via-parm (a Via header may list several, comma
    separated; RFC 3261 §20.42)."""
    for param in via.split(",", 1)[0].split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "branch":
            return value.strip()
    return None
