"""The event kinds nodes send (``Event.kind``), with the priority each is sent at.

``kind`` stays open on the wire (a newer node may send a kind central does not know; it is
stored and shown by its code), but every kind this version's nodes produce is listed here, so
that the operators' pages have a translation for each (tests check both: every producer's kind
is here, every kind here has a zh/en name in central's catalogue).
"""

from __future__ import annotations

from wire.messages import Priority

#: Alarm kinds from the village alarm board, Contact ID panels and SIA DC-09 receivers
#: (firmware_bridge.alarms.AlarmKind).
PANIC = "panic"
INTRUSION = "intrusion"
FIRE = "fire"
TAMPER = "tamper"
TROUBLE = "trouble"
RESTORE = "restore"
#: A Contact ID / SIA panel event that is not an alarm (arming, test reports...).
PANEL_EVENT = "panel_event"
#: A camera's, terminal's or link's health changed (edge.device_health).
DEVICE_HEALTH = "device_health"
#: The alarm board's firmware update job (edge.firmware_updater).
FIRMWARE_UPDATE = "firmware_update"
#: A camera's picture taken when an alarm fired (edge.snapshots, wire.snapshots).
SNAPSHOT = "snapshot"
#: The outcome of power-cycling a camera through a board relay (edge.remediation).
CAMERA_POWER_CYCLE = "camera_power_cycle"
#: Sent by village tools through the agent's local socket (and by the demo fleet).
CAMERA_OFFLINE = "camera_offline"
CAMERA_UP = "camera_up"
PATROL_CHECKIN = "patrol_checkin"
DOOR_OPEN = "door_open"

#: Every known kind and the priority its producer sends it at.
EVENT_KINDS: dict[str, Priority] = {
    PANIC: Priority.ALARM,
    INTRUSION: Priority.ALARM,
    FIRE: Priority.ALARM,
    TAMPER: Priority.ALARM,
    TROUBLE: Priority.DEVICE,
    RESTORE: Priority.DEVICE,
    PANEL_EVENT: Priority.INFO,
    DEVICE_HEALTH: Priority.DEVICE,
    FIRMWARE_UPDATE: Priority.DEVICE,
    SNAPSHOT: Priority.INFO,
    CAMERA_POWER_CYCLE: Priority.DEVICE,
    CAMERA_OFFLINE: Priority.DEVICE,
    CAMERA_UP: Priority.DEVICE,
    PATROL_CHECKIN: Priority.INFO,
    DOOR_OPEN: Priority.INFO,
}
