"""Typed alarms: what every alarm source (board inputs, Contact ID through the board, SIA DC-09
over TCP) becomes before it enters the edge outbox, so central sees one shape whatever the panel.

On the wire an alarm is a ``wire.Event`` whose ``kind`` is the :class:`AlarmKind` value and whose
``data`` carries the zone and the source's own details (docs/protocol.md, "Alarms")."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from wire import Priority


class AlarmKind(StrEnum):
    PANIC = "panic"  # 紧急求助 panic / duress button
    INTRUSION = "intrusion"  # 入侵 burglary: door contact, PIR
    FIRE = "fire"  # 火警
    TAMPER = "tamper"  # 防拆 enclosure / sensor tamper
    TROUBLE = "trouble"  # 故障 AC loss, low battery, sensor fault, comms trouble
    RESTORE = "restore"  # 恢复 a zone back to normal after one of the above


class AlarmSource(StrEnum):
    BOARD = "board"  # an input of the village alarm board (serial link)
    CONTACT_ID = "contact_id"  # Ademco Contact ID relayed by the board
    SIA_DC09 = "sia_dc09"  # SIA DC-09 receiver on the edge box (TCP)


#: Outbox priority per kind: alarms are never dropped and are sent first; trouble and restore
#: are device-state changes (important, but an operator acts on them later).
PRIORITY: dict[AlarmKind, Priority] = {
    AlarmKind.PANIC: Priority.ALARM,
    AlarmKind.INTRUSION: Priority.ALARM,
    AlarmKind.FIRE: Priority.ALARM,
    AlarmKind.TAMPER: Priority.ALARM,
    AlarmKind.TROUBLE: Priority.DEVICE,
    AlarmKind.RESTORE: Priority.DEVICE,
}


@dataclass(frozen=True, slots=True)
class Alarm:
    """One alarm occurrence.

    ``zone`` is the zone (input, or panel zone/user) number; ``restores`` names the kind a
    RESTORE ends; ``device`` is the edge device id of the source (e.g. ``alarm_board``,
    ``panel1``); ``detail`` carries the source's raw fields (Contact ID code, SIA account...)."""

    kind: AlarmKind
    zone: int
    source: AlarmSource
    device: str
    restores: AlarmKind | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.kind is AlarmKind.RESTORE) != (self.restores is not None):
            raise ValueError("restores is set exactly when kind is RESTORE")
        if self.zone < 0:
            raise ValueError("zone must be >= 0")

    @property
    def priority(self) -> Priority:
        return PRIORITY[self.kind]

    def event_data(self) -> dict[str, Any]:
        """The ``data`` of the wire event."""
        data: dict[str, Any] = {"zone": self.zone, "source": self.source.value}
        if self.restores is not None:
            data["restores"] = self.restores.value
        if self.detail:
            data["detail"] = self.detail
        return data
