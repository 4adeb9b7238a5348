"""Conference terminals and the information-system link as an edge
:class:`~edge.sources.EventSource`: one periodic check per device, its health published as a
retained device state plus a ``device_health`` event on each change (:mod:`edge.device_health`).

- SIP terminals: OPTIONS over UDP or TCP (:mod:`edge.sip_probe`). A final answer below 500
  (also 401/404/405: a SIP stack that processes requests) is ``ok``; 5xx, 6xx and 480
  (temporarily unavailable) are ``unavailable``; no answer or a refused port ``unreachable``.
- H.323 terminals: a TCP connection to the H.225 call-signalling port (1720) is ``ok``.
- the information system: an HTTP(S) GET answering 2xx/3xx, or a TCP connection, is ``ok``;
  anything else ``down``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from edge.device_health import DeviceHealth
from edge.http_client import HttpError, request
from edge.sip_probe import SipProbeError, options_status
from edge.sources import EventSink
from edge.texts import reason
from wire.devices import CONFERENCE_TERMINAL, INFO_SYSTEM, LinkHealth, TerminalHealth

#: SIP answers that mean the terminal cannot take calls now although it answers.
SIP_UNAVAILABLE_BELOW = 500
SIP_TEMPORARILY_UNAVAILABLE = 480

Check = Callable[[], Awaitable[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class _Device:
    report: DeviceHealth
    check: Check
    interval_s: float


async def tcp_check(host: str, port: int, timeout_s: float) -> str | None:
    """None if a TCP connection opens within the timeout, else why not."""
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return "timeout"
    except OSError as e:
        return e.strerror or str(e)
    writer.close()
    return None


def sip_check(host: str, port: int, transport: str, timeout_s: float) -> Check:
    async def check() -> tuple[str, str]:
        try:
            status = await options_status(host, port, transport, timeout_s)
        except SipProbeError as e:
            if e.reason == "timeout":
                return TerminalHealth.UNREACHABLE, reason("sip_silent", seconds=timeout_s)
            return TerminalHealth.UNREACHABLE, reason("sip_refused", detail=str(e))
        if status >= SIP_UNAVAILABLE_BELOW or status == SIP_TEMPORARILY_UNAVAILABLE:
            return TerminalHealth.UNAVAILABLE, reason("sip_status", status=status)
        return TerminalHealth.OK, reason("ok")

    return check


def port_check(host: str, port: int, timeout_s: float, down: str) -> Check:
    async def check() -> tuple[str, str]:
        why = await tcp_check(host, port, timeout_s)
        if why is None:
            return "ok", reason("ok")
        return down, reason("tcp_failed", addr=f"{host}:{port}", detail=why)

    return check


def http_check(url: str, timeout_s: float) -> Check:
    async def check() -> tuple[str, str]:
        try:
            ans = await request(url, timeout_s=timeout_s)
        except HttpError as e:
            return LinkHealth.DOWN, reason("http_failed", detail=str(e)[:120])
        if 200 <= ans.status < 400:
            return LinkHealth.OK, reason("ok")
        return LinkHealth.DOWN, reason("http_status", status=ans.status)

    return check


class TerminalSource:
    name = "terminals"

    def __init__(self, devices: list[_Device], *, wall: Callable[[], float] = time.time) -> None:
        self.devices = devices
        self.wall = wall

    @classmethod
    def from_config(cls, cfg: Any) -> TerminalSource:
        """From ``edge.config.EdgeConfig`` (``terminals``, ``terminal_probe``,
        ``info_system``)."""
        node, tp = cfg.node_id, cfg.terminal_probe
        devices = []
        for t in cfg.terminals:
            port = t.effective_port
            if t.protocol == "sip":
                check = sip_check(t.host, port, t.transport, tp.timeout_s)
            else:
                check = port_check(t.host, port, tp.timeout_s, TerminalHealth.UNREACHABLE)
            report = DeviceHealth(node, t.id, CONFERENCE_TERMINAL, t.name)
            devices.append(_Device(report, check, tp.interval_s))
        info = cfg.info_system
        if info is not None:
            if info.url is not None:
                check = http_check(info.url, info.timeout_s)
            else:
                check = port_check(info.host, info.port, info.timeout_s, LinkHealth.DOWN)
            devices.append(
                _Device(DeviceHealth(node, info.id, INFO_SYSTEM, info.name), check, info.interval_s)
            )
        return cls(devices)

    def health_reports(self) -> list[DeviceHealth]:
        return [d.report for d in self.devices]

    async def run(self, sink: EventSink) -> None:
        async with asyncio.TaskGroup() as tg:
            for d in self.devices:
                tg.create_task(self._watch(d, sink), name=f"device:{d.report.device_id}")

    async def _watch(self, d: _Device, sink: EventSink) -> None:
        while True:
            health, why = await d.check()
            d.report.set(str(health), why, self.wall())
            await d.report.publish(sink)
            await asyncio.sleep(d.interval_s)
