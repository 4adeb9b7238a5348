"""What a call at the node uses besides the camera: the TURN server (static or short-lived
credentials, relay-only), the box's sound devices and screen (docs/meetings.md). Light: imports
no aiortc or FFmpeg (an idle agent stays small); edge.meeting_av, which does, is imported by
the desk when a call comes.

A part that fails (TURN unreachable, a sound device or screen missing) is logged once per call
with a zh/en message and counted in ``shilian_edge_meeting_faults{part}``; the call goes on
without it, except that a relay-only call without any relay candidate cannot connect at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from edge.config import EdgeConfig
from wire.meeting import turn_rest_credentials

log = logging.getLogger("shilian.edge.meeting")

#: Lifetime of the TURN credentials derived for one call: a village meeting lasts minutes to a
#: couple of hours; coturn checks the expiry at allocation and on refreshes.
TURN_CREDENTIALS_TTL_S = 4 * 3600

#: Parts of a call that can fail on their own (metric label ``part``).
PARTS = ("turn", "audio_in", "audio_out", "video_out")


class CallExtras(Protocol):
    """What ``edge.meeting_media.MediaCall`` calls on a call's extra parts
    (``edge.meeting_av.CallAv``)."""

    async def prepare(self, pc: Any) -> None: ...
    def negotiate(self, pc: Any, video_sender: Any) -> None: ...
    def answered(self, sdp: str) -> None: ...
    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Turn:
    """The TURN server of one call: URL, credentials, whether only relayed candidates go."""

    url: str
    username: str
    password: str
    relay_only: bool = False


@dataclass(frozen=True, slots=True)
class Fault:
    """One failed part of a call: ``part`` (metric label) and a zh / en message."""

    part: str
    zh: str
    en: str


class CallOptions:
    """The node's meeting options and the counter of failed parts."""

    def __init__(self, config: EdgeConfig, registry: CollectorRegistry) -> None:
        self.config = config
        self.faults = Counter(
            "shilian_edge_meeting_faults",
            "parts of calls that failed while the call went on (turn, audio_in, audio_out, "
            "video_out)",
            ["part"],
            registry=registry,
        )
        for part in PARTS:
            self.faults.labels(part)

    def turn(self, now: float) -> Turn | None:
        """The TURN server for a call starting at ``now`` (None: host candidates only)."""
        m = self.config.meetings
        if m.turn_url is None:
            return None
        if m.turn_secret:
            user, password = turn_rest_credentials(
                m.turn_secret, self.config.node_id, now, TURN_CREDENTIALS_TTL_S
            )
        else:
            user, password = m.turn_username, m.turn_password
        return Turn(m.turn_url, user, password, m.relay_only)

    def fault(self, node_id: str, f: Fault) -> None:
        self.faults.labels(f.part).inc()
        log.warning("node %s: meeting %s: %s / %s", node_id, f.part, f.zh, f.en)
