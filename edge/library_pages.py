"""Shared libraries loaded with ctypes keep only the pages the process uses resident.

FFmpeg's libavcodec is 14 MB of code of which a key-frame decode and a JPEG encode use a few
MB, but the kernel maps more than it is asked for: a page fault maps the whole page-cache folio
that holds the page (Linux 6.x keeps files in large folios after a sequential read, up to
megabytes: one byte read mapped 1 MB of libavcodec, measured) and, for small folios, up to
``fault_around_bytes`` (64 KB) of neighbouring cached pages; and read-ahead brings in more. All
of it is counted in the process's RSS. Measured on Linux 6.18 with PyAV 18's libraries, a
fresh process after one decode and one snapshot: 21.8 MB of FFmpeg library pages resident
(12.9 MB after the library files were read once sequentially), and 7.7 MB after
:func:`page_on_demand`.

Two steps, on the mappings that appeared while the libraries were loaded:

- ``madvise(MADV_RANDOM)``: the kernel neither reads ahead nor faults around in these areas
  (measured: three one-byte reads map 12 KB instead of 132 KB). It does not stop a fault from
  mapping a large folio that is already cached, hence:
- ``posix_fadvise(POSIX_FADV_DONTNEED)`` on each library file: the cached pages no process has
  mapped are dropped (nothing is written: they are clean file pages; pages other processes map
  stay), so later faults read single pages from the file. The cost is those reads, once, on
  the first decode (a few MB in 4 KB reads).

Both are advice: where ``/proc`` or the calls are missing (not Linux) nothing changes, and the
libraries work the same.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

#: MADV_RANDOM from <sys/mman.h> (the same on every Linux architecture).
MADV_RANDOM = 1
MAPS = Path("/proc/self/maps")


@dataclass(frozen=True, slots=True)
class Mapping:
    start: int
    end: int
    path: str


def parse_maps(text: str) -> list[Mapping]:
    """The file-backed mappings of a ``/proc/<pid>/maps`` text (``[heap]``, anonymous and
    pseudo-file mappings left out)."""
    out = []
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith("/"):
            continue
        start, _, end = fields[0].partition("-")
        out.append(Mapping(int(start, 16), int(end, 16), fields[5]))
    return out


def mapped_files() -> set[str]:
    """Paths of the files this process maps now (empty where there is no ``/proc``)."""
    try:
        return {m.path for m in parse_maps(MAPS.read_text())}
    except OSError:
        return set()


def page_on_demand(loaded_before: set[str]) -> int:
    """Advise the kernel to page in only what is touched, for every file mapped now that was
    not in ``loaded_before`` (the libraries just loaded and the ones they pulled in). Returns
    the number of files advised (0 where the advice is not available)."""
    try:
        mappings = [m for m in parse_maps(MAPS.read_text()) if m.path not in loaded_before]
        madvise = ctypes.CDLL(None).madvise  # the process's own libc
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    for m in mappings:
        madvise(m.start, m.end - m.start, MADV_RANDOM)  # advice: a refusal changes nothing
    files = {m.path for m in mappings}
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # replaced or removed since it was loaded: its pages stay as they are
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return len(files)
