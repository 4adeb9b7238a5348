"""The firmware update job on disk, so an update survives an edge restart.

One job per board, next to the agent's outbox: ``firmware-<device>.json`` (the job: image id,
url or local path, size, version, state, attempts) and ``firmware-<device>.img`` (the signed
image once downloaded and verified, so a restart does not download again). Both are written
tmp + fsync + rename + directory fsync: after a power cut either the old or the new file is
there, never a torn one. The board keeps its own resume point (bytes held); the next agent
re-sends FW_BEGIN and continues from there (docs/edge.md, firmware section).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edge.commands import MAX_FIRMWARE_BYTES, FirmwareJob
from edge.durable_file import fsync_dir, write_atomic

log = logging.getLogger("shilian.edge.firmware_job_store")

#: Format of the job file; a file of another version is discarded (the operator re-sends).
JOB_FORMAT = 1
#: Agent starts that may pick up the same job: a job that keeps crashing the agent (a bug, a
#: corrupt image that passes verification) must not make every restart crash again.
MAX_JOB_ATTEMPTS = 3
#: Bound on the job file read at start (it is a few hundred bytes).
MAX_JOB_FILE_BYTES = 16 * 1024


@dataclass(frozen=True)
class PendingJob:
    """A firmware job accepted and not finished; ``state``: ``queued`` (not downloaded yet)
    or ``flashing`` (the verified image is in the image file)."""

    sha256: str | None
    url: str | None = None
    path: str | None = None
    size: int | None = None
    version: str | None = None
    state: str = "queued"
    attempts: int = 0  # agent starts that picked the job up again
    job_id: str | None = None  # names the job's outcome event (its idempotency key)

    @classmethod
    def of(cls, job: FirmwareJob, *, job_id: str | None = None) -> PendingJob:
        return cls(sha256=job.sha256, url=job.url, path=job.path, size=job.size, job_id=job_id)

    def job(self) -> FirmwareJob:
        return FirmwareJob(url=self.url, path=self.path, sha256=self.sha256, size=self.size)


class JobStore:
    """Files of one board's pending job in ``directory`` (created if missing)."""

    def __init__(self, directory: Path, device_id: str) -> None:
        self.directory = directory
        self.job_file = directory / f"firmware-{device_id}.json"
        self.image_file = directory / f"firmware-{device_id}.img"

    def save(self, job: PendingJob) -> None:
        """Durably record ``job`` (OSError if the disk refuses: the caller refuses the job)."""
        body = json.dumps({"v": JOB_FORMAT, **asdict(job)}, sort_keys=True).encode()
        self._write(self.job_file, body)

    def save_image(self, data: bytes, job: PendingJob) -> PendingJob:
        """Store the verified image, then mark the job ``flashing`` (in that order: a job in
        state flashing always has its image). Returns the updated job."""
        self._write(self.image_file, data)
        out = replace(job, state="flashing")
        self.save(out)
        return out

    def load(self) -> PendingJob | None:
        """The pending job, or None (none, or unreadable: logged and discarded)."""
        try:
            with open(self.job_file, "rb") as f:
                raw = f.read(MAX_JOB_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("firmware job %s unreadable (%s); discarded", self.job_file, e)
            self.clear()
            return None
        try:
            if len(raw) > MAX_JOB_FILE_BYTES:
                raise ValueError("too large")
            return _parse(json.loads(raw))
        except (ValueError, TypeError, KeyError) as e:
            log.warning("firmware job %s corrupt (%s); discarded", self.job_file, e)
            self.clear()
            return None

    def load_image(self) -> bytes | None:
        """The stored image (still to be verified by the caller), or None."""
        try:
            with open(self.image_file, "rb") as f:
                data = f.read(MAX_FIRMWARE_BYTES + 1)
        except OSError:
            return None
        return data if len(data) <= MAX_FIRMWARE_BYTES else None

    def clear(self) -> None:
        """Forget the job (finished or given up): job file first, so a crash in between
        leaves at most an orphan image, overwritten by the next job."""
        try:
            for p in (self.job_file, self.image_file):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            fsync_dir(self.directory)
        except OSError as e:  # read-only: the next start resumes it, the board answers "already"
            log.warning("cannot clear firmware job %s (%s)", self.job_file, e)

    def _write(self, target: Path, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data, 0o600)


def _parse(d: Any) -> PendingJob:
    if not isinstance(d, dict) or d.get("v") != JOB_FORMAT:
        raise ValueError("unknown job format")

    def opt(name: str, kind: type) -> Any:
        v = d.get(name)
        if v is not None and not isinstance(v, kind):
            raise TypeError(f"{name}: {type(v).__name__}")
        return v

    job = PendingJob(
        sha256=opt("sha256", str),
        url=opt("url", str),
        path=opt("path", str),
        size=opt("size", int),
        version=opt("version", str),
        state=opt("state", str) or "queued",
        attempts=opt("attempts", int) or 0,
        job_id=opt("job_id", str),
    )
    if job.url is None and job.path is None:
        raise ValueError("neither url nor path")
    if job.state not in ("queued", "flashing"):
        raise ValueError(f"state {job.state!r}")
    return job
