"""Coverage of the registry by nodes: a pure, in-memory, incremental index (no I/O).

Definitions: a village is *provisioned* when at least one node of it is known (seen by
central, or enrolled by provisioning), and *covered* when at least one of its nodes is online
now. For any unit: ``villages`` in the registry under it, how many are provisioned, how many
covered, and ``ratio = covered / villages``.

Every node change updates a per-village node count and, only when a village flips between zero
and non-zero, one counter per ancestor (≤ 5). A query is then O(children) whatever the size of
the registry (620k villages for the whole country). Memory grows with the nodes, not with the
villages: counters exist only for units that have nodes.

Nothing here survives a restart: central rebuilds the index from its store at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry import VILLAGE_LEVEL, Registry
from wire import valid_node_id


@dataclass(frozen=True, slots=True)
class UnitCoverage:
    code: str
    name: str
    level: int
    villages: int
    provisioned: int
    covered: int

    @property
    def ratio(self) -> float:
        """Covered share of the unit's villages; 0.0 for a unit without villages."""
        return self.covered / self.villages if self.villages else 0.0


class CoverageIndex:
    """Incremental coverage counters over one :class:`Registry`. Not thread-safe: mutate and
    read from one thread (central's event loop)."""

    __slots__ = (
        "_ancestors",
        "_covered",
        "_known",
        "_nodes",
        "_online",
        "_online_total",
        "_provisioned",
        "_registry",
        "_villages_under",
    )

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        # node_id -> online?
        self._nodes: dict[str, bool] = {}
        self._online_total = 0
        # village -> number of known / online nodes (entries only while non-zero)
        self._known: dict[str, int] = {}
        self._online: dict[str, int] = {}
        # unit -> number of provisioned / covered villages under it (itself for a village)
        self._provisioned: dict[str, int] = {}
        self._covered: dict[str, int] = {}
        # village -> its chain of units up to the root, cached for villages with nodes
        self._ancestors: dict[str, tuple[str, ...]] = {}
        self._villages_under = self._count_villages(registry)

    @staticmethod
    def _count_villages(registry: Registry) -> dict[str, int]:
        """Villages under every non-village unit, bottom-up, iteratively (no recursion limit)."""
        root = registry.root().code
        order: list[str] = []
        stack = [root]
        while stack:
            code = stack.pop()
            order.append(code)
            stack.extend(c for c in registry.child_codes(code) if len(c) < 12)
        counts: dict[str, int] = {}
        for code in reversed(order):
            n = 0
            for child in registry.child_codes(code):
                n += 1 if len(child) == 12 else counts[child]
            counts[code] = n
        return counts

    # -- updates ------------------------------------------------------------------------------

    def set_node(self, node_id: str, online: bool) -> None:
        """Add ``node_id`` or update its state. KeyError if its village is not in the registry."""
        village = self._village_of(node_id)
        previous = self._nodes.get(node_id)
        if previous is None:
            self._nodes[node_id] = online
            self._bump(village, self._known, self._provisioned, +1)
            if online:
                self._online_total += 1
                self._bump(village, self._online, self._covered, +1)
        elif previous != online:
            self._nodes[node_id] = online
            self._online_total += 1 if online else -1
            self._bump(village, self._online, self._covered, +1 if online else -1)

    def remove_node(self, node_id: str) -> None:
        """Forget ``node_id`` (no-op if unknown)."""
        previous = self._nodes.pop(node_id, None)
        if previous is None:
            return
        village = node_id[:12]
        self._bump(village, self._known, self._provisioned, -1)
        if previous:
            self._online_total -= 1
            self._bump(village, self._online, self._covered, -1)
        if village not in self._known:
            del self._ancestors[village]

    # -- queries ------------------------------------------------------------------------------

    def summary(self, code: str) -> UnitCoverage:
        """Coverage of one unit (the scope's root for its code). KeyError if unknown."""
        unit = self._registry.unit(code)
        if unit is None:
            raise KeyError(code)
        return self._coverage(code, unit.name, unit.level)

    def children(self, code: str) -> list[UnitCoverage]:
        """Coverage of each child of ``code`` in code order. KeyError if unknown."""
        if self._registry.unit(code) is None:
            raise KeyError(code)
        return [self._coverage(u.code, u.name, u.level) for u in self._registry.children(code)]

    def online_nodes(self) -> int:
        return self._online_total

    def known_nodes(self) -> int:
        return len(self._nodes)

    def node_online(self, node_id: str) -> bool | None:
        """The state last set for ``node_id``, None if unknown."""
        return self._nodes.get(node_id)

    # -- internals ----------------------------------------------------------------------------

    def _coverage(self, code: str, name: str, level: int) -> UnitCoverage:
        villages = 1 if level == VILLAGE_LEVEL else self._villages_under[code]
        return UnitCoverage(
            code=code,
            name=name,
            level=level,
            villages=villages,
            provisioned=self._provisioned.get(code, 0),
            covered=self._covered.get(code, 0),
        )

    def _village_of(self, node_id: str) -> str:
        if not valid_node_id(node_id):
            raise KeyError(f"not a node id: {node_id!r}")
        village = node_id[:12]
        if village not in self._ancestors:
            if not self._registry.has_village(village):
                raise KeyError(f"village {village} of {node_id} is not in the registry")
            chain = [village]
            parent = self._registry.parent_code(village)
            while parent is not None:
                chain.append(parent)
                parent = self._registry.parent_code(parent)
            self._ancestors[village] = tuple(chain)
        return village

    def _bump(
        self, village: str, per_village: dict[str, int], per_unit: dict[str, int], delta: int
    ) -> None:
        """Change a village's node count; on a flip between 0 and non-zero, its units' too."""
        before = per_village.get(village, 0)
        after = before + delta
        if after:
            per_village[village] = after
        else:
            del per_village[village]
        if (before == 0) == (after == 0):
            return
        step = 1 if after else -1
        for unit in self._ancestors[village]:
            n = per_unit.get(unit, 0) + step
            if n:
                per_unit[unit] = n
            else:
                del per_unit[unit]
