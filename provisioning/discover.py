"""``shilian provision discover``: find the node's local devices.

- cameras: ONVIF WS-Discovery Probe, multicast to 239.255.255.250:3702 and/or unicast to given
  addresses (:mod:`provisioning.wsdiscovery` is the codec);
- the alarm board: the board handshake (docs/serial-protocol.md) tried on /dev/ttyUSB*,
  /dev/ttyACM*, /dev/ttyAMA*, /dev/serial0 and given paths;
- SIP terminals by address: SIP OPTIONS over UDP (RFC 3261 §11); any final answer means a SIP
  stack is there, 200 that it accepts requests; the User-Agent is recorded.

Each part reports what it found and what failed; the result is JSON saved in the provisioning
state (``state.json`` → ``discovered``), and the board's port goes into the edge config.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from provisioning import wsdiscovery as wsd

#: How long a multicast probe listens (ONVIF devices answer within APP_MAX_DELAY, 500 ms).
PROBE_WAIT_S = 3.0
#: How long to wait for the board's HELLO after opening a port (it re-sends every second).
BOARD_WAIT_S = 3.0
#: SIP timer T1 (RFC 3261 §17.1.2.2: non-INVITE retransmits at T1, 2·T1, … up to T2).
SIP_T1_S = 0.5
SIP_T2_S = 4.0
#: Give up on a SIP terminal after this long (RFC 3261's 64·T1 is too long for a technician).
SIP_WAIT_S = 4.0
#: Largest SIP response read.
MAX_SIP_BYTES = 65507
#: Serial ports a board may be on (USB adapters, the Pi's UART).
SERIAL_PATTERNS = ("/dev/ttyUSB*", "/dev/ttyACM*", "/dev/ttyAMA*", "/dev/serial0")


# -- SIP OPTIONS (sans-I/O) ----------------------------------------------------------------------


class SipReplyError(ValueError):
    """Not a SIP response to our OPTIONS (the peer's fault)."""


@dataclass(frozen=True, slots=True)
class SipRequest:
    call_id: str
    branch: str
    data: bytes


def sip_options(
    host: str, port: int, local_host: str, local_port: int, user: str = "shilian"
) -> SipRequest:
    """An OPTIONS request for ``sip:host:port`` (RFC 3261 §11.1)."""
    call_id = f"{secrets.token_hex(8)}@{local_host}"
    branch = f"z9hG4bK{secrets.token_hex(8)}"
    tag = secrets.token_hex(4)
    target = f"sip:{host}:{port}"
    data = (
        f"OPTIONS {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local_host}:{local_port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{local_host}>;tag={tag}\r\n"
        f"To: <{target}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"Contact: <sip:{user}@{local_host}:{local_port}>\r\n"
        "Accept: application/sdp\r\n"
        "User-Agent: shilian-provision\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    return SipRequest(call_id, branch, data)


@dataclass(frozen=True, slots=True)
class SipResponse:
    status: int
    reason: str
    headers: dict[str, str]

    @property
    def user_agent(self) -> str | None:
        return self.headers.get("user-agent") or self.headers.get("server")


#: Compact header forms (RFC 3261 §7.3.3) we read.
_COMPACT = {"i": "call-id", "v": "via"}


def parse_sip_response(data: bytes, req: SipRequest) -> SipResponse:
    """The response to ``req``, or :class:`SipReplyError`."""
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
    if headers.get("call-id") != req.call_id:
        raise SipReplyError("answers another request (Call-ID)")
    if req.branch not in headers.get("via", ""):
        raise SipReplyError("answers another transaction (Via branch)")
    cseq = headers.get("cseq", "").split()
    if len(cseq) != 2 or cseq[1].upper() != "OPTIONS":
        raise SipReplyError("answers another method (CSeq)")
    return SipResponse(int(parts[1]), parts[2] if len(parts) > 2 else "", headers)


# -- results -------------------------------------------------------------------------------------


@dataclass
class SipResult:
    address: str
    reachable: bool
    status: int | None = None
    reason: str = ""
    user_agent: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BoardResult:
    device: str
    found: bool
    board_id: str | None = None
    fw_version: str | None = None
    n_inputs: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Discovery:
    cameras: list[wsd.Camera] = field(default_factory=list)
    boards: list[BoardResult] = field(default_factory=list)
    sip: list[SipResult] = field(default_factory=list)
    bad_replies: int = 0
    at: float = field(default_factory=time.time)

    @property
    def board(self) -> BoardResult | None:
        return next((b for b in self.boards if b.found), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "cameras": [c.to_json() for c in self.cameras],
            "boards": [b.to_json() for b in self.boards],
            "board": self.board.to_json() if self.board else None,
            "sip": [s.to_json() for s in self.sip],
            "bad_replies": self.bad_replies,
        }


# -- transports ----------------------------------------------------------------------------------


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]] | OSError] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self.queue.put_nowait(exc)


