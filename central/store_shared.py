"""PostgreSQL shared by several ingest processes (docs/scale.md, "Several ingest processes").

With MQTT 5 shared subscriptions a node's consecutive messages reach different processes, so no
process's memory holds a node's whole story. What makes each batch right whichever process
applies it:

- **Node state** (births, deaths, health, devices): the batch's transaction first takes a
  transaction-scoped advisory lock per node it has such messages for, then re-reads those nodes'
  rows; the ingest core then decides on the database's committed state, exactly as the single
  process does on its own, and its upserts are written before the locks are released at commit.
- **Events**: no node lock (they are the bulk). The events table's UNIQUE(node_id, boot_id, seq)
  with ``ON CONFLICT DO NOTHING`` stores each event once; the node's ``last_seen`` only moves
  forward (``GREATEST``); the open gaps of each (node, boot) the batch touched are recomputed
  from the events table, under a lock per (node, boot), after the batch's events are inserted:
  the last transaction to recompute sees every event committed before it.
- **Timeouts and wills**: a conditional UPDATE (:meth:`SharedStore.take_offline`) applies only
  while the node is still in the life that was judged.

Lock order, so that two processes never wait on each other in a cycle: node locks, then gap
locks, each set in ascending key order, each in one statement.

Durability is :mod:`central.store_pg`'s: one transaction per batch, acknowledged after commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from psycopg.pq import TransactionStatus

from central.shared_liveness import OnlineNode
from central.store import GapsRow, NodeRow, SeqState, Write
from central.store_pg import PostgresStore

#: Advisory lock key spaces (the first int of PostgreSQL's two-int form; the second is a hash
#: or a number). Chosen far from 0 so that another application's locks on the same database
#: do not collide with ours.
LOCK_NODE = 0x5E1A01
LOCK_GAPS = 0x5E1A02
LOCK_MEMBER = 0x5E1A03
LOCK_LEADER = 0x5E1A04

_LOCK_NODES = """
SELECT pg_advisory_xact_lock(%s, k) FROM
  (SELECT DISTINCT hashtext(x) AS k FROM unnest(%s::text[]) AS x ORDER BY k) AS keys
"""

_SELECT_NODES = """
SELECT node_id, village, county, state, state_since, state_reason, boot_id, birth_seq,
  health_interval_s, sw_version, first_seen, last_seen FROM nodes WHERE node_id = ANY(%s)
"""

_SEEN = "UPDATE nodes SET last_seen = GREATEST(last_seen, %s) WHERE node_id = %s"

#: The open gaps of one (node, boot) above the highest seq stored below ``lo`` (the lowest seq
#: of the batch): what lies below it the batch cannot have changed. A gap keeps the earliest
#: ``detected`` of the old gaps it overlaps.
_GAPS = """
WITH pred AS (
  SELECT COALESCE(MAX(seq), 0) AS p FROM events WHERE node_id=%(n)s AND boot_id=%(b)s
    AND seq < %(lo)s),
old AS (
  DELETE FROM gaps WHERE node_id=%(n)s AND boot_id=%(b)s AND first_seq > (SELECT p FROM pred)
  RETURNING first_seq, last_seq, detected),
s AS (
  SELECT seq, LAG(seq, 1, (SELECT p FROM pred)) OVER (ORDER BY seq) AS prev FROM events
  WHERE node_id=%(n)s AND boot_id=%(b)s AND seq > (SELECT p FROM pred)),
g AS (SELECT prev + 1 AS a, seq - 1 AS z FROM s WHERE seq > prev + 1)
INSERT INTO gaps(node_id, boot_id, first_seq, last_seq, detected)
SELECT %(n)s, %(b)s, a, z,
  COALESCE((SELECT MIN(detected) FROM old WHERE old.first_seq <= g.z AND old.last_seq >= g.a),
           %(now)s)
FROM g
"""

_OFFLINE = """
UPDATE nodes SET state='offline', state_reason=%s, state_since=%s
WHERE node_id=%s AND state='online' AND boot_id IS NOT DISTINCT FROM %s AND birth_seq=%s
"""

#: The online nodes and when each was last heard: its birth, or its latest health report.
_ONLINE = """
SELECT n.node_id, n.boot_id, n.birth_seq, n.health_interval_s,
  GREATEST(n.state_since, COALESCE(h.recv_ts, 0)) AS heard
FROM nodes n LEFT JOIN LATERAL (
  SELECT recv_ts FROM health WHERE health.node_id = n.node_id ORDER BY id DESC LIMIT 1) h ON true
