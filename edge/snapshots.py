"""Snapshots on alarm: one JPEG from each camera mapped to the alarm's zone, sent after the alarm.

The agent's sink hands every newly stored alarm-priority event to :meth:`SnapshotTaker.alarm`
*after* the alarm is committed to the outbox; that call only queues (never waits), so taking
pictures can never delay an alarm. :meth:`SnapshotTaker.run`, a task of the agent's supervisor,
takes the queued alarms, asks each mapped camera (``zones`` on a ``[[cameras]]`` entry) for its
next key frame from the session the health check keeps open
(:meth:`edge.camera_source.CameraSource.snapshot`), and once all have answered (or timed out)
stores the pictures together, each a ``snapshot`` event of priority ``info`` (wire.snapshots):
sent after every alarm, evicted before one.

Bounds: at most :data:`MAX_PENDING_ALARMS` alarms wait (more are counted and get no pictures),
:data:`MAX_ALARMS_AT_ONCE` are served at a time, each from at most ``max_cameras`` cameras; a
camera gives its key frame within ``timeout_s`` or no snapshot. Every outcome is counted in
``shilian_edge_snapshots_total{outcome}``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from edge.jpeg import Jpeg
from edge.outbox import OutboxError
from edge.picture import PictureError
from edge.sources import EventSink
from wire import Event, Priority
from wire.snapshots import MAX_SNAPSHOT_JPEG_BYTES, SNAPSHOT_KIND, SnapshotData

log = logging.getLogger("shilian.edge.snapshots")

#: Alarms waiting for their pictures. A burst beyond this (a dozen zones at once) is rare and the
#: later pictures would show the same scene; the alarms themselves are unaffected.
MAX_PENDING_ALARMS = 16
#: Alarms whose pictures are taken at the same time (callers for the same camera share one key
#: frame, so this bounds the JPEG encodes queued on the decoding thread, not camera load).
MAX_ALARMS_AT_ONCE = 4

OUTCOMES = ("sent", "timeout", "undecodable", "outbox_refused", "queue_full")


class Grabber(Protocol):
    """What takes a picture (edge.camera_source.CameraSource)."""

    async def snapshot(self, camera_id: str, timeout_s: float, max_bytes: int) -> Jpeg:
        """The camera's next key frame as a JPEG of at most ``max_bytes``; ``TimeoutError``
        or :class:`edge.picture.PictureError` when there is none."""
        ...


def zone_map(cameras: Sequence[Any]) -> dict[int, list[str]]:
    """Zone → camera ids watching it (config order), from ``[[cameras]]`` entries."""
    out: dict[int, list[str]] = {}
    for cam in cameras:
        for z in cam.zones:
            ids = out.setdefault(z, [])
            if cam.id not in ids:
                ids.append(cam.id)
    return out


def alarm_zone(event: Event) -> int | None:
    """The zone of an alarm event (``data.zone``), if it is one."""
    if event.priority is not Priority.ALARM:
        return None
    zone = event.data.get("zone")
    return zone if isinstance(zone, int) and not isinstance(zone, bool) else None


class SnapshotTaker:
    name = "snapshots"

    def __init__(
        self,
        zones: Mapping[int, Sequence[str]],
        grabber: Grabber,
        *,
        timeout_s: float,
        max_cameras: int,
        wall: Callable[[], float],
        registry: CollectorRegistry,
    ) -> None:
        self.zones = {z: list(ids)[:max_cameras] for z, ids in zones.items()}
        self.grabber = grabber
        self.timeout_s = timeout_s
        self.wall = wall
        self._queue: asyncio.Queue[tuple[Event, list[str]]] = asyncio.Queue(MAX_PENDING_ALARMS)
        #: Off: alarms take no pictures (bench/snapshot_alarm.py compares both in one agent).
        self.enabled = True
        self.counts = Counter(
            "shilian_edge_snapshots",
            "报警抓拍结果 / snapshots on alarm by outcome",
            ["outcome"],
            registry=registry,
        )
        for o in OUTCOMES:
            self.counts.labels(o)

    @classmethod
    def from_config(
        cls, cfg: Any, grabber: Grabber, wall: Callable[[], float], registry: CollectorRegistry
    ) -> SnapshotTaker:
        """From ``edge.config.EdgeConfig`` (cameras' ``zones``, ``[snapshots]``)."""
        return cls(
            zone_map(cfg.cameras),
            grabber,
            timeout_s=cfg.snapshots.timeout_s,
            max_cameras=cfg.snapshots.max_cameras,
            wall=wall,
            registry=registry,
        )

    def alarm(self, event: Event) -> None:
        """An alarm was stored: queue its pictures (returns at once; never raises)."""
        zone = alarm_zone(event)
        cams = self.zones.get(zone) if zone is not None else None
        if not cams or not self.enabled:
            return
        try:
            self._queue.put_nowait((event, cams))
        except asyncio.QueueFull:
            self.counts.labels("queue_full").inc(len(cams))
            log.warning("snapshots: %d alarms waiting; no pictures for alarm %d", *(
                MAX_PENDING_ALARMS, event.seq))  # fmt: skip

    async def run(self, sink: EventSink) -> None:
        free = asyncio.Semaphore(MAX_ALARMS_AT_ONCE)
        async with asyncio.TaskGroup() as tg:
            while True:
                event, cams = await self._queue.get()
                await free.acquire()
                task = tg.create_task(self._take(event, cams, sink), name="snapshot")
                task.add_done_callback(lambda _t: free.release())

    async def _take(self, alarm: Event, cams: list[str], sink: EventSink) -> None:
        """Take every camera's picture, then store them together: one outbox commit (and
        usually one publish burst and one commit at central) per alarm instead of one per
        camera, so fewer moments where a picture's work meets the next alarm's."""
        zone = alarm_zone(alarm)
        assert zone is not None
        shots = await asyncio.gather(*(self._picture(alarm, zone, cam) for cam in cams))
        await asyncio.gather(*(self._store(s, sink) for s in shots if s is not None))

    async def _picture(self, alarm: Event, zone: int, camera: str) -> SnapshotData | None:
        try:
            jpeg = await self.grabber.snapshot(camera, self.timeout_s, MAX_SNAPSHOT_JPEG_BYTES)
        except TimeoutError:
            self.counts.labels("timeout").inc()
            log.info("snapshot: camera %s gave no key frame within %.1f s", camera, self.timeout_s)
            return None
        except PictureError as e:
            self.counts.labels("undecodable").inc()
            log.info("snapshot: camera %s: %s", camera, e)
            return None
        return SnapshotData(
            alarm_boot_id=alarm.boot_id,
            alarm_seq=alarm.seq,
            camera=camera,
            zone=zone,
            taken_ts=self.wall(),
            width=jpeg.width,
            height=jpeg.height,
            jpeg_b64=base64.b64encode(jpeg.data).decode("ascii"),
        )

    async def _store(self, data: SnapshotData, sink: EventSink) -> None:
        camera = data.camera
        try:
            await sink.emit(Priority.INFO, SNAPSHOT_KIND, camera, data.model_dump(mode="json"))
        except OutboxError as e:  # stopping, disk full, outbox full of alarms: the alarm stands
            self.counts.labels("outbox_refused").inc()
            log.warning("snapshot: camera %s: not stored (%s)", camera, e)
            return
        self.counts.labels("sent").inc()
