"""Prometheus series of the stricter figure, produced at scrape time from the
:class:`~central.devices.DeviceIndex` for the same units as coverage (cities and counties: one
series per unit, never per village or device)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from central.devices import KINDS, NETWORKS, DeviceIndex
from central.metrics import COVERAGE_LEVELS
from registry import Registry
from wire.devices import State

#: Every device state is exported, zeros included, so a dashboard's sum never misses a series.
STATES: tuple[State, ...] = ("up", "degraded", "down", "unknown")


class DeviceCollector(Collector):
    """``shilian_villages_fully_connected``, ``shilian_fully_connected_ratio``,
    ``shilian_villages_network_connected{network}`` and ``shilian_devices{kind,state}``."""

    def __init__(self, registry: Registry, devices: DeviceIndex) -> None:
        self.registry = registry
        self.devices = devices

    def _units(self) -> Iterator[tuple[str, str, int]]:
        stack = [self.registry.root()]
        while stack:
            u = stack.pop()
            if u.level in COVERAGE_LEVELS:
                yield u.code, u.name, u.level
            if u.level < max(COVERAGE_LEVELS):
                stack.extend(reversed(self.registry.children(u.code)))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["code", "name", "level"]
        full = GaugeMetricFamily(
            "shilian_villages_fully_connected",
            "村级视联网完全接通的村 / villages with a node online, a camera ok and a conference"
            " terminal ok",
            labels=labels,
        )
        ratio = GaugeMetricFamily(
            "shilian_fully_connected_ratio",
            "村级视联网完全接通率 / share of villages fully connected",
            labels=labels,
        )
        networks = GaugeMetricFamily(
            "shilian_villages_network_connected",
            "三网融合：各网已接通的村 / villages with each of the three networks connected",
            labels=[*labels, "network"],
        )
        devices = GaugeMetricFamily(
            "shilian_devices",
            "摄像机、会议终端、信息系统链路（节点离线时为 unknown）/ devices by kind and state"
            " (unknown while their node is offline)",
            labels=[*labels, "kind", "state"],
        )
        for code, name, level in self._units():
            s = self.devices.summary(code)
            lv = [code, name, str(level)]
            full.add_metric(lv, s.fully_connected)
            ratio.add_metric(lv, s.ratio)
            for n in NETWORKS:
                networks.add_metric([*lv, n], s.networks[n])
            for kind in KINDS:
                for state in STATES:
                    devices.add_metric([*lv, kind, state], s.states[kind].get(state, 0))
        yield from (full, ratio, networks, devices)
