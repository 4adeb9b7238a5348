"""Prometheus view of the alarm links: the board's serial link and the SIA DC-09 receiver.

A collector read at scrape time from the counters the sources keep anyway (nothing is
incremented twice on the alarm path). Registered by the edge agent on its own registry when a
board or an SIA receiver is configured; names are ``shilian_edge_board_*`` and
``shilian_edge_sia_*`` (docs/edge.md lists them, docs/faults.md says which fault moves which).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from firmware_bridge.framing import FrameFault

#: Framing faults: each one is a frame dropped and the decoder resynchronised at the next 0x00.
FRAME_FAULTS = tuple(f.value for f in FrameFault)
#: Counter keys of ``BoardSource.link_counters`` that are not protocol faults.
_NOT_PROTOCOL = frozenset({"duplicates", "naks_sent", *FRAME_FAULTS})
#: SIA responses, always exported (a zero is information: no NAK was needed).
SIA_RESPONSES = ("ack", "nak", "duh")


class LinkMetrics(Collector):
    """Collects from every source that is a ``BoardSource`` or ``SiaReceiver`` (duck-typed by
    ``name``), plus the outbox's count of idempotent duplicates."""

    def __init__(self, sources: Sequence[Any], outbox: Callable[[], Any]) -> None:
        self._boards = [s for s in sources if getattr(s, "name", "") == "alarm_board"]
        self._sia = [s for s in sources if getattr(s, "name", "") == "sia_receiver"]
        self._outbox = outbox

    def describe(self) -> Iterable[Any]:
        return []  # collected at scrape time only (names depend on the configured sources)

    def collect(self) -> Iterator[Any]:
        if self._boards:
            yield from self._board_metrics()
        if self._sia:
            yield from self._sia_metrics()
        ob = self._outbox()
        dup = CounterMetricFamily(
            "shilian_edge_events_deduplicated",
            "keyed events offered again (a peer retransmitted after an edge crash) and not "
            "stored twice",
        )
        dup.add_metric([], ob.duplicates_total if ob is not None else 0)
        yield dup

    def _board_metrics(self) -> Iterator[Any]:
        p = "shilian_edge_board_"
        up = _gauge(p + "link_up", "1 while the board link is up")
        downs = _counter(
            p + "link_downs",
            "board link went down, by reason (timeout, board_rebooted, port_error...)",
            "reason",
        )
        ups = _counter(
            p + "handshakes",
            "board link came up (handshake): the first one and every resync after a down",
        )
        frames = _counter(
            p + "frame_errors",
            "frames dropped by the decoder, by fault (crc, cobs, short, oversize = frame too "
            "large); each is a resync at the next 0x00 delimiter",
            "fault",
        )
        proto = _counter(
            p + "protocol_errors",
            "valid frames refused, by fault (malformed, version, bad_input, out_of_window...)",
            "fault",
        )
        naks = _counter(p + "naks_sent", "NAKs sent: a gap in the board's seqs, resend asked")
        dups = _counter(
            p + "duplicates",
            "board retransmissions of events already delivered, suppressed (ACK re-sent)",
        )
        emitted = _counter(p + "alarms_emitted", "alarms and restores stored in the outbox")
        acked = _counter(p + "events_acked", "board events acknowledged to the board")
        ignored = _counter(
            p + "events_ignored",
            "board events that made no alarm, by reason (unconfigured_input, bad_contact_id...)",
            "reason",
        )
        queued = _gauge(p + "queued", "events the board holds unacknowledged (its heartbeat)")
        lost = _gauge(
            p + "queue_overflows",
            "events the board lost since its boot because its queue was full (its heartbeat)",
        )
        for b in self._boards:
            dev = [b.device_id]
            up.add_metric(dev, 1 if b.link_up else 0)
            for reason, n in sorted(b.link_downs.items()):
                downs.add_metric([*dev, reason], n)
            ups.add_metric(dev, b.stats["link_up"])
            c = b.link_counters()
            for fault in FRAME_FAULTS:
                frames.add_metric([*dev, fault], c.get(fault, 0))
            for fault, n in sorted(c.items()):
                if fault not in _NOT_PROTOCOL:
                    proto.add_metric([*dev, fault], n)
            naks.add_metric(dev, c.get("naks_sent", 0))
            dups.add_metric(dev, c.get("duplicates", 0))
            emitted.add_metric(dev, b.stats["emitted"])
            acked.add_metric(dev, b.stats["acked"])
            for reason, n in sorted(b.zones.ignored.items()):
                ignored.add_metric([*dev, reason], n)
            hb = b.heartbeat
            if "queued" in hb:
                queued.add_metric(dev, hb["queued"])
                lost.add_metric(dev, hb["dropped"])
        yield from (up, downs, ups, frames, proto, naks, dups, emitted, acked, ignored)
        yield from (queued, lost)

    def _sia_metrics(self) -> Iterator[Any]:
        p = "shilian_edge_sia_"
        frames = _counter(
            p + "frames",
            "SIA DC-09 frames by outcome: ack, duplicate (retransmission, ACKed again), or the "
            "refusal (crc, length, format, decrypt, timestamp, unsupported, not_stored)",
            "outcome",
        )
        responses = _counter(p + "responses", "responses sent to panels (ack, nak, duh)", "type")
        conns = _counter(
            p + "connections",
            "panel connections by outcome: accepted, refused_address_cap, refused_total_cap, "
            "evicted (a silent connection that never had a frame ACKed, for a newcomer), "
            "guest_timeout, idle_timeout",
            "outcome",
        )
        open_now = _gauge(p + "open_connections", "panel connections open now")
        for r in self._sia:
            dev = [r.config.device]
            for outcome, n in sorted(r.counts.items()):
                frames.add_metric([*dev, outcome], n)
            for kind in SIA_RESPONSES:
                responses.add_metric([*dev, kind], r.responses.get(kind, 0))
            for outcome, n in sorted(r.connections.items()):
                conns.add_metric([*dev, outcome], n)
            open_now.add_metric(dev, len(r.slots))
        yield from (frames, responses, conns, open_now)


def _counter(name: str, doc: str, *labels: str) -> CounterMetricFamily:
    """A counter labelled by the source's ``device``, then ``labels``."""
    return CounterMetricFamily(name, doc, labels=["device", *labels])


def _gauge(name: str, doc: str) -> GaugeMetricFamily:
    """A gauge labelled by the source's ``device``."""
    return GaugeMetricFamily(name, doc, labels=["device"])
