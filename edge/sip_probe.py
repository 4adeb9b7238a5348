"""Is a conference terminal's SIP stack answering? SIP OPTIONS over UDP or TCP (RFC 3261 11).

A small codec of its own (request builder, response reader: sans-I/O) and a thin asyncio
probe. UDP retransmits per timer E (T1 doubling to T2, RFC 3261 17.1.2.2) until the probe's
timeout; an ICMP port-unreachable shows as a refused datagram. Over TCP the answer is read up
to its Content-Length.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from dataclasses import dataclass

#: SIP timers T1 and T2 (RFC 3261 17.1.2.2): non-INVITE retransmits at T1, 2*T1, ... up to T2.
SIP_T1_S = 0.5
SIP_T2_S = 4.0
#: Largest SIP response read (one UDP datagram's payload at most).
MAX_SIP_BYTES = 65507


class SipProbeError(Exception):
    """No SIP answer: ``refused`` (port closed / ICMP unreachable) or ``timeout``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


class SipReplyError(ValueError):
    """Bytes that are not the answer to our OPTIONS (ignored: the probe keeps waiting)."""


@dataclass(frozen=True, slots=True)
class Options:
    call_id: str
    branch: str
    data: bytes


def build_options(host: str, port: int, local: tuple[str, int], transport: str) -> Options:
    """An OPTIONS request for ``sip:host:port`` (RFC 3261 11.1)."""
    call_id = f"{secrets.token_hex(8)}@{local[0]}"
    branch = f"z9hG4bK{secrets.token_hex(8)}"
    target = f"sip:{host}:{port}"
    data = (
        f"OPTIONS {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} {local[0]}:{local[1]};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:shilian@{local[0]}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <{target}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"Contact: <sip:shilian@{local[0]}:{local[1]}>\r\n"
        "Accept: application/sdp\r\n"
        "User-Agent: shilian-edge\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    return Options(call_id, branch, data)


_COMPACT = {"i": "call-id", "v": "via", "l": "content-length"}


def parse_status(data: bytes, req: Options) -> int:
    """The status code of the answer to ``req``, or :class:`SipReplyError`."""
    if len(data) > MAX_SIP_BYTES:
        raise SipReplyError("response too large")
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", errors="replace")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] != "SIP/2.0" or not parts[1].isdigit():
        raise SipReplyError(f"not a SIP response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers.setdefault(_COMPACT.get(key, key), value.strip())
    if headers.get("call-id") != req.call_id or req.branch not in headers.get("via", ""):
        raise SipReplyError("answers another request")
    return int(parts[1])


class _Answers(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | OSError] = asyncio.Queue(16)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(exc)


async def options_status(host: str, port: int, transport: str, timeout_s: float) -> int:
    """The final status of an OPTIONS to ``host:port`` (1xx are skipped), or SipProbeError."""
    try:
        async with asyncio.timeout(timeout_s):
            if transport == "tcp":
                return await _over_tcp(host, port)
            return await _over_udp(host, port)
    except TimeoutError:
        raise SipProbeError("timeout") from None
    except OSError as e:
        raise SipProbeError("refused", e.strerror or str(e)) from None


async def _over_udp(host: str, port: int) -> int:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _Answers, remote_addr=(host, port), family=socket.AF_INET
    )
    try:
        req = build_options(host, port, transport.get_extra_info("sockname")[:2], "udp")
        wait = SIP_T1_S
        while True:
            transport.sendto(req.data)
            try:
                async with asyncio.timeout(wait):
                    while True:
                        got = await proto.queue.get()
                        if isinstance(got, OSError):
                            raise got
                        try:
                            status = parse_status(got, req)
                        except SipReplyError:
                            continue
                        if status >= 200:
                            return status
            except TimeoutError:
                wait = min(wait * 2, SIP_T2_S)
    finally:
        transport.close()


async def _over_tcp(host: str, port: int) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        req = build_options(host, port, writer.get_extra_info("sockname")[:2], "tcp")
        writer.write(req.data)
        await writer.drain()
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                k, _, v = line.partition(b":")
                if k.strip().lower() in (b"content-length", b"l") and v.strip().isdigit():
                    length = int(v.strip())
            if length > MAX_SIP_BYTES:
                raise ConnectionError("SIP answer too large")
            await reader.readexactly(length)
            try:
                status = parse_status(head, req)
            except SipReplyError:
                continue
            if status >= 200:
                return status
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
        raise ConnectionError(f"SIP connection closed ({e})") from None
    finally:
        writer.close()
