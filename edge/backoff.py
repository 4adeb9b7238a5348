"""Reconnect delays: exponential backoff with full jitter, capped (pure; RNG injected).

Full jitter (delay uniform in [0, min(cap, base * 2**n)]) spreads a fleet's reconnects after a
broker restart instead of having 1,856 nodes retry in lock-step.
"""

from __future__ import annotations

import random
from collections.abc import Callable

#: First retry window: a broker restart takes ~0.1 s, so most nodes are back within a second.
BASE_S = 1.0
#: Upper bound of a retry window: a node is never more than a minute from retrying.
CAP_S = 60.0


class Backoff:
    """``next()`` gives the delay before the next attempt; ``reset()`` after a success;
    ``to_cap()`` for failures that retrying soon cannot fix (bad credentials, refused id)."""

    def __init__(
        self,
        rng: Callable[[], float] = random.random,
        base: float = BASE_S,
        cap: float = CAP_S,
    ) -> None:
        self._rng = rng
        self.base = base
        self.cap = cap
        self.attempt = 0

    def window(self) -> float:
        """Upper bound of the next delay (exponent capped so it never overflows)."""
        return min(self.cap, self.base * 2.0 ** min(self.attempt, 64))

    def next(self) -> float:
        delay = self._rng() * self.window()
        self.attempt += 1
        return delay

    def to_cap(self) -> float:
        self.attempt = 64
        return self._rng() * self.cap

    def reset(self) -> None:
        self.attempt = 0
