"""Folding a batch of ingest writes (pure): one row per key, the same end state as the writes
one by one; intervals in rounds; which nodes' health history is due for pruning."""

from __future__ import annotations

import pytest

from central.rows import DeviceRow, EventRow, GapsRow, HealthRow, IntervalRow, NodeRow, Write
from central.write_batch import HealthPrune, fold, interval_rounds

A, B = "450102001003-a", "450102001004-a"


def node(node_id: str, last_seen: float, last_health: str | None = None, **kw: object) -> NodeRow:
    row = NodeRow(node_id, node_id[:12], node_id[:6], "online", 1.0, "connect", "b1", 1, 30.0,
                  "1.0", 1.0, last_seen, last_health)  # fmt: skip
    for k, v in kw.items():
        setattr(row, k, v)
    return row


def device(
    dev: str, ts: float, kind: str = "camera", state: str = "ok", removed: int = 0
) -> DeviceRow:
    return DeviceRow(A, dev, kind, state, "门口", ts, "{}", 0)


def health(node_id: str, ts: float) -> HealthRow:
    return HealthRow(node_id, ts, ts, "{}")


def test_several_reports_of_a_node_become_one_node_row_and_every_health_row() -> None:
    first = node(A, 10.0, '{"n":1}')
    writes: list[Write] = [
        first,
        health(A, 10.0),
        node(B, 11.0),
        node(A, 12.0, None, first_seen=12.0, village="x"),
        health(A, 12.0),
        node(A, 13.0, '{"n":3}'),
        node(A, 14.0, None, state="offline"),
    ]
    b = fold(writes)
    assert [h.ts for h in b.health] == [10.0, 12.0]
    assert [n.node_id for n in b.nodes] == [A, B]
    a = b.nodes[0]
    # the last one's values, the first one's insert-only columns, the latest last_health
    assert (a.last_seen, a.state, a.last_health) == (14.0, "offline", '{"n":3}')
    assert (a.first_seen, a.village) == (1.0, A[:12])
    assert first.last_seen == 10.0  # the rows handed in are not changed


def test_last_health_none_throughout_stays_none() -> None:
    assert fold([node(A, 1.0), node(A, 2.0)]).nodes[0].last_health is None


def test_device_upserts_fold_and_a_removal_keeps_the_description_before_it() -> None:
    b = fold([device("cam1", 1.0), device("cam1", 2.0, state="offline"), device("cam2", 3.0)])
    assert [(d.device_id, d.state, d.ts) for d in b.devices] == [
        ("cam1", "offline", 2.0),
        ("cam2", "ok", 3.0),
    ]
    removal = DeviceRow(A, "cam1", "", "unknown", None, 5.0, "{}", 1)
    (d,) = fold([device("cam1", 1.0, kind="nvr", state="ok"), removal]).devices
    assert (d.kind, d.state, d.name, d.ts, d.removed) == ("nvr", "ok", "门口", 5.0, 1)
    (d,) = fold([removal, device("cam1", 6.0)]).devices
    assert (d.kind, d.ts, d.removed) == ("camera", 6.0, 0)
    (d,) = fold([removal]).devices  # alone: the store keeps the stored description
    assert d is removal


def test_gaps_keep_the_last_set_and_events_and_intervals_all_in_order() -> None:
    e = [EventRow(A, A[:12], "b1", s, 1.0, 1.0, "info", "k", None, "{}") for s in (3, 1, 3)]
    i = [IntervalRow(A, "online", 1.0, "connect"), IntervalRow(A, "offline", 2.0, "will")]
    g = [GapsRow(A, "b1", ((2, 2, 1.0),)), GapsRow(A, "b1", ()), GapsRow(A, "b2", ())]
    b = fold([e[0], i[0], g[0], e[1], g[1], i[1], e[2], g[2]])
    assert b.events == e
    assert b.intervals == i
    assert b.gaps == [g[1], g[2]]


def test_interval_rounds_hold_one_per_node_in_order() -> None:
    rows = [
        IntervalRow(A, "online", 1.0, "connect"),
        IntervalRow(B, "online", 1.0, "connect"),
        IntervalRow(A, "offline", 2.0, "will"),
        IntervalRow(A, "online", 3.0, "connect"),
    ]
    assert interval_rounds(rows) == [[rows[0], rows[1]], [rows[2]], [rows[3]]]
    assert interval_rounds([]) == []


def test_health_prune_is_due_every_n_reports_per_node() -> None:
    p = HealthPrune(3, stagger=False)
    assert p.due([health(A, 1), health(A, 2), health(B, 1)]) == []
    assert p.due([health(A, 3)]) == [A]
    assert p.due([health(A, t) for t in range(4, 11)] + [health(B, 2), health(B, 3)]) == [A, B]
    assert p.due([health(A, 11)]) == []  # 10 and 11 counted since the prune at 9
    assert p.due([health(A, 12)]) == [A]


def test_staggered_prunes_spread_over_the_cycle_and_each_node_is_due_once_per_cycle() -> None:
    every = 30
    p = HealthPrune(every)
    nodes = [f"4501020{k:05d}-a" for k in range(3000)]
    per_report: list[int] = []
    seen: dict[str, int] = {}
    for t in range(3 * every):  # one report per node per "interval", as the fleet reports
        due = p.due([health(n, float(t)) for n in nodes])
        per_report.append(len(due))
        for n in due:
            seen[n] = seen.get(n, 0) + 1
    assert sorted(set(seen.values())) == [3]  # every node, once per cycle
    # spread: no interval prunes more than twice its share (all 3000 at once without stagger)
    assert max(per_report) <= 2 * len(nodes) // every


def test_health_prune_refuses_a_zero_period() -> None:
    with pytest.raises(ValueError):
        HealthPrune(0)