async def probe_cameras(
    unicast: Sequence[str] = (),
    *,
    multicast: bool = True,
    wait_s: float = PROBE_WAIT_S,
    port: int = wsd.PORT,
    interface: str | None = None,
) -> tuple[list[wsd.Camera], int]:
    """Send the Probe (multicast and/or to each ``unicast`` host) and collect ProbeMatches for
    ``wait_s``; returns the cameras (one per endpoint: a second answer updates the entry) and
    the count of replies that were not usable."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)  # link-local: the village LAN
    if interface:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    sock.bind(("0.0.0.0", 0))
    transport, proto = await loop.create_datagram_endpoint(_Datagrams, sock=sock)
    message_id = wsd.new_message_id()
    data = wsd.probe(message_id)
    found: dict[str, wsd.Camera] = {}
    bad = 0
    try:
        targets = [(h, port) for h in unicast]
        if multicast:
            targets.append((wsd.MULTICAST_ADDR, port))
        for t in targets:
            transport.sendto(data, t)
        deadline = loop.time() + wait_s
        while (left := deadline - loop.time()) > 0:
            try:
                item = await asyncio.wait_for(proto.queue.get(), left)
            except TimeoutError:
                break
            if isinstance(item, OSError):
                continue  # ICMP unreachable from a unicast target: nothing there
            reply, addr = item
            try:
                for cam in wsd.parse_probe_matches(reply, message_id, addr[0]):
                    found[cam.endpoint] = cam
            except wsd.ReplyError:
                bad += 1
    finally:
        transport.close()
    return list(found.values()), bad


async def probe_sip(address: str, *, wait_s: float = SIP_WAIT_S) -> SipResult:
    """OPTIONS to ``host[:port]`` (default 5060) over UDP, retransmitted per RFC 3261 timer E."""
    host, _, port_s = address.rpartition(":") if ":" in address else (address, "", "5060")
    try:
        port = int(port_s)
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (ValueError, OSError) as e:
        return SipResult(address, False, error=f"地址无效 / bad address: {e}")
    loop = asyncio.get_running_loop()
    family, addr = infos[0][0], infos[0][4]
    transport, proto = await loop.create_datagram_endpoint(
        _Datagrams, remote_addr=(str(addr[0]), int(addr[1])), family=family
    )
    try:
        local_host, local_port = transport.get_extra_info("sockname")[:2]
        req = sip_options(host, port, local_host, local_port)
        deadline = loop.time() + wait_s
        interval = SIP_T1_S
        next_send = loop.time()
        while (left := deadline - loop.time()) > 0:
            if loop.time() >= next_send:
                transport.sendto(req.data)
                next_send = loop.time() + interval
                interval = min(interval * 2, SIP_T2_S)
            try:
                item = await asyncio.wait_for(proto.queue.get(), min(left, next_send - loop.time()))
            except TimeoutError:
                continue
            if isinstance(item, OSError):
                return SipResult(address, False, error=f"无人应答 / nothing there: {item}")
            try:
                resp = parse_sip_response(item[0], req)
            except SipReplyError:
                continue
            if resp.status < 200:
                continue  # provisional; wait for the final response
            return SipResult(address, resp.status == 200, resp.status, resp.reason, resp.user_agent)
        return SipResult(address, False, error="超时无应答 / no answer (timeout)")
    finally:
        transport.close()


def serial_candidates(extra: Sequence[str] = ()) -> list[str]:
    """Given paths first, then the usual board ports that exist (each once)."""
    out: list[str] = []
    for p in [*extra, *(q for pat in SERIAL_PATTERNS for q in sorted(glob.glob(pat)))]:
        if p not in out:
            out.append(p)
    return out


async def probe_board(device: str, *, wait_s: float = BOARD_WAIT_S) -> BoardResult:
    """Open ``device`` and wait for the board's handshake (HELLO answered by our HOST_HELLO)."""
    from firmware_bridge.link import LinkUp
    from firmware_bridge.transport import BoardPort, PortError

    try:
        # The timeout outside the port: its cancellation ends the port's task group cleanly.
        async with asyncio.timeout(wait_s), BoardPort.open(device) as port:
            async for ev in port.events():
                if isinstance(ev, LinkUp):
                    b = ev.board
                    return BoardResult(device, True, b.board_id, b.fw_version, b.n_inputs)
    except PortError as e:
        return BoardResult(device, False, error=str(e))
    except TimeoutError:
        pass
    return BoardResult(device, False, error="无握手应答 / no board handshake")


