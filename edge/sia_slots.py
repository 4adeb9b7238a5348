"""Who holds the SIA receiver's connection slots. Pure: the time is passed in.

Idle or hostile clients on the village LAN must not lock a real panel out. A panel connects and
sends its report at once, so a connection is *proven* when one of its frames is ACKed; until
then it is a guest. The rules (docs/panels.md):

- at most :data:`MAX_PER_ADDRESS` connections from one address (one panel needs one, a few
  overlap while it reconnects): more are refused;
- at most :data:`MAX_CONNECTIONS` in all; when full, a guest is evicted for the newcomer, so
  idle clients cannot hold every slot: the oldest guest of the address holding the most
  slots. A panel uses one connection from its own address, so clients that reconnect as fast
  as they are cut (each newcomer evicting another) take each other's slots first; and age,
  not silence, since a client trickling a byte at a time always looks less silent than a
  panel that sent its whole report at once, but cannot make its connection younger. A guest
  whose complete frame is being stored is never evicted (a panel about to be ACKed); when no
  guest can be evicted the newcomer is refused;
- a guest that has no frame ACKed within :data:`GUEST_TIMEOUT_S` of connecting is closed, and a
  proven connection silent for :data:`IDLE_TIMEOUT_S` (a half-open TCP connection).

Hitting a cap is reported once per spell (:attr:`Admission.first_of_spell`): the spell of the
total cap ends when a connection is admitted without it, the spell of an address's cap when that
address is admitted again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

#: Simultaneous panel connections: a village LAN has a few panels; more is a misbehaving peer.
MAX_CONNECTIONS = 32
#: Connections from one address: a panel uses one, and a second or third while a dropped one
#: times out; beyond that it is a peer hoarding slots.
MAX_PER_ADDRESS = 4
#: A panel sends its report right after connecting (DC-09 panels connect per report or hold a
#: polled line); a connection with no ACKed frame this long after connecting is not a panel.
GUEST_TIMEOUT_S = 30.0
#: A proven connection with no byte for this long is closed (panels reconnect per report or
#: send NULL polls far more often); frees the slot of a half-open TCP connection.
IDLE_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class SlotLimits:
    max_connections: int = MAX_CONNECTIONS
    max_per_address: int = MAX_PER_ADDRESS
    guest_timeout_s: float = GUEST_TIMEOUT_S
    idle_timeout_s: float = IDLE_TIMEOUT_S


@dataclass(eq=False, slots=True)
class Slot:
    """One open connection."""

    peer: str
    opened: float
    last_rx: float
    proven: bool = False
    busy: bool = False  # a complete frame of it is being stored (not yet answered)


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to a new connection: ``slot`` (None: refused), a guest to ``evict`` for it,
    the cap that was hit (``"address"`` or ``"total"``) and whether this is the first hit of
    its spell (log it)."""

    slot: Slot | None
    evict: Slot | None = None
    cap: str | None = None
    first_of_spell: bool = False


@dataclass(slots=True)
class SlotTable:
    limits: SlotLimits = field(default_factory=SlotLimits)
    _open: list[Slot] = field(default_factory=list)
    _per_address: Counter[str] = field(default_factory=Counter)
    _spells: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self._open)

    def open_from(self, peer: str) -> int:
        """Connections open from address ``peer``."""
        return self._per_address[peer]

    def _spell(self, key: str) -> bool:
        first = key not in self._spells
        self._spells.add(key)
        return first

    def admit(self, peer: str, now: float) -> Admission:
        lim = self.limits
        if self._per_address[peer] >= lim.max_per_address:
            return Admission(None, cap="address", first_of_spell=self._spell(f"address {peer}"))
        self._spells.discard(f"address {peer}")
        evict = None
        if len(self._open) >= lim.max_connections:
            guests = [s for s in self._open if not s.proven and not s.busy]
            first = self._spell("total")
            if not guests:
                return Admission(None, cap="total", first_of_spell=first)
            held = self._per_address
            evict = max(guests, key=lambda s: (held[s.peer], -s.opened))
            self.release(evict)
        else:
            self._spells.discard("total")
            first = False
        slot = Slot(peer, now, now)
        self._open.append(slot)
        self._per_address[peer] += 1
        return Admission(slot, evict, "total" if evict else None, first)

    def release(self, slot: Slot) -> None:
        """The connection closed (idempotent)."""
        if slot in self._open:
            self._open.remove(slot)
            self._per_address[slot.peer] -= 1
            if self._per_address[slot.peer] <= 0:
                del self._per_address[slot.peer]

    def heard(self, slot: Slot, now: float, acked: bool) -> None:
        """Bytes arrived on ``slot``; ``acked``: a frame of it was ACKed (it is a panel)."""
        slot.last_rx = now
        slot.proven = slot.proven or acked

    def handling(self, slot: Slot, busy: bool) -> None:
        """A complete frame of ``slot`` is being stored (``busy``), or has been answered."""
        slot.busy = busy

    def deadline(self, slot: Slot) -> float:
        """When ``slot`` is closed if nothing changes: a guest at a fixed time after it
        connected (bytes that are not a good frame do not extend it), a panel when idle."""
        if slot.proven:
            return slot.last_rx + self.limits.idle_timeout_s
        return slot.opened + self.limits.guest_timeout_s
