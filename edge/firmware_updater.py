"""The alarm board's firmware update on the box: one job at a time, run beside the alarm path.

A job is queued by the ``firmware-update`` command or the local API (:meth:`start`) and run by
:meth:`FirmwareUpdater.run` in the board source's task group, on the same open port as the
alarm path (firmware_bridge.flasher). Progress and outcome are in :meth:`detail`, which the
board source merges into the board's retained device state (``firmware_version``, ``update``);
the end is an event of kind ``firmware_update``.

What survives what: with a ``store`` (:class:`edge.firmware_job_store.JobStore`, next to the
outbox) an accepted job is on disk before :meth:`start` returns and its verified image once
downloaded, until the job ends: an agent that restarts mid-update resumes the job once the board
link is up (:meth:`link_up`). A job picked up by more than ``MAX_JOB_ATTEMPTS`` starts is given
up. The outcome event is emitted before the job is forgotten, with one idempotency key per job.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge.commands import FirmwareJob, FirmwareRefused
from edge.firmware_download import fetch_image
from edge.firmware_job_store import MAX_JOB_ATTEMPTS, JobStore, PendingJob
from edge.sources import EventSink, emit_waiting_for_room

log = logging.getLogger("shilian.edge.firmware_updater")

#: Device-state publishes of update progress at most this often (plus every phase change): an
#: operator sees the transfer move without a retained publish per firmware block.
FIRMWARE_PROGRESS_S = 2.0

#: ``boot_state`` of the board's BoardInfo, as named in the device state.
_BOOT_STATES = ("normal", "trial", "rolled_back")


class FirmwareUpdater:
    """Firmware jobs of the board on serial port ``device`` (device id ``device_id``).

    ``key`` is the public key file images must be signed with (no key: every job is refused);
    ``on_change`` is called whenever :meth:`detail` changed (the owner re-publishes the device
    state). Implements :class:`edge.commands.FirmwareTarget` through its owner.
    """

    def __init__(
        self,
        *,
        device: str,
        device_id: str,
        clock: Callable[[], float] = time.monotonic,
        key: Path | None = None,
        store: JobStore | None = None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.device = device
        self.device_id = device_id
        self.clock = clock
        self.key = key
        self.store = store
        self.on_change = on_change
        #: True from an accepted job until its outcome is reported (a second job is refused).
        self.busy = False
        self._jobs: asyncio.Queue[PendingJob] | None = None  # set while run() is running
        self._update: dict[str, Any] | None = None
        self._version: str | None = None
        self._link: asyncio.Event | None = None

    def link_up(self) -> None:
        """The board link is up: a job resumed at start may run now."""
        if self._link is not None:
            self._link.set()

    def start(self, job: FirmwareJob) -> None:
        """Queue an update; FirmwareRefused if it cannot run. The job is on disk before this
        returns (the command's reply says "started")."""
        from firmware_bridge.transport import BoardPort

        if self.key is None:
            raise FirmwareRefused(
                "no_key", "未配置固件公钥，拒绝升级", "no firmware public key configured"
            )
        if self.busy or self._jobs is None:
            raise FirmwareRefused("busy", "已有升级在进行", "an update is already running")
        port = BoardPort.find(self.device)
        if port is None or port.board is None:
            raise FirmwareRefused("no_board", "报警板未连接", "the alarm board is not connected")
        pending = PendingJob.of(job, job_id=uuid.uuid4().hex)
        if self.store is not None:
            try:
                self.store.save(pending)
            except OSError as e:
                log.warning("board %s: cannot store the firmware job (%s)", self.device_id, e)
                raise FirmwareRefused(
                    "storage",
                    f"无法保存升级任务（{e.strerror or e}），请检查磁盘",
                    f"cannot store the update job ({e.strerror or e}); check the disk",
                ) from e
        self.busy = True
        self._update = {"state": "queued", "bytes": 0, "total": job.size, "result": None}
        self._jobs.put_nowait(pending)

    def detail(self) -> dict[str, Any]:
        """Running version, boot state and the current/last update, for the device state."""
        from firmware_bridge.transport import BoardPort

        port = BoardPort.find(self.device) if self._jobs is not None else None
        board = port.board if port is not None else None
        out: dict[str, Any] = {}
        if board is not None:
            self._version = board.fw_version
            out["firmware_state"] = _BOOT_STATES[min(board.boot_state, 2)]
            if board.rollback_reason:
                out["rollback_reason"] = board.rollback_reason
        if self._version is not None:
            out["firmware_version"] = self._version
        if self._update is not None:
            out["update"] = dict(self._update)
        return out

    async def run(self, sink: EventSink) -> None:
        """Resume a stored job, then run queued jobs one by one until cancelled."""
        self._jobs = asyncio.Queue(1)
        self._link = asyncio.Event()
        store = self.store
        pending = await asyncio.to_thread(store.load) if store is not None else None
        if store is not None and pending is not None:
            # Accepted by an earlier run and not finished: count this start (a job that keeps
            # killing the agent is given up), then run it as if just queued.
            pending = replace(pending, attempts=pending.attempts + 1)
            self.busy = True
            self._update = {
                "state": "queued",
                "bytes": 0,
                "total": pending.size,
                "result": None,
                "resumed": True,
            }
            if pending.attempts > MAX_JOB_ATTEMPTS:
                await self._end(sink, pending, "too_many_restarts", "", pending.version)
            else:
                try:
                    await asyncio.to_thread(store.save, pending)
                except OSError as e:  # run it anyway; only this start goes uncounted
                    log.warning("board %s: cannot update the firmware job (%s)", self.device_id, e)
                log.info(
                    "board %s: resuming firmware update %s (start %d)",
                    self.device_id,
                    pending.sha256,
                    pending.attempts,
                )
                self._jobs.put_nowait(pending)
        while True:
            pending = await self._jobs.get()
            if pending.attempts > 0:  # resumed: the port may not be open yet
                await self._link.wait()
            try:
                result, detail, version = await self._run_job(pending)
            except Exception as e:  # a bug or an unexpected I/O error: report, keep running
                log.exception("board %s: firmware update failed", self.device_id)
                result, detail, version = "error", str(e)[:200], None
            await self._end(sink, pending, result, detail, version)

    async def _end(
        self, sink: EventSink, pending: PendingJob, result: str, detail: str, version: str | None
    ) -> None:
        """Report the outcome, then forget the job: a crash in between repeats the job (the
        board answers "already"), and the event's key keeps it single at central."""
        assert self._update is not None
        self._update.update(state="done", result=result, detail=detail)
        self.busy = False
        self.on_change()
        log.info("board %s: firmware update %s %s", self.device_id, result, detail)
        data = {"result": result, "detail": detail, "version": version, "sha256": pending.sha256}
        key = f"fw:{self.device_id}:{pending.job_id}" if pending.job_id else None
        await emit_waiting_for_room(sink, "device", "firmware_update", self.device_id, data, key)
        if self.store is not None:
            await asyncio.to_thread(self.store.clear)

    async def _image(self, pending: PendingJob) -> bytes:
        """The image bytes: the stored copy of a resumed job, else downloaded (or read)."""
        store = self.store
        if store is not None and pending.state == "flashing":
            data = await asyncio.to_thread(store.load_image)
            if data is not None:
                return data
            log.warning("board %s: stored firmware image missing; downloading", self.device_id)
        return await asyncio.to_thread(fetch_image, pending.job())

    async def _run_job(self, pending: PendingJob) -> tuple[str, str, str | None]:
        """Download or load, verify, store and flash; (result, detail, version)."""
        from firmware_bridge import image as fw_image
        from firmware_bridge.flasher import flash
        from firmware_bridge.transport import BoardPort
        from firmware_bridge.update import Progress

        assert self._update is not None
        if self.key is None:  # resumed after the key was removed from the config
            return "no_key", "no firmware public key configured", None
        self._update["state"] = "downloading"
        self.on_change()
        try:
            data = await self._image(pending)
            key = fw_image.load_key(self.key, fw_image.PUBLIC_KEY_SIZE)
            img = fw_image.verify(data, key, image_id=pending.sha256)
        except fw_image.ImageError as e:
            return e.fault.value, str(e), None
        except (OSError, ValueError) as e:
            return "download_failed", str(e)[:200], None
        if self.store is not None and pending.state != "flashing":
            # Verified: keep it, so a restart from here on does not download again.
            try:
                await asyncio.to_thread(
                    self.store.save_image, data, replace(pending, version=img.version)
                )
            except OSError as e:  # flash anyway: a restart would download again
                log.warning("board %s: cannot store the firmware image (%s)", self.device_id, e)
        self._update.update(version=img.version, sha256=img.image_id, total=len(img.signed))
        port = BoardPort.find(self.device)
        if port is None:
            return "no_board", "", img.version
        last = [0.0]

        def progress(p: Progress) -> None:
            assert self._update is not None
            changed = self._update.get("state") != p.phase.value
            self._update.update(
                state=p.phase.value, bytes=p.sent, total=p.total, resumed_from=p.resumed_from
            )
            if changed or self.clock() - last[0] >= FIRMWARE_PROGRESS_S:
                last[0] = self.clock()
                self.on_change()

        final = await flash(port, img, clock=self.clock, on_progress=progress)
        assert final.result is not None
        return final.result.value, final.detail, img.version
