"""Central's Prometheus metrics, on one CollectorRegistry served at ``/metrics``.

Coverage gauges are produced at scrape time from the CoverageIndex, for cities and counties only
(one series per unit, never per village: 1,856 villages in Nanning alone would swamp Prometheus).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from central.coverage import CoverageIndex
from registry import Registry

#: Registry levels exported as coverage series: 2 city (市), 3 county (县).
COVERAGE_LEVELS = (2, 3)

#: Batch sizes span one message (quiet fleet) to the link's receive maximum (a backlog).
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
#: Commit latency from a sub-millisecond batch to a slow disk.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class CoverageCollector(Collector):
    """``shilian_coverage_ratio``, ``shilian_villages_total``, ``shilian_villages_covered`` and
    ``shilian_villages_provisioned`` per city and county, plus node totals."""

    def __init__(self, registry: Registry, coverage: CoverageIndex) -> None:
        self.registry = registry
        self.coverage = coverage

    def _units(self) -> Iterator[str]:
        stack = [self.registry.root()]
        while stack:
            u = stack.pop()
            if u.level in COVERAGE_LEVELS:
                yield u.code
            if u.level < max(COVERAGE_LEVELS):
                stack.extend(reversed(self.registry.children(u.code)))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["code", "name", "level"]
        ratio = GaugeMetricFamily(
            "shilian_coverage_ratio",
            "村级覆盖率 / share of villages with a node online",
            labels=labels,
        )
        total = GaugeMetricFamily(
            "shilian_villages_total", "区划内村级单位数 / villages in the registry", labels=labels
        )
        covered = GaugeMetricFamily(
            "shilian_villages_covered",
            "有节点在线的村 / villages with a node online",
            labels=labels,
        )
        provisioned = GaugeMetricFamily(
            "shilian_villages_provisioned",
            "已部署节点的村 / villages with a known node",
            labels=labels,
        )
        for code in self._units():
            c = self.coverage.summary(code)
            lv = [c.code, c.name, str(c.level)]
            ratio.add_metric(lv, c.ratio)
            total.add_metric(lv, c.villages)
            covered.add_metric(lv, c.covered)
            provisioned.add_metric(lv, c.provisioned)
        online = GaugeMetricFamily("shilian_nodes_online", "在线节点数 / nodes online")
        online.add_metric([], self.coverage.online_nodes())
        known = GaugeMetricFamily("shilian_nodes_known", "已知节点数 / nodes known to central")
        known.add_metric([], self.coverage.known_nodes())
        yield from (ratio, total, covered, provisioned, online, known)


class CentralMetrics:
    """Ingest and link metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.messages = Counter(
            "shilian_messages_ingested",
            "已接收的有效消息 / valid messages ingested, by kind",
            ["kind"],
            registry=r,
        )
        self.invalid = Counter(
            "shilian_invalid_messages",
            "被拒绝的消息 / messages refused, by reason",
            ["reason"],
            registry=r,
        )
        self.ignored = Counter(
            "shilian_ignored_messages",
            "被忽略的消息 / valid messages ignored (stale_state, unexpected), by reason",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "shilian_duplicate_events", "重复事件 / duplicate events dropped", registry=r
        )
        self.acks = Counter(
            "shilian_stored_acks",
            "已发给节点的入库确认 / stored-acknowledgements published to nodes "
            "(at most one per node per 0.2 s)",
            registry=r,
        )
        self.gaps = Counter(
            "shilian_event_gaps", "事件序号缺口 / gaps detected in event seq", registry=r
        )
        self.offline = Counter(
            "shilian_nodes_offline",
            "节点离线次数，按原因 / nodes gone offline, by reason (the API's state_reason: "
            "will, stopped, health_timeout)",
            ["reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "shilian_ingest_batch_size",
            "每次提交的消息数 / messages per committed batch",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batch_latency = Histogram(
            "shilian_ingest_batch_seconds",
            "批处理与提交耗时 / time to ingest and commit a batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.clock_off = Gauge(
            "shilian_nodes_clock_off",
            "时钟偏差超过 30 秒的节点数 / nodes whose clock is off central's by more than 30 s "
            "(their event times are wrong)",
            registry=r,
        )
        self.clock_steps = Counter(
            "shilian_central_clock_steps",
            "中心系统时钟跳变次数 / steps of central's own wall clock over 30 s",
            registry=r,
        )
        self.connected = Gauge(
            "shilian_broker_connected", "是否连接 MQTT 代理 / 1 when connected", registry=r
        )
        self.reconnects = Counter(
            "shilian_broker_reconnects", "重新连接次数 / reconnections to the broker", registry=r
        )
        self.db_reconnects = Counter(
            "shilian_database_reconnects",
            "数据库连接中断后重连次数 / reconnections after the database ended central's "
            "connection (a PostgreSQL restart)",
            registry=r,
        )
        self.county_link_drops = Counter(
            "shilian_county_link_drops",
            "县级代理桥接中断次数 / county broker bridges lost (bridge state 0)",
            registry=r,
        )
        self.counties_link_down = Gauge(
            "shilian_county_links_down",
            "桥接中断的县 / counties whose broker's bridge to the city is down now",
            registry=r,
        )
        self.nodes_held_county = Gauge(
            "shilian_nodes_held_county_link",
            "因县级链路中断而保持的节点 / online nodes held while their county's bridge is down",
            registry=r,
        )

    def add_coverage(self, registry: Registry, coverage: CoverageIndex) -> None:
        self.registry.register(CoverageCollector(registry, coverage))
