"""A camera picture taken when an alarm fires, and the outcome of a camera power-cycle: the
``data`` of two event kinds (docs/protocol.md, "Snapshots" and "Camera power-cycle").

A snapshot travels as an ordinary :class:`wire.Event` of kind :data:`SNAPSHOT_KIND`, priority
``info`` (below the alarm it belongs to: sent after it, evicted before it), from the node's
outbox. It names its alarm by the alarm event's identity at the node (``alarm_boot_id``,
``alarm_seq``); central joins the two by that identity, whichever arrives first.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from wire import event_kinds
from wire.limits import MAX_PAYLOAD_BYTES

#: Event kind of a snapshot, and of a camera power-cycle outcome (acked / failed / no_relay).
SNAPSHOT_KIND = event_kinds.SNAPSHOT
POWER_CYCLE_KIND = event_kinds.CAMERA_POWER_CYCLE

#: Largest JPEG in one snapshot. Base64 makes it 4/3 larger (58.7 KiB); the event around it
#: (ids, camera, sizes) is a few hundred bytes: the whole event stays under the wire's 64 KiB
#: payload cap (:data:`wire.limits.MAX_PAYLOAD_BYTES`) with ~5 KiB to spare. 44 KiB holds a
#: 640x360 picture of a real scene at JPEG quality ~75; the edge lowers quality, then size, to fit.
MAX_SNAPSHOT_JPEG_BYTES = 44 * 1024
#: Largest picture side announced (the edge scales down to 640 wide; the bound refuses nonsense).
MAX_SNAPSHOT_SIDE = 4096

assert MAX_SNAPSHOT_JPEG_BYTES * 4 // 3 + 4096 < MAX_PAYLOAD_BYTES

BootIdHex = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
DeviceName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]


class SnapshotData(BaseModel):
    """``data`` of a ``snapshot`` event."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    alarm_boot_id: BootIdHex = Field(description="boot id of the alarm event it belongs to")
    alarm_seq: int = Field(ge=1, description="seq of the alarm event it belongs to")
    camera: DeviceName = Field(description="device id of the camera")
    zone: int = Field(ge=0, description="the alarm's zone, which the camera is mapped to")
    taken_ts: float = Field(ge=0, description="wall clock when the key frame arrived")
    width: int = Field(ge=1, le=MAX_SNAPSHOT_SIDE)
    height: int = Field(ge=1, le=MAX_SNAPSHOT_SIDE)
    jpeg_b64: str = Field(
        max_length=(MAX_SNAPSHOT_JPEG_BYTES + 2) // 3 * 4, description="the JPEG, base64"
    )

    def jpeg(self) -> bytes:
        """The JPEG bytes; ``ValueError`` if not base64 of a JPEG within the bound."""
        try:
            raw = base64.b64decode(self.jpeg_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("jpeg_b64 is not base64") from None
        if len(raw) > MAX_SNAPSHOT_JPEG_BYTES or not raw.startswith(b"\xff\xd8"):
            raise ValueError("not a JPEG within the size bound")
        return raw


PowerCycleOutcome = Literal["acked", "failed", "no_relay"]


class PowerCycleData(BaseModel):
    """``data`` of a ``camera_power_cycle`` event (``device`` is the camera)."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    outcome: PowerCycleOutcome
    trigger: Literal["operator", "rule"]
    relay: int | None = Field(default=None, ge=1, le=255, description="board relay output")
    off_ms: int | None = Field(default=None, ge=1, description="how long the power was off")
    by: str | None = Field(default=None, max_length=64, description="operator, when one asked")
    reason: str = Field(default="", max_length=300, description="why it failed (zh / en)")
