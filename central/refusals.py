"""The log line of a refused message, rate-limited per node (or topic) and reason: a
misbehaving peer fills no disk. Shared by central's service and its shared-ingest processes."""

from __future__ import annotations

import logging

from central.ingest import Outcome
from resilience.log_limiter import LogLimiter

log = logging.getLogger("shilian.central")


def log_refused(limiter: LogLimiter, topic: str, out: Outcome, now: float) -> None:
    """Log ``out`` (its fault set) for the message on ``topic``, unless logged lately."""
    assert out.fault is not None
    key = (out.node_id or topic[:200], out.fault.value)
    if limiter.allow(key, now):
        log.warning(
            "拒绝消息 / refused message: node=%s topic=%s reason=%s: %s",
            out.node_id,
            topic[:200],
            out.fault.value,
            out.detail[:300],
        )
