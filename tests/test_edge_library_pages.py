"""edge/library_pages.py: FFmpeg's libraries, once loaded for a picture, are paged in on demand
(no read-ahead, no fault-around) and the picture is still right."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edge.library_pages import Mapping, page_on_demand, parse_maps
from edge.picture import THUMB_H, THUMB_W

from .test_edge_keyframe_decoder import keyframe, pyav_thumbnail

ROOT = Path(__file__).resolve().parents[1]

#: Lines of a real /proc/<pid>/maps (x86-64, Linux 6.18), with a path holding a space.
MAPS = """\
55d0c7a00000-55d0c7a01000 r--p 00000000 fd:00 1311 /usr/bin/python3.11
7f5338c00000-7f5338c8d000 r--p 00000000 fd:00 9412 /opt/venv/av.libs/libavcodec-5e6b81c2.so.62
7f5338c8d000-7f5339a2a000 r-xp 0008d000 fd:00 9412 /opt/venv/av.libs/libavcodec-5e6b81c2.so.62
7f533a47c000-7f533a488000 rw-p 00000000 00:00 0
7f533a500000-7f533a501000 r--p 00000000 fd:00 77 /srv/my libs/libx.so
7ffc1a2e1000-7ffc1a302000 rw-p 00000000 00:00 0                          [stack]
7ffc1a3f5000-7ffc1a3f7000 r-xp 00000000 00:00 0                          [vdso]
"""


def test_only_file_backed_mappings_are_parsed() -> None:
    codec = "/opt/venv/av.libs/libavcodec-5e6b81c2.so.62"
    assert parse_maps(MAPS) == [
        Mapping(0x55D0C7A00000, 0x55D0C7A01000, "/usr/bin/python3.11"),
        Mapping(0x7F5338C00000, 0x7F5338C8D000, codec),
        Mapping(0x7F5338C8D000, 0x7F5339A2A000, codec),
        Mapping(0x7F533A500000, 0x7F533A501000, "/srv/my libs/libx.so"),
    ]


def test_nothing_new_is_nothing_advised() -> None:
    from edge.library_pages import mapped_files

    assert page_on_demand(mapped_files()) == 0


def test_loaded_libraries_are_paged_on_demand_and_decode_the_same() -> None:
    """In a fresh process (this one may have FFmpeg mapped through PyAV already): every mapping
    of libavcodec carries the kernel's random-access flag (``rr`` in smaps' VmFlags) after the
    load, and the thumbnail is PyAV's."""
    kf = keyframe(320, 240, lambda x, y: (5 * x + y) % 256)
    probe = (
        "import sys\n"
        "from edge.picture import thumbnail\n"
        "sys.stdout.buffer.write(thumbnail(sys.stdin.buffer.read()))\n"
        "flags, path = [], ''\n"
        "for line in open('/proc/self/smaps'):\n"
        "    f = line.split()\n"
        "    if not f[0].endswith(':'):\n"
        "        path = f[5] if len(f) > 5 else ''\n"
        "    elif f[0] == 'VmFlags:' and 'libavcodec' in path:\n"
        "        flags.append('rr' in f[1:])\n"
        "print(file=sys.stderr, end=' '.join(map(str, flags)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], input=kf, cwd=ROOT, capture_output=True, check=True
    )
    assert out.stdout == pyav_thumbnail(kf)
    assert len(out.stdout) == THUMB_W * THUMB_H
    flags = out.stderr.decode().split()
    assert flags and set(flags) == {"True"}
