"""The rows central's ingest writes (``Write``), as the ingest core makes them and the stores
(:mod:`central.store`, :mod:`central.store_pg`) and :mod:`central.write_batch` take them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(slots=True)
class NodeRow:
    """A row of ``nodes``; the ingest core keeps one per node, mutable, in memory."""

    node_id: str
    village: str
    county: str
    state: str
    state_since: float
    state_reason: str
    boot_id: str | None
    birth_seq: int
    health_interval_s: float
    sw_version: str
    first_seen: float
    last_seen: float
    last_health: str | None = None  # as a write: None keeps the stored value


@dataclass(frozen=True, slots=True)
class IntervalRow:
    """Close the node's open state interval at ``start`` and open a new one."""

    node_id: str
    state: str
    start: float
    reason: str


@dataclass(frozen=True, slots=True)
class HealthRow:
    node_id: str
    ts: float
    recv_ts: float
    body: str


class EventRow(NamedTuple):
    """A tuple so that a batch goes to ``executemany`` as it is (the hot path)."""

    node_id: str
    village: str
    boot_id: str
    seq: int
    ts: float
    recv_ts: float
    priority: str
    kind: str
    device: str | None
    data: str


@dataclass(frozen=True, slots=True)
class GapsRow:
    """The complete set of open gaps of one (node, boot): (first_seq, last_seq, detected)."""

    node_id: str
    boot_id: str
    gaps: tuple[tuple[int, int, float], ...]


@dataclass(frozen=True, slots=True)
class DeviceRow:
    node_id: str
    device_id: str
    kind: str
    state: str
    name: str | None
    ts: float
    detail: str
    removed: int


Write = NodeRow | IntervalRow | HealthRow | EventRow | GapsRow | DeviceRow
