"""The health source: CPU, memory, disk, temperature, outbox depth -> ``wire.Health``.

Parsing is pure (tested on sample /proc text); reading files is a thin shell. Health is not sent
through the outbox: a stale health report is worthless, the next one replaces it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class CpuTimes:
    busy: int
    total: int


def parse_proc_stat(text: str) -> CpuTimes:
    """The aggregate ``cpu`` line of /proc/stat. Idle = idle + iowait."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [int(v) for v in parts[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            # guest time is already counted in user (proc(5)): only the first 8 fields add up
            total = sum(values[:8])
            return CpuTimes(busy=total - idle, total=total)
    raise ValueError("no cpu line in /proc/stat")


def cpu_percent(before: CpuTimes, after: CpuTimes) -> float:
    dt = after.total - before.total
    if dt <= 0:
        return 0.0
    return max(0.0, min(100.0, 100.0 * (after.busy - before.busy) / dt))


def parse_meminfo(text: str) -> float:
    """Used memory in percent: 1 - MemAvailable / MemTotal."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key] = int(parts[0])
    total = fields.get("MemTotal", 0)
    if total <= 0:
        raise ValueError("no MemTotal in /proc/meminfo")
    avail = fields.get("MemAvailable", fields.get("MemFree", 0))
    return max(0.0, min(100.0, 100.0 * (1 - avail / total)))


def parse_thermal(texts: Iterable[str]) -> float | None:
    """Highest of the thermal zones' millidegree readings, in °C; None when there is none."""
    temps = []
    for t in texts:
        try:
            temps.append(int(t.strip()) / 1000.0)
        except ValueError:
            continue
    return max(temps) if temps else None


def disk_used_percent(path: Path) -> float:
    """Used space of the file system holding ``path`` (its nearest existing ancestor)."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    if st.f_blocks == 0:
        return 0.0
    return max(0.0, min(100.0, 100.0 * (1 - st.f_bavail / st.f_blocks)))


class HostProbe:
    """Reads the host's figures; keeps the previous CPU sample to compute a rate."""

    def __init__(
        self, disk_path: Path, proc: Path = Path("/proc"), sys: Path = Path("/sys")
    ) -> None:
        self.disk_path = disk_path
        self.proc = proc
        self.sys = sys
        self._cpu: CpuTimes | None = None

    def cpu_pct(self) -> float:
        try:
            now = parse_proc_stat((self.proc / "stat").read_text())
        except (OSError, ValueError):
            return 0.0
        before, self._cpu = self._cpu, now
        return cpu_percent(before, now) if before is not None else 0.0

    def mem_used_pct(self) -> float:
        try:
            return parse_meminfo((self.proc / "meminfo").read_text())
        except (OSError, ValueError):
            return 0.0

    def disk_used_pct(self) -> float:
        try:
            return disk_used_percent(self.disk_path)
        except OSError:
            return 0.0

    def temp_c(self) -> float | None:
        texts = []
        for zone in sorted((self.sys / "class/thermal").glob("thermal_zone*/temp")):
            try:
                texts.append(zone.read_text())
            except OSError:
                continue
        return parse_thermal(texts)