async def discover(
    *,
    cameras: bool = True,
    camera_hosts: Sequence[str] = (),
    multicast: bool = True,
    serial: Sequence[str] = (),
    scan_serial: bool = True,
    sip: Sequence[str] = (),
    wait_s: float = PROBE_WAIT_S,
    camera_port: int = wsd.PORT,
) -> Discovery:
    """Everything at once (cameras, ports and terminals are probed concurrently)."""
    result = Discovery()
    ports = serial_candidates(serial) if scan_serial else list(serial)
    async with asyncio.TaskGroup() as tg:
        cam = (
            tg.create_task(
                probe_cameras(camera_hosts, multicast=multicast, wait_s=wait_s, port=camera_port)
            )
            if cameras and (multicast or camera_hosts)
            else None
        )
        boards = [tg.create_task(probe_board(p)) for p in ports]
        terminals = [tg.create_task(probe_sip(a)) for a in sip]
    if cam is not None:
        result.cameras, result.bad_replies = cam.result()
    result.boards = [t.result() for t in boards]
    result.sip = [t.result() for t in terminals]
    return result


def record(state: Any, found: Discovery) -> None:
    """Save the result in the provisioning state; a board found changes the edge config, so the
    config step is redone by the next ``provision node`` / ``write-config``."""
    with contextlib.suppress(KeyError):
        state.forget("config", "check")
    state.mark("discover", discovered=found.to_json())


def show(found: Discovery) -> None:
    """The result as rich tables (Chinese first)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cams = Table("摄像机 / camera", "地址 / address", "型号 / hardware", "位置 / location")
    for c in found.cameras:
        cams.add_row(c.name or c.endpoint, " ".join(c.xaddrs), c.hardware or "", c.location or "")
    if not found.cameras:
        cams.add_row("未发现 / none found", "", "", "")
    console.print(cams)
    boards = Table("串口 / port", "报警板 / board", "固件 / firmware", "输入 / inputs")
    for b in found.boards:
        if b.found:
            boards.add_row(b.device, f"[green]{b.board_id}[/]", b.fw_version, str(b.n_inputs))
        else:
            boards.add_row(b.device, f"[red]✗[/] {b.error}", "", "")
    if not found.boards:
        boards.add_row("未发现串口 / no serial port", "", "", "")
    console.print(boards)
    if found.sip:
        sip = Table("SIP 终端 / terminal", "结果 / result", "User-Agent")
        for s in found.sip:
            mark = "[green]✓[/]" if s.reachable else "[red]✗[/]"
            detail = f"{s.status} {s.reason}" if s.status is not None else (s.error or "")
            sip.add_row(s.address, f"{mark} {detail}", s.user_agent or "")
        console.print(sip)
