"""One log line per key and window: a flood of bad input from one node (or one topic) gives one
warning a minute, not thousands. Pure: time is passed in."""

from __future__ import annotations


class LogLimiter:
    """At most one log line per key (node or topic, reason) per ``window_s``. Pure."""

    #: Keys remembered; a flood of distinct bad topics cannot grow memory past this.
    MAX_KEYS = 10_000

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._last: dict[tuple[str, str], float] = {}

    def allow(self, key: tuple[str, str], now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self.window_s:
            return False
        if len(self._last) >= self.MAX_KEYS:
            self._last = {k: t for k, t in self._last.items() if now - t < self.window_s}
            if len(self._last) >= self.MAX_KEYS:
                return False
        self._last[key] = now
        return True
