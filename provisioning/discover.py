"""``shilian provision discover``: find the node's local devices.

Cameras, serial ports and SIP terminals are probed concurrently (:mod:`provisioning.lan_probes`).
Each part reports what it found and what failed; the result is JSON saved in the provisioning
state (``state.json`` → ``discovered``), and the board's port goes into the edge config. The
technician sees it as tables (:mod:`provisioning.discovery_tables`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from provisioning import wsdiscovery as wsd
from provisioning.lan_probes import (
    PROBE_WAIT_S,
    BoardResult,
    SipResult,
    probe_board,
    probe_cameras,
    probe_sip,
    serial_candidates,
)


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
