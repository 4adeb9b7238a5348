"""A memory-limited cgroup for one real process: a child of this process's own memory cgroup,
created directly (no systemd needed), with cgroup v2 (``memory.max``, ``memory.peak``,
``memory.events``) or, on a hybrid host whose memory controller is still on v1,
``memory.limit_in_bytes``, ``memory.max_usage_in_bytes``, ``memory.failcnt`` and
``memory.oom_control``. The process joins it before it runs anything: it is started through
``sh -c 'echo $$ > cgroup.procs; exec ...'``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from pathlib import Path

from tests.peers import missing

ROOT = Path("/sys/fs/cgroup")


def _own_dir() -> tuple[Path, int]:
    """This process's memory cgroup directory and the cgroup version of its memory controller."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        v2 = ROOT / "cgroup.controllers"
        if hid == "0" and v2.exists() and "memory" in v2.read_text().split():
            return ROOT / path.lstrip("/"), 2
        if "memory" in controllers.split(","):
            return ROOT / "memory" / path.lstrip("/"), 1
    missing("a memory cgroup", "cgroup v2 with the memory controller, or v1 memory, writable")


class MemoryCgroup:
    """``limit`` bytes for the processes started with :meth:`wrap`; :meth:`figures` reads the
    peak and the limit events. Use as a context manager: removed (its processes killed) on exit.
    While it exists, a thread samples usage every 50 ms (v2 kernels before 5.19 have no
    ``memory.peak``)."""

    def __init__(self, limit: int) -> None:
        parent, self.version = _own_dir()
        if not os.access(parent, os.W_OK):
            missing("a writable memory cgroup", f"{parent} is not writable: run as root")
        self.dir = parent / f"shilian-test-{uuid.uuid4().hex[:8]}"
        self.limit = limit
        self.sampled_peak = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> MemoryCgroup:
        self.dir.mkdir()
        if self.version == 2:
            (self.dir / "memory.max").write_text(str(self.limit))
            (self.dir / "memory.swap.max").write_text("0")
        else:
            (self.dir / "memory.limit_in_bytes").write_text(str(self.limit))
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sampler.join()
        procs = self.dir / "cgroup.procs"
        deadline = time.monotonic() + 30
        while procs.read_text().split() and time.monotonic() < deadline:
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
            time.sleep(0.1)
        self.dir.rmdir()

    def wrap(self, args: list[str]) -> list[str]:
        """``args`` run inside this cgroup from their first instruction."""
        join = f'echo $$ > "{self.dir / "cgroup.procs"}" && exec "$@"'
        return ["/bin/sh", "-c", join, "sh", *args]

    def current(self) -> int:
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        return int((self.dir / name).read_text())

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.sampled_peak = max(self.sampled_peak, self.current())
            except OSError:
                return

    def figures(self) -> dict[str, int]:
        """Peak usage in bytes and the limit's events: ``high``/``max`` (reclaim at or over the
        limit; v1: ``failcnt``), ``oom`` and ``oom_kill``."""
        if self.version == 2:
            peak_file = self.dir / "memory.peak"
            peak = int(peak_file.read_text()) if peak_file.exists() else self.sampled_peak
            events = dict(
                (k, int(v))
                for k, v in (
                    line.split() for line in (self.dir / "memory.events").read_text().splitlines()
                )
            )
            return {"peak_bytes": max(peak, self.sampled_peak), "high": events.get("high", 0),
                    "max": events.get("max", 0), "oom": events.get("oom", 0),
                    "oom_kill": events.get("oom_kill", 0)}  # fmt: skip
        oom = dict(
            (k, int(v))
            for k, v in (
                line.split() for line in (self.dir / "memory.oom_control").read_text().splitlines()
            )
        )
        return {
            "peak_bytes": max(int((self.dir / "memory.max_usage_in_bytes").read_text()),
                              self.sampled_peak),
            "max": int((self.dir / "memory.failcnt").read_text()),
            "oom": int(oom.get("under_oom", 0)),
            "oom_kill": int(oom.get("oom_kill", 0)),
        }  # fmt: skip