WHERE n.state = 'online'
"""


class SharedStore(PostgresStore):
    """:class:`PostgresStore` for one of several ingest processes. A batch is
    :meth:`begin_batch` (locks and fresh rows of its nodes with state messages), the core's
    decisions, then :meth:`stage` and :meth:`commit` in the same transaction."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._locked: frozenset[str] = frozenset()

    def begin_batch(self, node_ids: Iterable[str]) -> dict[str, NodeRow]:
        """Open the batch's transaction, lock ``node_ids`` in it, and return their stored rows
        (a node not in the database is absent)."""
        ids = sorted(set(node_ids))
        self._locked = frozenset(ids)
        self.conn.execute("BEGIN")
        if not ids:
            return {}
        try:
            self.conn.execute(_LOCK_NODES, (LOCK_NODE, ids))
            rows = self.conn.execute(_SELECT_NODES, (ids,)).fetchall()
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return {r[0]: NodeRow(*r) for r in rows}

    def load_seqs(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], SeqState]:
        """Dedupe state of (node, boot) ``keys`` as stored (highest seq and open gaps)."""
        keys = list(keys)
        out: dict[tuple[str, str], SeqState] = {k: SeqState() for k in keys}
        if not keys:
            return out
        nodes, boots = [k[0] for k in keys], [k[1] for k in keys]
        for n, b, high in self.conn.execute(
            "SELECT e.node_id, e.boot_id, MAX(e.seq) FROM events e"
            " JOIN unnest(%s::text[], %s::text[]) AS k(n, b) ON e.node_id=k.n AND e.boot_id=k.b"
            " GROUP BY e.node_id, e.boot_id",
            (nodes, boots),
        ):
            out[(n, b)].high = high
        for n, b, first, last, detected in self.conn.execute(
            "SELECT g.node_id, g.boot_id, first_seq, last_seq, detected FROM gaps g"
            " JOIN unnest(%s::text[], %s::text[]) AS k(n, b) ON g.node_id=k.n AND g.boot_id=k.b"
            " ORDER BY first_seq",
            (nodes, boots),
        ):
            out[(n, b)].gaps.append((first, last, detected))
        return out

    def stage_shared(
        self, writes: Sequence[Write], lows: dict[tuple[str, str], int], now: float
    ) -> None:
        """Stage ``writes`` in the batch's transaction: a node row of a node not locked becomes
        a forward-only ``last_seen``; gaps are recomputed from the events table for the
        (node, boot) keys of ``lows`` (their lowest seq in the batch), instead of the core's."""
        kept: list[Write] = []
        seen: dict[str, float] = {}
        for w in writes:
            if isinstance(w, NodeRow) and w.node_id not in self._locked:
                seen[w.node_id] = max(w.last_seen, seen.get(w.node_id, 0.0))
            elif not isinstance(w, GapsRow):
                kept.append(w)
        try:
            super().stage(kept)  # events are inserted at its end: the gaps below see them
            with self.conn.pipeline(), self.conn.cursor() as cur:
                if seen:
                    cur.executemany(_SEEN, [(t, n) for n, t in sorted(seen.items())])
                if lows:
                    keys = sorted(lows)
                    cur.execute(_LOCK_NODES, (LOCK_GAPS, [f"{n} {b}" for n, b in keys]))
                    cur.executemany(
                        _GAPS, [{"n": n, "b": b, "lo": lows[(n, b)], "now": now} for n, b in keys]
                    )
        except BaseException:
            if self.conn.info.transaction_status != TransactionStatus.IDLE:
                self.conn.execute("ROLLBACK")
            raise

    def _exec(self, sql: str, params: Sequence[object] = ()) -> Iterable[tuple[Any, ...]]:
        # The batch's transaction is already open (begin_batch): the shared write path's BEGIN
        # joins it rather than nesting.
        if sql == "BEGIN" and self.conn.info.transaction_status != TransactionStatus.IDLE:
            return ()
        return super()._exec(sql, params)

    # -- the leader's -----------------------------------------------------------------------------

    def online(self) -> list[OnlineNode]:
        return [OnlineNode(*r) for r in self.conn.execute(_ONLINE).fetchall()]

    def take_offline(
        self, node_id: str, boot_id: str | None, birth_seq: int, reason: str, now: float
    ) -> bool:
        """Take the node offline for ``reason`` (``health_timeout``, ``will``) if it is still
        online in the life (``boot_id``, ``birth_seq``) that was judged; one transaction with
        its state history. Whether it did."""
        with self.conn.transaction():
            cur = self.conn.execute(_OFFLINE, (reason, now, node_id, boot_id, birth_seq))
            if cur.rowcount != 1:
                return False
            self.conn.execute(
                'UPDATE state_history SET "end"=%s WHERE node_id=%s AND "end" IS NULL',
                (now, node_id),
            )
            self.conn.execute(
                "INSERT INTO state_history(node_id, state, start, reason)"
                " VALUES (%s, 'offline', %s, %s)",
                (node_id, now, reason),
            )
        return True
