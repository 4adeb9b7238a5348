"""The demo fleet's behaviour, as a pure plan: which simulated nodes exist, which are up, and what
happens next (dropouts, recoveries, events). No I/O, no clock of its own: the fleet runner asks
``step(now)`` and carries the actions out on real edge agents."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

#: Share of the villages that are not covered but still have a (provisioned, offline) node: the
#: rest never had one. Realistic for a network being rolled out; tunable for the demo.
PROVISIONED_OFFLINE_SHARE = 0.5
#: Mean seconds between dropouts across the fleet (each followed by a recovery elsewhere, so the
#: covered share stays near the target while individual villages come and go).
MEAN_DROPOUT_INTERVAL_S = 4.0
#: Mean seconds between events across the whole fleet.
MEAN_EVENT_INTERVAL_S = 1.0
#: Share of dropouts that are crashes (power cut: the broker publishes the last will) rather than
#: clean stops (the agent publishes "stopped").
CRASH_SHARE = 0.7


class Action(Enum):
    START = "start"
    CRASH = "crash"
    STOP = "stop"
    EVENT = "event"


@dataclass(frozen=True, slots=True)
class Step:
    action: Action
    node_id: str
    priority: str = "info"
    kind: str = ""


@dataclass
class ChurnPlan:
    """Nodes for ``villages``: ``online_share`` of the villages get an online node; of the rest,
    :data:`PROVISIONED_OFFLINE_SHARE` get a node that stays offline until a recovery picks it."""

    villages: list[str]
    online_share: float
    rng: random.Random = field(default_factory=random.Random)
    nodes: list[str] = field(init=False)
    up: set[str] = field(init=False)
    _next_drop: float = field(init=False, default=0.0)
    _next_event: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.online_share <= 1.0:
            raise ValueError("online_share must be within 0..1")
        order = sorted(self.villages)
        self.rng.shuffle(order)
        n_online = round(len(order) * self.online_share)
        rest = order[n_online:]
        n_idle = round(len(rest) * PROVISIONED_OFFLINE_SHARE)
        self.nodes = sorted(f"{v}-a" for v in order[: n_online + n_idle])
        self.up = {f"{v}-a" for v in order[:n_online]}

    def initial(self) -> list[Step]:
        return [Step(Action.START, n) for n in sorted(self.up)]

    def step(self, now: float) -> list[Step]:
        """Actions due at ``now`` (call about once a second)."""
        out: list[Step] = []
        if self._next_drop == 0.0:
            self._next_drop = now + self.rng.expovariate(1 / MEAN_DROPOUT_INTERVAL_S)
            self._next_event = now + self.rng.expovariate(1 / MEAN_EVENT_INTERVAL_S)
        while now >= self._next_drop:
            self._next_drop += self.rng.expovariate(1 / MEAN_DROPOUT_INTERVAL_S)
            down = sorted(set(self.nodes) - self.up)
            if self.up and down:
                victim = self.rng.choice(sorted(self.up))
                back = self.rng.choice(down)
                self.up.discard(victim)
                self.up.add(back)
                how = Action.CRASH if self.rng.random() < CRASH_SHARE else Action.STOP
                out += [Step(how, victim), Step(Action.START, back)]
        while now >= self._next_event:
            self._next_event += self.rng.expovariate(1 / MEAN_EVENT_INTERVAL_S)
            if self.up:
                node = self.rng.choice(sorted(self.up))
                r = self.rng.random()
                if r < 0.02:
                    out.append(Step(Action.EVENT, node, "alarm", "panic"))
                elif r < 0.2:
                    out.append(Step(Action.EVENT, node, "device", "camera_offline"))
                else:
                    out.append(Step(Action.EVENT, node, "info", "patrol_checkin"))
        return out
