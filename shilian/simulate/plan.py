"""What a simulation does and what central must show, as pure data: which nodes exist (from a
registry selection at a target coverage), when each goes down or up, and for each phase the
coverage central must report for the selection's unit and each of its children. No I/O, no
clock: the worker processes ask :meth:`Timeline.due` with the seconds since the common start.

Scenarios (``D`` = ``phase_s``):

- ``steady``: every node up for ``D``; central shows the truth exactly.
- ``clock-skew``: as steady, with a share of the nodes' clocks off by ± ``skew_minutes``; central
  times liveness by its own clock, so it must still show the truth exactly.
- ``county-outage``: steady for ``D``; then every node of one county loses power (the broker
  publishes their wills) for ``D``: that county shows 0 and its parent drops by as much; then they
  return and the truth is shown again for ``D``.
- ``broker-restart``: steady for ``D``; then the broker restarts and every node reconnects with
  the edge's backoff and jitter; for ``restart_s`` central must show the truth, never less (it
  holds each node through the reconnect window, docs/central.md).
- ``flapping``: for ``2D`` a share of the nodes goes down and up every ``flap_period_s`` (each at
  its own offset); every unit shows at least what the steady nodes cover and at most the truth;
  then all stay up and the truth is shown exactly for ``D``.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from registry import Registry


class Scenario(StrEnum):
    STEADY = "steady"
    COUNTY_OUTAGE = "county-outage"
    BROKER_RESTART = "broker-restart"
    FLAPPING = "flapping"
    CLOCK_SKEW = "clock-skew"


#: Local names of a village's simulated nodes: ``<village>-sim0``, ``-sim1``… (node id rule:
#: ``[a-z0-9][a-z0-9_]{0,15}``), so they never collide with a real node's ``-a``.
NODE_PREFIX = "sim"


class SimSpec(BaseModel):
    """Everything a simulation is: the parent hands the same spec to every worker process, which
    derives the same plan from it (the seed makes it deterministic)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: str = Field(description="registry selection: city, county or township code")
    nodes: int = Field(ge=1, description="simulated nodes (several per village when needed)")
    coverage: float = Field(gt=0, le=1, description="share of the selection's villages covered")
    scenario: Scenario = Field(description="what happens, and what central must show")
    seed: int = Field(default=1, description="placement, jitter and boot ids derive from it")
    phase_s: float = Field(default=60.0, gt=0, description="length of each phase, seconds")
    settle_s: float = Field(
        default=10.0, ge=0, description="seconds central gets to show a phase's figures"
    )
    restart_s: float = Field(
        default=120.0, gt=0, description="broker-restart: seconds checked after the restart"
    )
    county: str | None = Field(default=None, description="county-outage: the county (6 digits)")
    flap_share: float = Field(default=0.05, ge=0, le=1, description="flapping: share of nodes")
    flap_period_s: float = Field(default=10.0, gt=0, description="flapping: seconds down or up")
    skew_share: float = Field(default=0.2, ge=0, le=1, description="clock-skew: share of nodes")
    skew_minutes: float = Field(default=30.0, ge=0, description="clock-skew: ± this many minutes")
    health_interval_s: float = Field(default=30.0, ge=1, description="health report interval")
    event_interval_s: float = Field(
        default=600.0, ge=0, description="mean seconds between a node's info events (0: none)"
    )
    backoff_base_s: float = Field(default=1.0, gt=0, description="reconnect backoff base")
    backoff_cap_s: float = Field(default=60.0, gt=0, description="reconnect backoff cap")
    connect_timeout_s: float = Field(default=10.0, gt=0, description="connect/CONNACK timeout")
    host: str = Field(default="127.0.0.1", description="broker host")
    port: int = Field(default=1883, ge=1, le=65535, description="broker port")
    tls_ca: str | None = Field(default=None, description="CA file: connect with TLS")
    tls_cert: str | None = Field(default=None, description="client certificate (PEM)")
    tls_key: str | None = Field(default=None, description="client key (PEM)")
    workers: int = Field(default=1, ge=1, description="worker processes")
    start_rate_per_s: float = Field(default=1000.0, gt=0, description="first connects per second")

    @model_validator(mode="after")
    def _settles_within_a_phase(self) -> SimSpec:
        if self.settle_s >= self.phase_s:
            raise ValueError(
                f"settle_s ({self.settle_s}) 应短于 phase_s ({self.phase_s}) / must be shorter "
                "than phase_s, or no sample is ever checked"
            )
        return self


@dataclass(frozen=True, slots=True)
class Change:
    """At ``at`` seconds after the start, node ``index`` goes ``down`` (a power cut) or ``up``."""

    at: float
    index: int
    action: Literal["down", "up"]


