"""A real process's wall clock stepped while it runs, as NTP or an operator's ``date -s`` steps it.

libfaketime (Debian ``libfaketime``) is preloaded into the process; it reads the offset from a
control file on every call (``FAKETIME_NO_CACHE``), so writing the file steps the process's
wall clock at once. ``FAKETIME_DONT_FAKE_MONOTONIC`` leaves ``CLOCK_MONOTONIC`` alone, as a real
step of the system clock does.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from tests.peers import missing

#: Where Debian installs the preload library (multiarch directory).
LIBFAKETIME_GLOB = "/usr/lib/*/faketime/libfaketime.so.1"


def libfaketime() -> str:
    """The preload library's path, or :func:`tests.peers.missing`."""
    found = sorted(glob.glob(LIBFAKETIME_GLOB))
    if not found:
        missing("libfaketime", "apt-get install libfaketime faketime")
    return found[0]


class WallClock:
    """The control file of one process's wall clock: :meth:`env` to start it with,
    :meth:`step` to move its clock to ``offset_s`` from the real one."""

    def __init__(self, control: Path) -> None:
        self.control = control
        self.offset_s = 0
        self._write(0)

    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": libfaketime(),
            "FAKETIME_TIMESTAMP_FILE": str(self.control),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            # Its condition-variable fix stalls Python's GIL hand-over: an asyncio loop beside a
            # busy thread paused up to 1.1 s with it, 0.06 s without (measured on libfaketime
            # 0.9.10, no step at all), which would time out 1 s health reports by itself.
            "FAKETIME_FORCE_MONOTONIC_FIX": "0",
        }

    def step(self, offset_s: int) -> None:
        """Set the process's wall clock to the real one plus ``offset_s`` (whole seconds)."""
        self._write(offset_s)
        self.offset_s = offset_s

    def _write(self, offset_s: int) -> None:
        # Replaced in one rename: the process never reads a half-written offset.
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(f"{offset_s:+d}\n", encoding="ascii")
        os.replace(tmp, self.control)
