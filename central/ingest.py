"""The ingest core: one MQTT message in, what to write and what changed out. Pure (no I/O):
the time is passed in, the store applies the writes, the service applies the changes after the
writes are committed.

What it decides (docs/central.md):
- identity: the topic's node id wins; ``wire.decode`` refuses a payload naming another node;
- unknown village: refused (``unknown_village``), nothing written;
- state: a birth with a ``boot_id`` other than the node's current one is a new life (a replaced
  box starts again at ``birth_seq`` 1); within one boot, states are ordered by ``birth_seq``: a
  lower one is stale and ignored, an equal ``offline`` after ``online`` is the matching death; a
  death (will or stop) of another boot is stale;
- health: stored; health of the current boot refreshes liveness and brings a timed-out node back
  online; health of another boot changes neither (a stray report cannot take a node offline);
- events (on ``event`` and on the alarm lane ``event/alarm``, alike): deduplicated by (node,
  boot_id, seq) across both topics, gaps in seq recorded and closed when the missing seq arrives
  (out-of-order arrival is normal: alarms jump the queue, and on their own session they reach
  central before older history of the same node);
- device: upserted; an empty payload means the device was removed;
- a county broker's bridge state (``bridge/<county>/state``, docs/scale.md): while it is ``0``
  the county's online nodes are held online with reason ``county_link_down`` (their silence is
  the cut uplink's, not theirs: no health deadline applies); at ``1`` their reason becomes
  ``county_link_up`` and their deadlines restart from that moment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import pydantic_core

import wire
from central.liveness import Liveness
from central.store import (
    DeviceRow,
    EventRow,
    GapsRow,
    HealthRow,
    IntervalRow,
    NodeRow,
    SeqState,
    Snapshot,
    Write,
)
from wire import Fault, Kind, RemoteWireError
from wire.topics import bridge_county, parse_bridge_state

ONLINE = "online"
OFFLINE = "offline"
#: ``state_reason`` of an online node held while its county broker's bridge is down, and after.
COUNTY_LINK_DOWN = "county_link_down"
COUNTY_LINK_UP = "county_link_up"

#: Parsed topics remembered (a fleet's topics repeat: parsing each message's topic again costs
#: as much as decoding its payload). Cleared when full; about 100 B per entry.
ROUTE_CACHE_SIZE = 100_000


def _json(obj: object) -> str:
    """Compact UTF-8 JSON for a text column; pydantic's serializer is ~5x faster than json's."""
    return pydantic_core.to_json(obj).decode()


#: A node whose clock is off central's by more than this is flagged (``clock_off``). NTP keeps a
#: box within milliseconds, and a live health report crosses even the slowest village line
#: measured in well under a second (docs/faults.md, row 73); far below the 10 min a stepped clock
#: is typically off by. The event times such a node stamps are not to be trusted.
CLOCK_OFF_S = 30.0
#: Two health reports agree on a node's offset when their spacing at the node and at central
#: differs by less than this, or half the health interval if that is less: live reports differ
#: by transit jitter only (under a second on the slowest line measured), reports queued at the
#: broker by a whole interval.
CLOCK_AGREE_S = 5.0

#: Open gaps kept per (node, boot). A peer sending every other seq would otherwise grow the list
#: without bound; beyond this the closest neighbouring gaps are merged (SeqState.bound_gaps), so
#: every late event is still taken.
MAX_OPEN_GAPS = 1000


@dataclass(slots=True)
class Outcome:
    """What one message did, for metrics, logs and the after-commit side effects."""

    kind: str
    node_id: str | None = None
    fault: Fault | None = None
    detail: str = ""
    ignored: str | None = None  # "stale_state", "duplicate", "unexpected"
    gaps_opened: int = 0
    response: wire.CommandResponse | None = None


@dataclass(slots=True)
class Changes:
    """Node state changes produced since the last :meth:`Ingest.take`: (node_id, online)."""

    nodes: list[tuple[str, bool]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CountyLink:
    """A county broker's bridge went down or came back; ``nodes``: its online nodes then."""

    county: str
    up: bool
    nodes: int


