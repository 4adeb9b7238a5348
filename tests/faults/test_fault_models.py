"""The pure parts of the fault tools, on hand-made input: the power-cut model's reading of a
strace log (threads interleave, so a call may be split over two lines) and the delayer's reading
of nfnetlink_queue packet notifications."""

from __future__ import annotations

import struct
from pathlib import Path

from tests.faults.delayer import NFNL_SUBSYS_QUEUE, NFQA_PACKET_HDR, _attr, _packet_ids
from tests.faults.power import as_on_disk, parse_trace

TRACE = """\
100  pwrite64(4</d/x.db-wal>, ""..., 32, 0) = 32
100  fdatasync(4</d/x.db-wal>) = 0
100  pwrite64(4</d/x.db-wal>, ""..., 8, 32) = 8
100  fdatasync(4</d/x.db-wal>) = 0
100  pwrite64(4</d/x.db-wal>, ""..., 16, 40 <unfinished ...>
101  write(7</d/edge.log>, ""..., 10) = 10
100  <... pwrite64 resumed>) = 16
101  pwrite64(3</d/x.db>, ""..., 4096, 0) = -1 ENOSPC (No space left on device)
"""


def _trace(tmp_path: Path, directory: str) -> Path:
    t = tmp_path / "t.strace"
    t.write_text(TRACE.replace("/d/", f"{directory}/"))
    return t


def test_writes_after_the_last_sync_are_unsynced_and_other_files_ignored(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    files = parse_trace(_trace(tmp_path, str(d)), d, "x.db")
    # edge.log is not the database's; the failed write to x.db changed nothing
    assert set(files) == {"x.db-wal"}
    wal = files["x.db-wal"]
    assert (wal.synced_size, wal.size, wal.unsynced, wal.syncs) == (40, 56, [(40, 16)], 2)


def test_the_disk_image_keeps_synced_bytes_only(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.db-wal").write_bytes(b"a" * 56)
    (d / "x.db-shm").write_bytes(b"s" * 8)
    as_on_disk(d, tmp_path / "disk", _trace(tmp_path, str(d)), "x.db")
    assert (tmp_path / "disk" / "x.db-wal").read_bytes() == b"a" * 40
    assert not (tmp_path / "disk" / "x.db-shm").exists()


def test_packet_ids_are_read_from_every_notification_of_a_datagram() -> None:
    def packet(packet_id: int) -> bytes:
        hdr = _attr(NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, 3))
        body = struct.pack("=BBH", 2, 0, 0) + hdr
        return struct.pack("=IHHII", 16 + len(body), NFNL_SUBSYS_QUEUE << 8, 0, 0, 0) + body

    assert _packet_ids(packet(7) + packet(8)) == [7, 8]
