"""Memory tracing for long runs (the soak, bench/faults/soak.py), off unless asked for.

When the environment variable ``SHILIAN_TRACEMALLOC`` names a folder, central starts
:mod:`tracemalloc` at start-up (one frame per allocation: the allocating line) and writes a
snapshot there, ``snapshot-<n>.tracemalloc``, each time it receives SIGUSR2. Comparing two
snapshots (``Snapshot.compare_to(old, "lineno")``) names the lines whose allocations grew.
Tracing slows allocation and holds its own tables in memory: never in production.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import tracemalloc
from pathlib import Path

log = logging.getLogger("shilian.central.memtrace")

#: The environment variable naming the snapshots' folder.
ENV = "SHILIAN_TRACEMALLOC"
#: Frames kept per allocation: the allocating line is enough to name what grows, and each
#: extra frame multiplies the tracer's own memory.
FRAMES = 1


def install(loop: asyncio.AbstractEventLoop) -> Path | None:
    """Start tracing and the SIGUSR2 handler if :data:`ENV` is set; the folder, or None."""
    folder = os.environ.get(ENV)
    if not folder:
        return None
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(FRAMES)
    numbers = itertools.count(1)

    def dump() -> None:
        path = out / f"snapshot-{next(numbers)}.tracemalloc"
        tracemalloc.take_snapshot().dump(str(path))
        log.info("内存快照 / tracemalloc snapshot written: %s", path)

    loop.add_signal_handler(signal.SIGUSR2, dump)
    log.warning("内存跟踪已开启 / tracemalloc on (slower; SIGUSR2 writes a snapshot to %s)", out)
    return out