@dataclass(frozen=True, slots=True)
class Phase:
    """From ``start + settle`` to ``end`` (seconds after the start), central's ``covered`` for
    each unit code must lie in ``expect[code]`` (low, high), both inclusive."""

    name: str
    start: float
    end: float
    settle: float
    expect: dict[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Plan:
    node_ids: list[str]
    skew_s: list[float]
    changes: list[Change]
    phases: list[Phase]
    #: Seconds after the start at which the broker restarts (broker-restart only).
    restart_at: float | None
    #: Covered villages per unit when every node is up: the truth of steady phases.
    truth: dict[str, int]
    villages: dict[str, int]

    @property
    def end(self) -> float:
        return max(p.end for p in self.phases)


class PlanError(ValueError):
    """The spec asks for something the registry selection cannot give (zh / en)."""


def _child_of(registry: Registry, village: str) -> str:
    code = village
    while (parent := registry.parent_code(code)) not in (registry.scope, None):
        code = parent
    return code


def _count(registry: Registry, villages: set[str]) -> dict[str, int]:
    per_child = Counter(_child_of(registry, v) for v in villages)
    out = {registry.scope: len(villages)}
    for code in registry.child_codes(registry.scope):
        out[code] = per_child.get(code, 0)
    return out


def make_plan(spec: SimSpec, registry: Registry) -> Plan:
    rng = random.Random(spec.seed)
    all_villages = sorted(u.code for u in registry.villages())
    if not all_villages:
        raise PlanError(f"范围 {spec.scope} 内没有村级单位 / no villages under {spec.scope}")
    wanted = max(1, round(spec.coverage * len(all_villages)))
    covered = sorted(rng.sample(all_villages, min(wanted, spec.nodes)))
    # Node i in village i mod k: several nodes per village once there are more nodes than
    # covered villages (a village may have several boxes).
    node_ids = [
        f"{covered[i % len(covered)]}-{NODE_PREFIX}{i // len(covered)}" for i in range(spec.nodes)
    ]
    village_of = [n[:12] for n in node_ids]
    truth = _count(registry, set(covered))
    totals = _count(registry, set(all_villages))
    skew = [0.0] * spec.nodes
    changes: list[Change] = []
    restart_at = None
    d, s = spec.phase_s, spec.settle_s

    def exact(name: str, start: float, end: float, settle: float = s) -> Phase:
        return Phase(name, start, end, settle, {c: (n, n) for c, n in truth.items()})

    if spec.scenario in (Scenario.STEADY, Scenario.CLOCK_SKEW):
        if spec.scenario is Scenario.CLOCK_SKEW:
            for i in rng.sample(range(spec.nodes), round(spec.skew_share * spec.nodes)):
                skew[i] = rng.choice((-1.0, 1.0)) * spec.skew_minutes * 60.0
        phases = [exact(spec.scenario.value, 0.0, d)]
    elif spec.scenario is Scenario.COUNTY_OUTAGE:
        county = spec.county or max(
            registry.child_codes(spec.scope), key=lambda c: (truth.get(c, 0), c)
        )
        out = [i for i, v in enumerate(village_of) if v.startswith(county)]
        if len(county) != 6 or not out:
            raise PlanError(
                f"县 {county} 在范围 {spec.scope} 内没有模拟节点 / county {county} has no "
                f"simulated node in {spec.scope}"
            )
        changes += [Change(d, i, "down") for i in out]
        changes += [Change(2 * d, i, "up") for i in out]
        during = _count(registry, {v for v in covered if not v.startswith(county)})
        phases = [
            exact("steady", 0.0, d),
            Phase("county-outage", d, 2 * d, s, {c: (n, n) for c, n in during.items()}),
            exact("return", 2 * d, 3 * d),
        ]
    elif spec.scenario is Scenario.BROKER_RESTART:
        restart_at = d
        # From the restart on, no settling: central must never show less than the truth.
        phases = [exact("steady", 0.0, d), exact("broker-restart", d, d + spec.restart_s, 0.0)]
    else:
        flappers = set(rng.sample(range(spec.nodes), round(spec.flap_share * spec.nodes)))
        p = spec.flap_period_s
        for i in sorted(flappers):
            t = rng.random() * p
            while t < 2 * d:
                changes.append(Change(t, i, "down"))
                if t + p < 2 * d:
                    changes.append(Change(t + p, i, "up"))
                t += 2 * p
            changes.append(Change(2 * d, i, "up"))
        steady = _count(registry, {v for i, v in enumerate(village_of) if i not in flappers})
        phases = [
            Phase("flapping", 0.0, 2 * d, s, {c: (steady[c], truth[c]) for c in truth}),
            exact("settled", 2 * d, 3 * d),
        ]
    changes.sort(key=lambda c: (c.at, c.index))
    return Plan(node_ids, skew, changes, phases, restart_at, truth, totals)


class Timeline:
    """The changes of some nodes in time order; :meth:`due` hands out those whose time has come
    (pure: the caller passes the elapsed seconds)."""

    def __init__(self, changes: list[Change]) -> None:
        self._changes = changes
        self._times = [c.at for c in changes]
        self._next = 0

    def due(self, elapsed: float) -> list[Change]:
        end = bisect.bisect_right(self._times, elapsed, lo=self._next)
        out = self._changes[self._next : end]
        self._next = end
        return out

    def next_at(self) -> float | None:
        """When the next change is due (None: no more)."""
        return self._times[self._next] if self._next < len(self._times) else None
