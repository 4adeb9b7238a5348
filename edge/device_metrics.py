"""Prometheus view of device health (cameras, conference terminals, the information system).

Collected at scrape time from the sources' :class:`edge.device_health.DeviceHealth` records
(nothing counted twice); registered by the agent when such devices are configured.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class DeviceMetrics(Collector):
    """From every source with ``health_reports()`` (and, for cameras, ``stats``)."""

    def __init__(self, sources: Sequence[Any]) -> None:
        self._sources = [s for s in sources if hasattr(s, "health_reports")]

    def describe(self) -> Iterable[Any]:
        return []  # collected at scrape time only

    def collect(self) -> Iterator[Any]:
        health = GaugeMetricFamily(
            "shilian_edge_device_health",
            "1 for each device's current health (ok, unreachable, stalled, black, ...)",
            labels=["device", "kind", "health"],
        )
        changes = CounterMetricFamily(
            "shilian_edge_device_health_changes",
            "health changes per device (each one is a device_health event)",
            labels=["device", "kind"],
        )
        for src in self._sources:
            for r in src.health_reports():
                if r.health is not None:
                    health.add_metric([r.device_id, r.kind, r.health], 1)
                changes.add_metric([r.device_id, r.kind], r.changes)
        yield health
        yield changes
        cams = [s for s in self._sources if getattr(s, "name", "") == "cameras"]
        if cams:
            sessions = CounterMetricFamily(
                "shilian_edge_camera_rtsp_sessions",
                "RTSP connections opened to cameras (a steady rise: sessions keep dropping)",
            )
            decodes = CounterMetricFamily(
                "shilian_edge_camera_pictures_decoded",
                "sampled key frames decoded for the black/frozen check",
            )
            sessions.add_metric([], sum(s.stats["sessions"] for s in cams))
            decodes.add_metric([], sum(s.stats["decodes"] for s in cams))
            yield sessions
            yield decodes
