"""Probes of the village LAN and the box's serial ports, each a thin transport over a codec.

- cameras: ONVIF WS-Discovery Probe, multicast to 239.255.255.250:3702 and/or unicast to given
  addresses (:mod:`provisioning.wsdiscovery` is the codec);
- the alarm board: the board handshake (docs/serial-protocol.md) on a serial port;
- SIP terminals by address: SIP OPTIONS over UDP (RFC 3261 §11, :mod:`sipcodec` is the codec);
  any final answer means a SIP stack is there, 200 that it accepts requests; the User-Agent is
  recorded.

Each probe returns what it found or why not; peers' bad replies are counted or skipped, never
raised.
"""

from __future__ import annotations

import asyncio
import glob
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sipcodec
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
#: Serial ports a board may be on (USB adapters, the Pi's UART).
SERIAL_PATTERNS = ("/dev/ttyUSB*", "/dev/ttyACM*", "/dev/ttyAMA*", "/dev/serial0")


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
        try:
            req = sipcodec.build_options(host, port, local_host, local_port)
        except sipcodec.LocalSipError as e:  # resolvable, yet not writable into a SIP URI
            return SipResult(address, False, error=f"地址无效 / bad address: {e}")
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
                resp = sipcodec.parse_options_response(item[0], req)
            except sipcodec.RemoteSipError:
                continue
            if not resp.final:
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
