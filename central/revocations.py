"""Central refuses traffic from revoked node identities, without a restart.

``shilian provision revoke`` records the revocation in the CA directory central holds
(``[ca] dir``: ``issued.tsv``, ``revoked.tsv``). Central rereads those files whenever they
change (checked at most every :data:`RECHECK_S`), and every message whose topic names a node
whose latest certificate is revoked is taken out of the batch before ingest: not stored, not
acted on, counted in ``shilian_central_revoked_messages_total{kind}`` and logged once per node
per :data:`LOG_WINDOW_S`. (A renewal request is taken out before, by the renewal service,
which answers a revoked node with the refusal ``revoked``: a clear answer, nothing issued.)
The broker cuts such a node off too (docs/provisioning.md); this is
central's own line, for messages already in flight or queued for central's session.

A certificate superseded by a renewal is revoked as well, but its node holds a newer one: its
identity is not revoked (the broker alone tells the two certificates apart, by the CRL).
Without ``[ca]`` central does not know of revocations; the broker's cut-off still applies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from central.link import Inbound
from pki.ca import ISSUED, REVOKED, revoked_identities
from resilience.log_limiter import LogLimiter
from wire import Kind
from wire.limits import TOPIC_ROOT

log = logging.getLogger("shilian.central.revocations")

#: How often the CA files are looked at (a stat each): a revocation is applied within this.
RECHECK_S = 1.0
#: A revoked node's refused messages are logged at most once per node in this many seconds.
LOG_WINDOW_S = 60.0

_PREFIX = TOPIC_ROOT + "/"
#: Metric labels: the kinds of the contract (a bounded set whatever a peer sends).
_KINDS = frozenset(k.value for k in Kind)


class Revocations:
    """The revoked identities of the CA in ``ca_dir``, kept current; filters ingest batches."""

    def __init__(
        self,
        ca_dir: Path,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dir = ca_dir
        self.clock = clock
        self.revoked: frozenset[str] = frozenset()
        self._stamp: tuple[int, ...] | None = None
        self._checked = float("-inf")
        self._log = LogLimiter(LOG_WINDOW_S)
        self.refused = Counter(
            "shilian_central_revoked_messages",
            "来自已吊销节点、未处理的消息 / messages from revoked nodes, refused, by kind",
            ["kind"],
            registry=registry,
        )

    def refresh(self, now: float) -> None:
        """Reread the CA's lists if they changed since last time (at most every RECHECK_S)."""
        if now - self._checked < RECHECK_S:
            return
        self._checked = now
        try:
            stats = [(self.dir / f).stat() for f in (ISSUED, REVOKED)]
        except OSError:
            return  # no CA files (yet): nothing known to be revoked, the broker still refuses
        stamp = tuple(x for s in stats for x in (s.st_mtime_ns, s.st_size, s.st_ino))
        if stamp == self._stamp:
            return
        try:
            revoked = revoked_identities(self.dir)
        except (OSError, ValueError) as e:
            log.error("无法读取吊销列表 / cannot read the revocations in %s: %s", self.dir, e)
            return
        added = revoked - self.revoked
        if added:
            log.warning(
                "节点已吊销，其消息将被拒绝 / nodes revoked, their messages refused: %s",
                ", ".join(sorted(added)[:20]),
            )
        self.revoked, self._stamp = revoked, stamp

    def take(self, batch: list[Inbound]) -> list[Inbound]:
        """The batch without the messages of revoked nodes (those are counted)."""
        now = self.clock()
        self.refresh(now)
        if not self.revoked:
            return batch
        kept = []
        for m in batch:
            node = m.topic.removeprefix(_PREFIX).split("/", 1)
            if len(node) == 2 and node[0] in self.revoked and m.topic.startswith(_PREFIX):
                kind = node[1] if node[1] in _KINDS else node[1].split("/", 1)[0]
                self.refused.labels(kind if kind in _KINDS else "other").inc()
                if self._log.allow((node[0], "revoked"), now):
                    log.warning(
                        "拒绝已吊销节点的消息 / message from a revoked node refused: %s %s",
                        node[0],
                        m.topic[:200],
                    )
            else:
                kept.append(m)
        return kept