class Ingest:
    """Central's view of every node, updated message by message."""

    def __init__(
        self, snapshot: Snapshot, has_village: Callable[[str], bool], liveness: Liveness
    ) -> None:
        self.nodes = snapshot.nodes
        self.seqs = snapshot.seqs
        self.has_village = has_village
        self.liveness = liveness
        self._writes: list[Write] = []
        self._dirty_nodes: set[str] = set()
        self._dirty_gaps: set[tuple[str, str]] = set()
        self._last_health: dict[str, str] = {}
        self._changes: list[tuple[str, bool]] = []
        self._offline: list[tuple[str, str]] = []
        self._routes: dict[str, wire.Route] = {}
        self._ack_keys: set[tuple[str, str]] = set()
        self._county_links: list[CountyLink] = []
        #: county -> since when its bridge is down. A restart finds the holds in the nodes'
        #: reasons; the bridge's retained state then confirms or ends them.
        self.counties_down: dict[str, float] = {}
        for n in self.nodes.values():
            if n.state == ONLINE and n.state_reason == COUNTY_LINK_DOWN:
                self.counties_down.setdefault(n.county, n.state_since)
        #: Monotonic time of the message being handled: liveness deadlines are kept on it, so a
        #: step of the wall clock (NTP, an operator's ``date -s``) neither expires nor extends
        #: them. Wall time (``now``) is what is stored and shown.
        self._mono = 0.0
        #: Nodes whose clock is off central's by more than :data:`CLOCK_OFF_S`: node -> offset
        #: in seconds (node minus central), from their last health report.
        self.clock_off: dict[str, float] = {}
        self._clock_changes: list[tuple[str, float | None]] = []
        #: Per node, (node's ts, central's receive time) of its previous health report.
        self._last_report: dict[str, tuple[float, float]] = {}

    # -- the batch boundary -------------------------------------------------------------------

    def take(self) -> tuple[list[Write], list[tuple[str, bool]]]:
        """Writes to commit in one transaction, and the node changes to apply after it."""
        writes = self._writes
        for node_id in self._dirty_nodes:
            n = self.nodes[node_id]
            writes.append(replace(n, last_health=self._last_health.pop(node_id, None)))
        for node_id, boot_id in self._dirty_gaps:
            s = self.seqs[(node_id, boot_id)]
            writes.append(GapsRow(node_id, boot_id, tuple(s.gaps)))
        changes = self._changes
        self._writes, self._changes = [], []
        self._dirty_nodes.clear()
        self._dirty_gaps.clear()
        self._last_health.clear()
        return writes, changes

    def take_acks(self) -> set[tuple[str, str]]:
        """(node, boot) of every event handled since the last call, new or duplicate: what
        the stored-acknowledgements of the batch must cover once it is committed."""
        keys, self._ack_keys = self._ack_keys, set()
        return keys

    def take_offline(self) -> list[tuple[str, str]]:
        """(node_id, reason) of every node gone offline since the last call; the reason is the
        node's ``state_reason`` as the API shows it: ``will``, ``stopped`` or ``health_timeout``."""
        offline, self._offline = self._offline, []
        return offline

    def take_county_links(self) -> list[CountyLink]:
        """County bridges gone down or back since the last call."""
        links, self._county_links = self._county_links, []
        return links

    def held_nodes(self) -> int:
        """Online nodes held while their county's bridge is down (a scan: call on changes)."""
        return sum(
            1 for n in self.nodes.values() if n.state == ONLINE and n.county in self.counties_down
        )

    def take_clock_changes(self) -> list[tuple[str, float | None]]:
        """(node_id, offset) of every node newly flagged with its clock off since the last call,
        (node_id, None) of every node whose clock is right again."""
        changes, self._clock_changes = self._clock_changes, []
        return changes

    def online_nodes(self) -> Iterable[tuple[str, float]]:
        """(node_id, health interval) of the nodes believed online, for :meth:`Liveness.reset`."""
        return ((n.node_id, n.health_interval_s) for n in self.nodes.values() if n.state == ONLINE)

    # -- messages -----------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, now: float, mono: float | None = None) -> Outcome:
        """Apply one message received at wall time ``now`` and monotonic time ``mono`` (the
        deadlines' clock; ``now`` when not given). Never raises for bad input: the fault is in
        the outcome."""
        self._mono = now if mono is None else mono
        route = self._routes.get(topic)
        if route is None:
            county = bridge_county(topic)
            if county is not None:
                return self._bridge(county, payload, now)
            try:
                route = wire.parse_topic(topic)
            except RemoteWireError as e:
                return Outcome("bad_topic", None, e.fault, e.detail)
            if len(self._routes) >= ROUTE_CACHE_SIZE:
                self._routes.clear()
            self._routes[topic] = route
        out = Outcome(route.kind.value, route.node_id)
        if not self.has_village(route.village):
            out.fault = Fault.UNKNOWN_VILLAGE
            out.detail = f"village {route.village} is not in the registry"
            return out
        try:
            if route.kind is Kind.STATE:
                self._state(wire.decode(wire.NodeState, payload, node_id=route.node_id), now, out)
            elif route.kind is Kind.HEALTH:
                self._health(wire.decode(wire.Health, payload, node_id=route.node_id), now)
            elif route.kind is Kind.EVENT or route.kind is Kind.EVENT_ALARM:
                self._event(wire.decode(wire.Event, payload, node_id=route.node_id), now, out)
            elif route.kind is Kind.DEVICE:
                assert route.device_id is not None  # parse_topic always sets it for DEVICE
                self._device(route.node_id, route.device_id, payload, now)
            elif route.kind is Kind.CMD_RES:
                out.response = wire.decode(wire.CommandResponse, payload, node_id=route.node_id)
            else:
                out.ignored = "unexpected"  # cmd/req is ours; central does not subscribe to it
        except RemoteWireError as e:
            out.fault, out.detail = e.fault, e.detail
        return out

    def expire(self, now: float, mono: float | None = None) -> list[str]:
        """Mark offline every node silent past its grace period at monotonic time ``mono``
        (``now`` when not given); returns their ids."""
        self._mono = now if mono is None else mono
        expired = []
        for node_id in self.liveness.tick(self._mono):
            n = self.nodes.get(node_id)
            dying = self.liveness.is_dying(node_id)
            if n is not None and n.county in self.counties_down and not dying:
                continue  # held: the bridge's return restarts its deadline
            reason = "will" if dying else "health_timeout"
            self.liveness.forget(node_id)
            if n is not None and n.state == ONLINE:
                self._set_state(n, OFFLINE, reason, now)
                expired.append(node_id)
        return expired

    # -- per kind -------------------------------------------------------------------------------

    def _bridge(self, county: str, payload: bytes, now: float) -> Outcome:
        out = Outcome("bridge")
        try:
            up = parse_bridge_state(county, payload)
        except RemoteWireError as e:
            out.fault, out.detail = e.fault, e.detail
            return out
        if up == (county not in self.counties_down):
            return out  # no change: a retained state redelivered on resubscribe
        if up:
            del self.counties_down[county]
        else:
            self.counties_down[county] = now
        held = 0
        for n in self.nodes.values():
            if n.county != county or n.state != ONLINE:
                continue
            held += 1
            n.state_reason = COUNTY_LINK_UP if up else COUNTY_LINK_DOWN
            self._dirty_nodes.add(n.node_id)
            if up:
                self.liveness.restart(n.node_id, n.health_interval_s, self._mono)
        self._county_links.append(CountyLink(county, up, held))
        return out

    def _touch(self, node_id: str, now: float) -> NodeRow | None:
        n = self.nodes.get(node_id)
        if n is not None:
            n.last_seen = now
            self._dirty_nodes.add(node_id)
        return n

    def _set_state(self, n: NodeRow, state: str, reason: str, now: float) -> None:
        changed = n.state != state
        n.state, n.state_reason, n.state_since = state, reason, now
        self._dirty_nodes.add(n.node_id)
        self._writes.append(IntervalRow(n.node_id, state, now, reason))
        if state == ONLINE:
            self.liveness.born(n.node_id, n.health_interval_s, self._mono)
        else:
            self.liveness.forget(n.node_id)
        if changed:
            self._changes.append((n.node_id, state == ONLINE))
            if state == OFFLINE:
                self._offline.append((n.node_id, reason))

    def _state(self, s: wire.NodeState, now: float, out: Outcome) -> None:
        n = self.nodes.get(s.node)
        if n is None:
            n = NodeRow(
                node_id=s.node,
                village=s.node[:12],
                county=s.node[:6],
                state=OFFLINE,
                state_since=now,
                state_reason=s.reason,
                boot_id=s.boot_id,
                birth_seq=s.birth_seq,
                health_interval_s=s.health_interval_s,
                sw_version=s.sw_version,
                first_seen=now,
                last_seen=now,
            )
            self.nodes[s.node] = n
            self._changes.append((s.node, False))  # known (provisioned) from now on
        elif _stale(s, n):
            # A retained online redelivered on resubscribe lands here too: nothing changes.
            if not (s.boot_id == n.boot_id and s.birth_seq == n.birth_seq and s.state == n.state):
                out.ignored = "stale_state"
            self._touch(s.node, now)
            return
        n.boot_id, n.birth_seq = s.boot_id, s.birth_seq
        n.last_seen = now
        self._dirty_nodes.add(n.node_id)
        if s.state == OFFLINE and s.reason == "will" and n.state == ONLINE:
            # Not at once: it may be one of the wills a shutting-down broker sends (liveness.py).
            self.liveness.dying(n.node_id, self._mono)
            return
        n.health_interval_s = s.health_interval_s
        if s.sw_version:
            n.sw_version = s.sw_version
        self._set_state(n, s.state, s.reason, now)

    def _health(self, h: wire.Health, now: float) -> None:
        n = self.nodes.get(h.node)
        if n is None:
            # Health before any state (central's database is newer than the broker's retained
            # state): the node is evidently alive. Its retained birth, when it comes, is newer.
            n = NodeRow(
                node_id=h.node,
                village=h.node[:12],
                county=h.node[:6],
                state=OFFLINE,
                state_since=now,
                state_reason="health",
                boot_id=h.boot_id,
                birth_seq=0,
                health_interval_s=h.interval_s,
                sw_version=h.sw_version,
                first_seen=now,
                last_seen=now,
            )
            self.nodes[h.node] = n
            self._set_state(n, ONLINE, "health", now)
        elif n.boot_id == h.boot_id:
            self._check_clock(h.node, h.ts, now, h.interval_s)
            n.health_interval_s, n.sw_version, n.last_seen = h.interval_s, h.sw_version, now
            if n.state == ONLINE:
                self.liveness.alive(n.node_id, n.health_interval_s, self._mono)
            elif n.state_reason == "health_timeout":
                self._set_state(n, ONLINE, "health", now)
        else:
            # Another boot (a stray or replayed report, or a box whose birth is still to come):
            # stored, but neither its interval nor its arrival says anything about the current
            # life's deadline.
            n.last_seen = now
        body = h.model_dump_json(exclude_none=True)
        self._dirty_nodes.add(h.node)
        self._last_health[h.node] = body
        self._writes.append(HealthRow(h.node, h.ts, now, body))

    def _check_clock(self, node_id: str, ts: float, now: float, interval_s: float) -> None:
        """Flag a node whose health ``ts`` is off central's ``now`` by more than
        :data:`CLOCK_OFF_S`, once two reports in a row agree (:data:`CLOCK_AGREE_S`): a report
        queued at the broker while central was away also reads as behind, but a queue delivers
        its reports together (receive times close, node times an interval apart), so it does
        not agree with the one before it. One report within the bound clears the flag."""
        off = ts - now
        prev = self._last_report.get(node_id)
        self._last_report[node_id] = (ts, now)
        if abs(off) <= CLOCK_OFF_S:
            if self.clock_off.pop(node_id, None) is not None:
                self._clock_changes.append((node_id, None))
        elif prev is not None and abs((ts - prev[0]) - (now - prev[1])) < min(
            CLOCK_AGREE_S, interval_s / 2
        ):
            if node_id not in self.clock_off:
                self._clock_changes.append((node_id, off))
            self.clock_off[node_id] = off

    def _event(self, e: wire.Event, now: float, out: Outcome) -> None:
        key = (e.node, e.boot_id)
        s = self.seqs.get(key)
        if s is None:
            s = self.seqs[key] = SeqState()
        before = len(s.gaps)
        new, gaps_changed = s.accept(e.seq, now)
        self._ack_keys.add(key)
        if not new:
            out.ignored = "duplicate"
            return
        if gaps_changed:
            s.bound_gaps(MAX_OPEN_GAPS)
            self._dirty_gaps.add(key)
            out.gaps_opened = max(0, len(s.gaps) - before)
        self._touch(e.node, now)
        self._writes.append(
            EventRow(
                e.node,
                e.node[:12],
                e.boot_id,
                e.seq,
                e.ts,
                now,
                e.priority.value,
                e.kind,
                e.device,
                _json(e.data),
            )
        )

    def _device(self, node_id: str, device_id: str, payload: bytes, now: float) -> None:
        if not payload:
            self._writes.append(DeviceRow(node_id, device_id, "", "unknown", None, now, "{}", 1))
        else:
            d = wire.decode(wire.DeviceState, payload, node_id=node_id)
            detail = _json(d.detail)
            self._writes.append(
                DeviceRow(node_id, device_id, d.kind, d.state, d.name, d.ts, detail, 0)
            )
        self._touch(node_id, now)


def _stale(s: wire.NodeState, n: NodeRow) -> bool:
    """Whether state ``s`` says nothing new about node ``n`` (docs/protocol.md, birth and death).

    A birth with another ``boot_id`` is a new life whatever its ``birth_seq`` (a replaced box, a
    lost outbox, a re-enrolment start again at 1). A death of another boot is stale: the box it
    belonged to is no longer the node's current one. Within one boot, ``birth_seq`` orders: an
    older birth is stale, and within one birth only its death follows its first online.
    """
    if s.boot_id != n.boot_id:
        return s.state == OFFLINE
    if s.birth_seq != n.birth_seq:
        return s.birth_seq < n.birth_seq
    return s.state == ONLINE or n.state == OFFLINE
