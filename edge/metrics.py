"""Prometheus metrics of one agent, on a registry the agent owns (the demo runs many agents in
one process, so nothing goes on prometheus_client's global registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: accept -> PUBACK: milliseconds when connected, hours after an outage.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600, 86400)


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "shilian_edge_"
        self.connected = Gauge(
            p + "connected", "1 while connected to the broker", registry=registry
        )
        self.reconnects = Counter(
            p + "reconnects", "successful connections after the first", registry=registry
        )
        self.connect_failures = Counter(
            p + "connect_failures", "failed connection attempts", registry=registry
        )
        self.accepted = Counter(
            p + "events_accepted", "events stored in the outbox", ["priority"], registry=registry
        )
        self.sent = Counter(
            p + "events_sent", "events acknowledged by the broker", ["priority"], registry=registry
        )
        self.resent = Counter(
            p + "events_resent",
            "events sent again because central had not acknowledged them in time",
            registry=registry,
        )
        self.dropped = Counter(
            p + "events_dropped",
            "events evicted or refused because the outbox was full",
            ["priority"],
            registry=registry,
        )
        self.rejected = Counter(
            p + "publish_rejected",
            "publishes the broker refused (PUBACK reason >= 0x80)",
            ["reason"],
            registry=registry,
        )
        self.outbox_depth = Gauge(
            p + "outbox_depth", "events not yet acknowledged", registry=registry
        )
        self.latency = Histogram(
            p + "publish_latency_seconds",
            "event accept to PUBACK",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.commands = Counter(
            p + "commands", "commands handled", ["cmd", "result"], registry=registry
        )
        self.bad_input = Counter(
            p + "bad_input", "refused input from a peer, by reason", ["reason"], registry=registry
        )
        self.outbox_write_errors = Counter(
            p + "outbox_write_errors",
            "events not stored because the outbox write failed (disk_full, io)",
            ["reason"],
            registry=registry,
        )
