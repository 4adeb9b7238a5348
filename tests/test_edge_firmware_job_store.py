"""The firmware job on disk (edge.firmware_job_store) and how the updater treats a
job left by an earlier run that cannot be resumed. The resume itself, over a real pty board,
is tests/test_fb_firmware_e2e.py::test_edge_crash_mid_transfer_resumes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from edge.board_source import BoardSource
from edge.commands import FirmwareJob
from edge.firmware_job_store import MAX_JOB_ATTEMPTS, JobStore, PendingJob
from firmware_bridge.alarms import AlarmKind
from firmware_bridge.zones import Zone
from tests.test_edge_board_source import Log, RecordingSink, ScriptedPort, _opener, until

SHA = "ab" * 32


def test_job_round_trip_image_then_state_and_clear(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "state", "board1")
    assert store.load() is None and store.load_image() is None
    job = PendingJob.of(FirmwareJob(url="http://c/fw", sha256=SHA, size=10), job_id="j1")
    store.save(job)
    assert store.load() == job
    flashing = store.save_image(b"0123456789", job)
    assert flashing.state == "flashing"
    assert store.load() == flashing and store.load_image() == b"0123456789"
    assert flashing.job() == FirmwareJob(url="http://c/fw", sha256=SHA, size=10)
    # a torn write of a later save (power cut before the rename) leaves the old file intact
    (store.job_file.with_name(store.job_file.name + ".tmp")).write_bytes(b'{"v": 1, "ur')
    assert store.load() == flashing
    store.clear()
    assert store.load() is None and store.load_image() is None
    assert not store.job_file.exists() and not store.image_file.exists()


def test_corrupt_or_foreign_job_file_is_discarded(tmp_path: Path) -> None:
    store = JobStore(tmp_path, "board1")
    for body in (
        b"\x00garbage",
        b'{"v": 99, "url": "http://c/fw"}',
        b'{"v": 1, "sha256": "x"}',  # neither url nor path
        b'{"v": 1, "url": "http://c/fw", "size": "big"}',
        b'{"v": 1, "url": "http://c/fw", "state": "exploded"}',
        b"[1, 2]",
    ):
        store.job_file.write_bytes(body)
        store.image_file.write_bytes(b"img")
        assert store.load() is None, body
        assert not store.job_file.exists() and not store.image_file.exists(), body


async def test_a_job_that_keeps_killing_the_agent_is_given_up(tmp_path: Path) -> None:
    """A job picked up by MAX_JOB_ATTEMPTS starts already: the next start reports it failed
    (an event, the device state) and forgets it instead of trying again."""
    store = JobStore(tmp_path, "alarm_board")
    pending = PendingJob(
        sha256=SHA, url="http://c/fw", state="queued", attempts=MAX_JOB_ATTEMPTS, job_id="j"
    )
    store.save(pending)
    log = Log()
    src = BoardSource(
        [Zone(1, AlarmKind.PANIC, "按钮1")],
        device="/dev/nonexistent-h9",
        opener=_opener(ScriptedPort(log)),
        firmware_store=store,
    )
    task = asyncio.create_task(src.run(RecordingSink(log)))
    try:
        await log.wait(lambda: any(k == "firmware_update" for _, k, _, _ in log.of("emit")))
        (_, _, device, data) = next(e for e in log.of("emit") if e[1] == "firmware_update")
        assert device == "alarm_board"
        assert data == {"result": "too_many_restarts", "detail": "", "version": None} | {
            "sha256": SHA
        }
        await until(lambda: not store.job_file.exists(), "job file cleared")
        assert src.firmware_status()["update"]["result"] == "too_many_restarts"
        assert src.firmware.busy is False  # a new command may start
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_job_file_is_json_an_operator_can_read(tmp_path: Path) -> None:
    store = JobStore(tmp_path, "b")
    store.save(PendingJob(sha256=SHA, path="/tmp/x.img", version="2.0.0", attempts=1))
    d = json.loads(store.job_file.read_text())
    assert d["v"] == 1 and d["path"] == "/tmp/x.img" and d["attempts"] == 1
