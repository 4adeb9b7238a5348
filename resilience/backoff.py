"""Reconnect delays: exponential backoff with full jitter, capped (pure; RNG injected).

Full jitter (delay uniform in [0, min(cap, base * 2**n)]) spreads a fleet's reconnects after a
broker restart instead of having 1,856 nodes retry in lock-step.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from wire.limits import RECONNECT_BASE_S, RECONNECT_CAP_S

#: First retry window and its cap: the contract's (wire/limits.py), because central's grace after
#: a broker outage is derived from them (``wire.limits.RECONNECT_GRACE_S``).
BASE_S = RECONNECT_BASE_S
CAP_S = RECONNECT_CAP_S


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


def next_try(now: float, delay: float) -> str:
    """When the next connection attempt is, for a log line (zh / en): in seconds and as the
    local time of day, so whoever reads the journal knows it is still trying, and when."""
    at = time.strftime("%H:%M:%S", time.localtime(now + delay))
    return f"下次重试 {delay:.1f} 秒后（{at}）/ next try in {delay:.1f} s at {at}"
