"""Central's snapshot intake over a real SQLite store: pictures leave the event rows, invalid ones
are refused and counted, and the per-alarm and total bounds hold."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from central import snapshots, views
from central.db import Db, Target
from central.snapshots import MAX_PER_ALARM, SnapshotIntake
from central.store import EventRow, SqliteStore, Write
from central.store_pg import PostgresStore
from tests.stores import open_store

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


Store = SqliteStore | PostgresStore
Intake = tuple[Store, SnapshotIntake, CollectorRegistry, Db]


@pytest.fixture
def intake(db_target: Target) -> Iterator[Intake]:
    """The ingest store and the intake on its connection (either backend), and a reader."""
    store = open_store(db_target)
    reg = CollectorRegistry()
    reader = views.open_reader(db_target)
    try:
        yield store, SnapshotIntake(store.conn, reg), reg, reader
    finally:
        reader.close()
        store.close()


def _ingest(
    store: SqliteStore | PostgresStore, intake: SnapshotIntake, rows: list[Write]
) -> list[Write]:
    writes, shots = intake.split(rows)
    store.stage(writes)
    intake.stage(shots)
    store.commit()
    return writes


def test_the_picture_moves_to_its_table_and_the_event_keeps_the_rest(
    intake: Intake,
) -> None:
    store, snap, reg, reader = intake
    writes = _ingest(store, snap, [_event(2, "cam-a")])
    row = writes[0]
    assert isinstance(row, EventRow) and row.seq == 2
    meta = json.loads(row.data)
    assert "jpeg_b64" not in meta and meta["bytes"] == len(JPEG) and meta["alarm_seq"] == 1
    assert snapshots.jpeg_of(reader, NODE, BOOT, 1, "cam-a") == JPEG
    meta_rows = snapshots.for_alarm(reader, NODE, BOOT, 1)
    assert [(m["camera"], m["bytes"]) for m in meta_rows] == [("cam-a", len(JPEG))]
    assert reg.get_sample_value("shilian_snapshots_total", {"outcome": "stored"}) == 1


def test_not_a_jpeg_is_refused_counted_and_its_event_says_why(
    intake: Intake,
) -> None:
    store, snap, reg, reader = intake
    bad = _event(2, "cam-a")._replace(data=json.dumps({"camera": "cam-a", "jpeg_b64": "@@"}))
    writes = _ingest(store, snap, [bad, _event(3, "cam-b", jpeg=b"GIF89a" + b"x" * 50)])
    assert all("refused" in json.loads(w.data) for w in writes if isinstance(w, EventRow))
    assert reader.fetchone("SELECT count(*) FROM snapshots") == (0,)
    assert reg.get_sample_value("shilian_snapshots_total", {"outcome": "refused"}) == 2


def test_bounds_per_alarm_and_in_total(
    intake: Intake,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, snap, reg, reader = intake
    cams = [f"cam-{i}" for i in range(MAX_PER_ALARM + 2)]
    _ingest(store, snap, [_event(10 + i, c) for i, c in enumerate(cams)])
    assert reader.fetchone("SELECT count(*) FROM snapshots") == (MAX_PER_ALARM,)
    assert reg.get_sample_value("shilian_snapshots_total", {"outcome": "over_alarm_bound"}) == 2
    monkeypatch.setattr(snapshots, "MAX_TOTAL", 5)
    _ingest(store, snap, [_event(100 + i, "cam-x", alarm_seq=50 + i) for i in range(3)])
    kept = [r[0] for r in reader.fetchall("SELECT alarm_seq FROM snapshots ORDER BY id")]
    assert len(kept) == 5 and kept[-3:] == [50, 51, 52]  # the newest stay
