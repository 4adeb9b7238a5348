"""A power cut, not just a crash: the files as they were *on disk*, without what the kernel had
only in its page cache.

``kill -9`` alone loses nothing the process had written: the kernel still writes it back. A power
cut loses every write not yet made durable by ``fsync``/``fdatasync``. So the process runs under
``strace``, which logs every write and sync of its files (``pwrite64`` with offset and length,
``fdatasync``, ``fsync``, ``ftruncate``); after the kill, :func:`as_on_disk` turns a copy of the
files into what a disk that honours syncs, and nothing more, would hold: bytes written after a
file's last completed sync are zeroed (SQLite rejects a WAL frame whose checksum fails, exactly as
it would a frame that never reached the platter), and the file is cut back to its size at that
sync. The shared-memory index (``-shm``) is not durable state and is removed; SQLite rebuilds it
from the WAL on open.

This is the strictest power cut a correct disk allows (anything unsynced gone); a disk that lies
about syncs is out of scope.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

#: strace's options: follow threads (the outbox writes on its own thread), show fd paths, no data.
STRACE_ARGS = ["-f", "-qq", "--seccomp-bpf", "-y", "-s", "0",
               "-e", "trace=pwrite64,write,fsync,fdatasync,ftruncate"]  # fmt: skip

_CALL = re.compile(r"^(\d+)\s+(\w+)\((\d+)<([^>]*)>(.*)\)\s*=\s*(-?\d+)")
_UNFINISHED = re.compile(r"^(\d+)\s+(.*?)\s*<unfinished \.\.\.>$")
_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. \w+ resumed>(.*)$")


@dataclass
class FileWrites:
    """One file's writes since it was created, as the trace saw them."""

    size: int = 0
    synced_size: int = 0
    unsynced: list[tuple[int, int]] = field(default_factory=list)
    syncs: int = 0

    def unsynced_bytes(self) -> int:
        return sum(n for _, n in self.unsynced)


def parse_trace(trace: Path, directory: Path, stem: str) -> dict[str, FileWrites]:
    """The writes and syncs of the files of ``directory`` whose names start with ``stem`` (a
    database and its journals), keyed by file name, in the order the calls completed."""
    files: dict[str, FileWrites] = {}
    pending: dict[str, str] = {}
    prefix = f"{directory.resolve()}/{stem}"
    for raw in trace.read_text(errors="replace").splitlines():
        line = raw.rstrip()
        if m := _UNFINISHED.match(line):
            pending[m[1]] = f"{m[1]} {m[2]}"
            continue
        if m := _RESUMED.match(line):
            line = pending.pop(m[1], "") + m[2]
        m = _CALL.match(line)
        if m is None or not m[4].startswith(prefix) or int(m[6]) < 0:
            continue
        name, call, args, result = m[4][len(prefix) - len(stem) :], m[2], m[5], int(m[6])
        f = files.setdefault(name, FileWrites())
        if call == "pwrite64":
            offset = int(args.rsplit(",", 1)[1])
            f.unsynced.append((offset, result))
            f.size = max(f.size, offset + result)
        elif call in ("fsync", "fdatasync"):
            f.unsynced.clear()
            f.synced_size = f.size
            f.syncs += 1
        elif call == "ftruncate":
            f.size = int(args.rsplit(",", 1)[1])
        elif call == "write":  # an append at an unknown offset: the model would be wrong
            raise AssertionError(f"{name}: write() without an offset; extend the model")
    return files


def as_on_disk(src: Path, dst: Path, trace: Path, stem: str) -> dict[str, FileWrites]:
    """Copy ``src`` (a data directory whose process is dead) to ``dst`` with its ``stem`` files
    as a power cut at that instant would have left them; return what the trace saw per file."""
    files = parse_trace(trace, src, stem)
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.is_file() and not path.name.endswith("-shm"):
            shutil.copy2(path, dst / path.name)
    for name, f in files.items():
        target = dst / name
        if not target.exists():
            continue
        with target.open("r+b") as out:
            for offset, n in f.unsynced:
                end = min(offset + n, f.synced_size)
                if end > offset:
                    out.seek(offset)
                    out.write(b"\0" * (end - offset))
            out.truncate(f.synced_size)
    return files
