"""How central's :class:`~central.devices.DeviceIndex` is fed: rebuilt from the store at
start-up (the ``devices`` rows not removed, and every node's state), then updated by the service
after each committed batch (:meth:`DeviceIndex.apply`), which announces the villages that
changed on the live stream as one ``devices`` message each.

Child suppression is what keeps that stream quiet: a node going offline or coming back changes
one village (one message), however many devices it has, and a node re-publishing its retained
device states on reconnect changes nothing unless a health really changed.
"""

from __future__ import annotations

from collections.abc import Iterable

from central.db import Db
from central.devices import KINDS, DeviceIndex, parse_device
from central.live import Message
from central.store import NodeRow
from registry import Registry

#: ``devices`` messages per committed batch: a broker restart re-delivers every retained device
#: state at once; past this many villages a page is better off re-reading everything.
MAX_VILLAGES_PER_BATCH = 200


def load_devices(db: Db, registry: Registry, nodes: Iterable[NodeRow]) -> DeviceIndex:
    """The index as the store has it (villages outside the registry are skipped)."""
    index = DeviceIndex(registry)
    marks = ",".join("?" * len(KINDS))
    rows = db.fetchall(
        "SELECT node_id, device_id, kind, state, name, ts, detail FROM devices"
        f" WHERE removed = 0 AND kind IN ({marks})",
        KINDS,
    )
    index.apply(
        (), [(n.node_id, n.state == "online") for n in nodes], (parse_device(*r) for r in rows)
    )
    return index


def device_messages(villages: set[str]) -> list[Message]:
    """The live messages for the villages one batch changed (``resync`` past the cap)."""
    if len(villages) > MAX_VILLAGES_PER_BATCH:
        return [Message("resync", {"devices": len(villages)})]
    return [Message("devices", {"village": v}) for v in sorted(villages)]
