"""A sans-I/O RTSP 1.0 client core (RFC 2326) for camera health probes.

Bytes in (:meth:`RtspClient.receive_data`), events out (:meth:`RtspClient.events`): a
:class:`Response` to a request, or an :class:`Interleaved` frame (``$``, channel, 16-bit
length: RTP/RTCP over the RTSP TCP connection, section 10.12, which passes NAT and firewalls
where UDP RTP does not). :meth:`RtspClient.request` builds a request's bytes, numbering CSeq,
carrying the session and answering the camera's last auth challenge (:mod:`edge.digest`).
Every size is bounded before anything is buffered for it; a peer that breaks the rules gets a
:class:`RtspProtocolError` (a fault of the camera, never of ours).
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

from edge.digest import AuthError, Challenge, authorization, best, parse_challenges

#: Longest status line plus headers: camera answers are < 2 KiB; 16 KiB bounds a broken peer.
MAX_HEAD_BYTES = 16 * 1024
#: Most header lines in one response (real: ~10).
MAX_HEADERS = 64
#: Longest body (an SDP is ~1 KiB; GET_PARAMETER bodies are tiny).
MAX_BODY_BYTES = 64 * 1024
#: Interleaved frames carry a 16-bit length: at most this, by construction.
MAX_INTERLEAVED_BYTES = 0xFFFF
USER_AGENT = "shilian-edge"


class RtspProtocolError(Exception):
    """The camera sent something that is not RTSP (or exceeds a bound); ``reason`` is a short
    label (metrics, logs)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        n = name.lower()
        return next((v for k, v in self.headers if k.lower() == n), None)

    def header_all(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    @property
    def cseq(self) -> int | None:
        v = self.header("CSeq")
        return int(v) if v is not None and v.strip().isdigit() else None


@dataclass(frozen=True, slots=True)
class Interleaved:
    channel: int
    payload: bytes


Event = Response | Interleaved


class RtspParser:
    """Splits a byte stream into responses and interleaved frames (total: bytes → events, or
    :class:`RtspProtocolError`; after an error the parser is unusable)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._events: deque[Event] = deque()

    def receive_data(self, data: bytes) -> None:
        self._buf += data
        pos = 0
        try:
            while (n := self._parse_one(pos)) > pos:
                pos = n
        finally:
            del self._buf[:pos]  # once per call: no copy of the rest per frame

    def events(self) -> list[Event]:
        out = list(self._events)
        self._events.clear()
        return out

    def _parse_one(self, pos: int) -> int:
        """Parse one message at ``pos``; return the position after it (``pos``: incomplete)."""
        buf = self._buf
        left = len(buf) - pos
        if left <= 0:
            return pos
        if buf[pos] == 0x24:  # '$'
            if left < 4:
                return pos
            size = (buf[pos + 2] << 8) | buf[pos + 3]
            if left < 4 + size:
                return pos
            self._events.append(Interleaved(buf[pos + 1], bytes(buf[pos + 4 : pos + 4 + size])))
            return pos + 4 + size
        end = buf.find(b"\r\n\r\n", pos, pos + MAX_HEAD_BYTES + 4)
        if end < 0:
            if left > MAX_HEAD_BYTES:
                raise RtspProtocolError("head_too_large", f"{left} bytes without an end")
            start = bytes(buf[pos : pos + 5])
            if not b"RTSP/".startswith(start):
                raise RtspProtocolError("not_rtsp", repr(bytes(buf[pos : pos + 16])))
            return pos
        status, reason, headers = _parse_head(bytes(buf[pos:end]))
        length = 0
        for k, v in headers:
            if k.lower() == "content-length":
                if not v.strip().isdigit():
                    raise RtspProtocolError("bad_length", v[:32])
                length = int(v)
        if length > MAX_BODY_BYTES:
            raise RtspProtocolError("body_too_large", str(length))
        total = end + 4 + length
        if len(buf) < total:
            return pos
        self._events.append(Response(status, reason, headers, bytes(buf[end + 4 : total])))
        return total


def _parse_head(head: bytes) -> tuple[int, str, tuple[tuple[str, str], ...]]:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("RTSP/1.") or not parts[1].isdigit():
        raise RtspProtocolError("bad_status_line", lines[0][:64])
    status = int(parts[1])
    if not 100 <= status <= 999:
        raise RtspProtocolError("bad_status_line", lines[0][:64])
    if len(lines) - 1 > MAX_HEADERS:
        raise RtspProtocolError("too_many_headers", str(len(lines) - 1))
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # obsolete line folding
            k, v = headers[-1]
            headers[-1] = (k, f"{v} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise RtspProtocolError("bad_header", line[:64])
        headers.append((name.strip(), value.strip()))
    return status, parts[2] if len(parts) > 2 else "", tuple(headers)


class RtspClient:
    """One RTSP connection's client side: request bytes out, responses and frames in."""

    def __init__(self, username: str = "", password: str = "") -> None:
        self.username = username
        self.password = password
        self._cseq = 0
        self.session: str | None = None
        #: Session timeout the camera announced in SETUP (RFC 2326 12.37; default 60 s).
        self.session_timeout_s = 60.0
        self._challenge: Challenge | None = None
        self._nc = 0
        self._parser = RtspParser()

    @property
    def has_credentials(self) -> bool:
        return bool(self.username)

    def request(self, method: str, uri: str, headers: dict[str, str] | None = None) -> bytes:
        """A request's bytes; returns them and numbers it (its CSeq is :attr:`last_cseq`)."""
        self._cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self._cseq}", f"User-Agent: {USER_AGENT}"]
        if self.session is not None:
            lines.append(f"Session: {self.session}")
        if self._challenge is not None and self.has_credentials:
            self._nc += 1
            lines.append(
                "Authorization: "
                + authorization(
                    self._challenge,
                    self.username,
                    self.password,
                    method,
                    uri,
                    nc=self._nc,
                    cnonce=os.urandom(8).hex(),
                )
            )
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    @property
    def last_cseq(self) -> int:
        return self._cseq

    def receive_data(self, data: bytes) -> None:
        self._parser.receive_data(data)

    def events(self) -> list[Event]:
        return self._parser.events()

    def challenged(self, resp: Response) -> bool:
        """Take a 401's challenge. True if a retry with it may succeed: there are credentials,
        and this is the first challenge or a new nonce (``stale``); False means the
        credentials were refused."""
        if resp.status != 401 or not self.has_credentials:
            return False
        try:
            ch = best(parse_challenges(resp.header_all("WWW-Authenticate")))
        except AuthError as e:
            raise RtspProtocolError("bad_challenge", str(e)) from None
        if ch is None:
            raise RtspProtocolError("bad_challenge", "no Digest or Basic challenge")
        retry = self._challenge is None or ch.params.get("stale", "").lower() == "true"
        self._challenge, self._nc = ch, 0
        return retry

    def took_session(self, resp: Response) -> None:
        """Remember the session of a SETUP answer (``id;timeout=N``)."""
        v = resp.header("Session")
        if v is None:
            raise RtspProtocolError("no_session", "SETUP answered without Session")
        sid, _, params = v.partition(";")
        self.session = sid.strip()
        for p in params.split(";"):
            k, _, val = p.strip().partition("=")
            if k.lower() == "timeout" and val.isdigit() and int(val) > 0:
                self.session_timeout_s = float(int(val))
