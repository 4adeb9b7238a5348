"""Power-cycling a camera through its alarm-board relay (``relay = N`` on a ``[[cameras]]``
entry): on an operator's ``power-cycle`` command, or by the rule "stalled for
``stalled_for_min`` minutes, at most once per ``min_interval_min`` minutes per camera".

The rule is pure (:class:`StallRule`, time passed in); :class:`PowerCycler` is its asyncio
shell, a source in the agent's supervisor: one task applies queued power-cycles one at a time
(the board answers each pulse at once: firmware_bridge.relay_frames), one checks the cameras'
health every :data:`RULE_CHECK_S`. Every outcome — ``acked`` (the board confirmed the pulse),
``failed`` (board down, no answer, refused: ``reason`` says why) or ``no_relay`` — is a
``camera_power_cycle`` event (wire.snapshots.PowerCycleData), priority ``device``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from edge.commands import PowerCycleRefused
from edge.outbox import OutboxError
from edge.sources import EventSink
from wire import Priority
from wire.devices import CameraHealth
from wire.snapshots import POWER_CYCLE_KIND, PowerCycleData

log = logging.getLogger("shilian.edge.remediation")

#: How often the rule looks at the cameras' health: the rule acts after minutes of stall, so a
#: few seconds of lateness is nothing, and the check costs a dict walk.
RULE_CHECK_S = 5.0
#: Power-cycles waiting (an operator clicking repeatedly, the rule for many cameras): one per
#: camera is enough; beyond this the request is refused as busy.
MAX_QUEUED = 16


class RelayBoard(Protocol):
    """What pulses a relay (edge.board_source.BoardSource)."""

    async def pulse_relay(self, relay: int, off_ms: int) -> tuple[str, str]:
        """``("acked", "")`` or ``("failed", reason zh / en)``."""
        ...


@dataclass(slots=True)
class _Camera:
    relay: int | None
    stalled_since: float | None = None
    last_cycle: float | None = None


class StallRule:
    """Which cameras are due for a power-cycle (pure; ``now`` is a monotonic clock)."""

    def __init__(
        self, relays: Mapping[str, int | None], stalled_for_s: float, min_interval_s: float
    ) -> None:
        self.cameras = {cam: _Camera(relay) for cam, relay in relays.items()}
        self.stalled_for_s = stalled_for_s
        self.min_interval_s = min_interval_s

    def observe(self, camera: str, health: str | None, now: float) -> bool:
        """Note ``camera``'s health; True when it is due now (then counted as cycled)."""
        c = self.cameras.get(camera)
        if c is None or c.relay is None:
            return False
        if health != CameraHealth.STALLED:
            c.stalled_since = None
            return False
        if c.stalled_since is None:
            c.stalled_since = now
        if now - c.stalled_since < self.stalled_for_s:
            return False
        if c.last_cycle is not None and now - c.last_cycle < self.min_interval_s:
            return False
        c.last_cycle = now
        return True


Trigger = Literal["operator", "rule"]


class PowerCycler:
    name = "remediation"

    def __init__(
        self,
        relays: Mapping[str, int | None],
        board: RelayBoard | None,
        health_of: Callable[[str], str | None],
        *,
        off_ms: int,
        stalled_for_s: float,
        min_interval_s: float,
        rule_enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.relays = dict(relays)
        self.board = board
        self.health_of = health_of
        self.off_ms = off_ms
        self.rule = StallRule(relays, stalled_for_s, min_interval_s)
        self.rule_enabled = rule_enabled
        self.clock = clock
        self._jobs: asyncio.Queue[tuple[str, Trigger]] = asyncio.Queue(MAX_QUEUED)
        #: Outcomes since start, for operators and tests.
        self.outcomes: dict[str, int] = {"acked": 0, "failed": 0, "no_relay": 0}

    @classmethod
    def from_config(cls, cfg: Any, board: RelayBoard | None, cameras: Any) -> PowerCycler:
        """From ``edge.config.EdgeConfig`` (cameras, ``[remediation]``), the board source and
        the camera source (whose health reports the rule reads)."""
        rem = cfg.remediation
        return cls(
            {c.id: c.relay for c in cfg.cameras},
            board,
            lambda cam: r.health if (r := cameras.reports.get(cam)) else None,
            off_ms=rem.off_ms,
            stalled_for_s=rem.stalled_for_min * 60,
            min_interval_s=rem.min_interval_min * 60,
            rule_enabled=rem.enabled,
        )

    # -- edge.commands.PowerCycleTarget ---------------------------------------------------------

    def power_cycle_start(self, camera: str) -> dict[str, Any]:
        """Queue an operator's power-cycle of ``camera``; :class:`PowerCycleRefused` if it
        cannot be (unknown camera, no relay — recorded as an event too —, too many queued)."""
        if camera not in self.relays:
            raise PowerCycleRefused(
                "unknown_camera", f"没有摄像机 {camera[:64]}", f"no camera {camera[:64]}"
            )
        relay = self.relays[camera]
        try:
            self._jobs.put_nowait((camera, "operator"))
        except asyncio.QueueFull:
            raise PowerCycleRefused(
                "busy", "断电重启请求过多，请稍后再试", "too many power-cycles queued; try later"
            ) from None
        if relay is None:
            raise PowerCycleRefused(
                "no_relay",
                f"摄像机 {camera} 没有配置继电器（relay）",
                f"camera {camera} has no relay configured",
            )
        return {"queued": True, "camera": camera, "relay": relay, "off_ms": self.off_ms}

    # -- the shell ------------------------------------------------------------------------------

    async def run(self, sink: EventSink) -> None:
        async with asyncio.TaskGroup() as tg:
            if self.rule_enabled and any(r is not None for r in self.relays.values()):
                tg.create_task(self._watch(), name="remediation_rule")
            while True:
                camera, trigger = await self._jobs.get()
                await self._cycle(camera, trigger, sink)

    async def _watch(self) -> None:
        while True:
            now = self.clock()
            for camera in self.relays:
                if self.rule.observe(camera, self.health_of(camera), now):
                    log.warning("camera %s stalled too long: power-cycling it", camera)
                    try:
                        self._jobs.put_nowait((camera, "rule"))
                    except asyncio.QueueFull:
                        log.warning("camera %s: power-cycle queue full", camera)
            await asyncio.sleep(RULE_CHECK_S)

    async def _cycle(self, camera: str, trigger: Trigger, sink: EventSink) -> None:
        relay = self.relays.get(camera)
        reason = ""
        if relay is None:
            outcome = "no_relay"
        elif self.board is None:
            outcome, reason = "failed", "没有报警板 / no alarm board"
        else:
            outcome, reason = await self.board.pulse_relay(relay, self.off_ms)
        self.outcomes[outcome] += 1
        data = PowerCycleData.model_validate(
            {
                "outcome": outcome,
                "trigger": trigger,
                "relay": relay,
                "off_ms": self.off_ms if relay is not None else None,
                "reason": reason,
            }
        )
        log.info("camera %s power-cycle (%s): %s %s", camera, trigger, outcome, reason)
        try:
            await sink.emit(Priority.DEVICE, POWER_CYCLE_KIND, camera, data.model_dump())
        except OutboxError as e:
            log.error("camera %s: power-cycle outcome not stored: %s", camera, e)
