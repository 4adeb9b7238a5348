"""Central's snapshot intake over a real SQLite store: pictures leave the event rows, invalid ones
are refused and counted, and the per-alarm and total bounds hold."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from central import snapshots, views
from central.snapshots import MAX_PER_ALARM, SnapshotIntake
from central.store import EventRow, SqliteStore, Write

NODE = "450102001003-a"
BOOT = "ab" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"x" * 500 + b"\xff\xd9"


def _event(seq: int, camera: str, alarm_seq: int = 1, jpeg: bytes = JPEG) -> EventRow:
    data = {
        "alarm_boot_id": BOOT,
        "alarm_seq": alarm_seq,
        "camera": camera,
        "zone": 3,
        "taken_ts": 1.0,
        "width": 640,
        "height": 360,
        "jpeg_b64": base64.b64encode(jpeg).decode(),
    }
    body = json.dumps(data)
    return EventRow(NODE, NODE[:12], BOOT, seq, 1.0, 2.0, "info", "snapshot", camera, body)


@pytest.fixture
def intake(tmp_path: Path) -> tuple[SqliteStore, SnapshotIntake, CollectorRegistry]:
    store = SqliteStore(tmp_path / "c.sqlite3")
    reg = CollectorRegistry()
    return store, SnapshotIntake(store.conn, reg), reg


def _ingest(store: SqliteStore, intake: SnapshotIntake, rows: list[Write]) -> list[Write]:
    writes, shots = intake.split(rows)
    store.stage(writes)
    intake.stage(shots)
    store.commit()
    return writes


def test_the_picture_moves_to_its_table_and_the_event_keeps_the_rest(
    intake: tuple[SqliteStore, SnapshotIntake, CollectorRegistry],
) -> None:
    store, snap, reg = intake
    writes = _ingest(store, snap, [_event(2, "cam-a")])
    row = writes[0]
    assert isinstance(row, EventRow) and row.seq == 2
    meta = json.loads(row.data)
    assert "jpeg_b64" not in meta and meta["bytes"] == len(JPEG) and meta["alarm_seq"] == 1
    reader = views.open_reader(store.path)
    try:
        assert snapshots.jpeg_of(reader, NODE, BOOT, 1, "cam-a") == JPEG
    finally:
        reader.close()
    assert reg.get_sample_value("shilian_snapshots_total", {"outcome": "stored"}) == 1


def test_not_a_jpeg_is_refused_counted_and_its_event_says_why(
    intake: tuple[SqliteStore, SnapshotIntake, CollectorRegistry],
) -> None:
    store, snap, reg = intake
    bad = _event(2, "cam-a")._replace(data=json.dumps({"camera": "cam-a", "jpeg_b64": "@@"}))
    writes = _ingest(store, snap, [bad, _event(3, "cam-b", jpeg=b"GIF89a" + b"x" * 50)])
    assert all("refused" in json.loads(w.data) for w in writes if isinstance(w, EventRow))
    assert store.conn.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 0
    assert reg.get_sample_value("shilian_snapshots_total", {"outcome": "refused"}) == 2


def test_bounds_per_alarm_and_in_total(
    intake: tuple[SqliteStore, SnapshotIntake, CollectorRegistry],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, snap, reg = intake
    cams = [f"cam-{i}" for i in range(MAX_PER_ALARM + 2)]
    _ingest(store, snap, [_event(10 + i, c) for i, c in enumerate(cams)])
    n = store.conn.execute("SELECT count(*) FROM snapshots").fetchone()[0]
    assert n == MAX_PER_ALARM
    assert reg.get_sample_value("shilian_snapshots_total", {"outcome": "over_alarm_bound"}) == 2
    monkeypatch.setattr(snapshots, "MAX_TOTAL", 5)
    _ingest(store, snap, [_event(100 + i, "cam-x", alarm_seq=50 + i) for i in range(3)])
    kept = [r[0] for r in store.conn.execute("SELECT alarm_seq FROM snapshots ORDER BY id")]
    assert len(kept) == 5 and kept[-3:] == [50, 51, 52]  # the newest stay
