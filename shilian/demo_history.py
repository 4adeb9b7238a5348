"""A month of history for ``shilian demo``: what central would hold had it run for
:data:`DAYS` days over the demo's fleet, so the trend, the alarm console, the alerts, the
reports and the audit log are not empty on first sight.

- :func:`plan` is pure (a seeded ``random.Random``, ``now`` passed in): for each node the fleet
  will run (:class:`shilian.churn.ChurnPlan`, same seed) its commissioning time, its
  online/offline intervals (outages grow rarer over the month: the trend rises), alarms and
  patrol check-ins at times its node was online, who acknowledged and closed each alarm and
  when, and the commissioning reports. Nodes the fleet brings online end the month online;
  the others have been offline for hours to days.
- :func:`write` stores it before central starts, through the stores' own functions
  (central.store, central.alarms, central.history, central.alerting, central.commissioning,
  central.accounts): the daily coverage rows are computed by central.history from the same
  intervals, and the resolved "alarm not acknowledged" alerts by the alert evaluator.

Nanning's 1,641 nodes (~12,800 intervals, 1,822 reports) take ~0.4 s (bench/demo_start.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from central import history
from central.accounts import AccountStore
from central.alarms import AckStore, severity
from central.alerting import AlertStore
from central.alerts import AlertRule, Evaluator, Transition, observe_alarms
from central.audit import Entry
from central.commissioning import ReportStore
from central.db import SqliteDb, open_db
from central.store import EventRow, IntervalRow, NodeRow, SqliteStore
from registry import Registry

#: Days of history: the trend's 30 days, and a few before them so day one has its figures.
DAYS = 30
LEAD_DAYS = 5
#: Share of the nodes commissioned during the month (the rest before it): the provisioned count
#: grows, and the commissioning reports have recent dates.
NEW_NODE_SHARE = 0.12
#: Mean days between a node's outages at the start and at the end of the month, and their mean
#: length: about 17 % of nodes offline at first, 9 % at the end (maintenance improving).
OUTAGE_EVERY_DAYS = (6.0, 13.0)
OUTAGE_MEAN_DAYS = 1.2
OUTAGE_BOUNDS_S = (600.0, 5 * 86400.0)
#: Alarms and patrol check-ins per day, city-wide.
ALARMS_PER_DAY = 4.0
CHECKINS_PER_DAY = 12.0
#: Alarm kinds with their weights: panels report intrusions most, fires least.
ALARM_KINDS = (("intrusion", 4), ("panic", 3), ("tamper", 2), ("fire", 1))
#: Acknowledged within 1 to 12 minutes (the rule "not acknowledged in 5 minutes" fires for
#: the slow ones), closed 10 minutes to 3 hours later. The newest alarms are left open.
ACK_DELAY_S = (60.0, 720.0)
CLOSE_DELAY_S = (600.0, 3 * 3600.0)
OPEN_ALARMS = 3
OPERATORS = ("张三", "李四", "王芳")
TECHNICIANS = ("刘工", "陈工", "黄工")
ACK_NOTES = ("已电话联系村委会", "已派人到场", "网格员前往核实")
CLOSE_NOTES = ("误报，已复位", "现场已处置", "设备故障，已报修", "已交派出所处理")
#: The demo's alert rules (central.toml): a county's coverage under 80 %, a node offline for
#: more than 10 minutes, a critical alarm not acknowledged within 5 minutes.
COVERAGE_PCT = 80.0
OFFLINE_MINUTES = 10.0
UNACKED_MINUTES = 5.0


def rules(registry: Registry) -> list[AlertRule]:
    counties = [u for u in registry.children(registry.root().code) if u.level == 3]
    out = [
        AlertRule(
            id=f"coverage-{u.code}",
            kind="coverage_below",
            code=u.code,
            threshold_pct=COVERAGE_PCT,
        )
        for u in counties
    ]
    out.append(AlertRule(id="node-offline", kind="node_offline", minutes=OFFLINE_MINUTES))
    out.append(
        AlertRule(
            id="alarm-unacked",
            kind="alarm_unacked",
            minutes=UNACKED_MINUTES,
            severity="critical",
        )
    )
    return out


def rules_toml(registry: Registry) -> str:
    """The rules as ``[[alerts.rules]]`` tables of central.toml."""
    lines = []
    for r in rules(registry):
        lines.append("[[alerts.rules]]")
        for k, v in r.model_dump(exclude_defaults=True).items():
            lines.append(f"{k} = {json.dumps(v, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


@dataclass
class Alarm:
    node: str
    seq: int
    ts: float
    kind: str
    zone: int
    ack: tuple[str, float, str] | None = None  # by, at, note
    close: tuple[str, float, str] | None = None


@dataclass
class History:
    nodes: list[NodeRow] = field(default_factory=list)
    intervals: list[IntervalRow] = field(default_factory=list)  # per node, oldest first
    events: list[EventRow] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)
    reports: list[tuple[str, float, dict[str, object]]] = field(default_factory=list)  # Report


def _online_at(spans: list[tuple[float, float]], t: float) -> bool:
    return any(a <= t < b for a, b in spans)


def plan(nodes: list[str], up: set[str], now: float, rng: random.Random) -> History:
    """The month of ``nodes`` up to ``now`` (pure)."""
    h = History()
    start = now - (DAYS + LEAD_DAYS) * 86400.0
    month = now - DAYS * 86400.0
    online: dict[str, list[tuple[float, float]]] = {}
    for node in nodes:
        new = rng.random() < NEW_NODE_SHARE
        first = rng.uniform(month, now - 86400.0) if new else rng.uniform(start, month)
        spans: list[tuple[float, float]] = []
        rows = [IntervalRow(node, "online", first, "connect")]
        t = first
        while True:
            progress = min(1.0, max(0.0, (t - month) / (now - month)))
            every = OUTAGE_EVERY_DAYS[0] + progress * (OUTAGE_EVERY_DAYS[1] - OUTAGE_EVERY_DAYS[0])
            down = t + rng.expovariate(1.0 / (every * 86400.0))
            if down >= now:
                break
            drawn = rng.expovariate(1.0 / (OUTAGE_MEAN_DAYS * 86400.0))
            length = min(max(drawn, OUTAGE_BOUNDS_S[0]), OUTAGE_BOUNDS_S[1])
            back = down + length
            if back >= now:
                break
            spans.append((t, down))
            rows.append(IntervalRow(node, "offline", down, rng.choice(("will", "health_timeout"))))
            rows.append(IntervalRow(node, "online", back, "connect"))
            t = back
        if node in up:
            spans.append((t, now))
            state, since, reason, last_seen = "online", t, "connect", now
        else:  # the fleet leaves it offline: it went down hours to days ago
            since = max(t + 60.0, now - rng.uniform(3600.0, 4 * 86400.0))
            spans.append((t, since))
            rows.append(IntervalRow(node, "offline", since, "will"))
            state, reason, last_seen = "offline", "will", since
        online[node] = spans
        h.intervals.extend(rows)
        boot = f"{rng.getrandbits(128):032x}"
        h.nodes.append(
            NodeRow(node, node[:12], node[:6], state, since, reason, boot, len(rows), 30.0,
                    "0.1.0", first, last_seen)
        )  # fmt: skip
        h.reports.extend(_reports(node, first, rng))
    _events(h, online, month, now, rng)
    return h


Report = tuple[str, float, dict[str, object]]  # node id, uploaded at, report.json


def _reports(node: str, at: float, rng: random.Random) -> list[Report]:
    """The commissioning check at installation; one in ten failed first (the clock step) and
    passed on the second try."""
    tech = rng.choice(TECHNICIANS)
    out = []
    tries = 2 if rng.random() < 0.1 else 1
    for i in range(tries):
        ok = i == tries - 1
        when = at - 600.0 * (tries - i)
        steps = [
            {"step": s, "ok": ok or s != "clock", "detail": "" if ok or s != "clock" else
             "时钟偏差 94 秒 / clock off by 94 s", "seconds": round(rng.uniform(0.2, 3.0), 2)}
            for s in ("tls", "birth", "health", "clock")
        ]  # fmt: skip
        report = {"node_id": node, "central": "mqtts://central.demo:8883", "started_at": when,
                  "ok": ok, "technician": tech, "steps": steps}  # fmt: skip
        out.append((node, when + 30.0, report))
    return out


def _events(
    h: History, online: dict[str, list[tuple[float, float]]], month: float, now: float,
    rng: random.Random,
) -> None:  # fmt: skip
    """Alarms and check-ins at times their node was online, each node's seqs in time order."""
    nodes = sorted(online)
    picked: list[tuple[float, str, str]] = []  # ts, node, kind
    kinds = [k for k, _ in ALARM_KINDS]
    weights = [w for _, w in ALARM_KINDS]
    for count, what in ((ALARMS_PER_DAY, "alarm"), (CHECKINS_PER_DAY, "patrol_checkin")):
        for _ in range(round(count * DAYS)):
            for _try in range(20):
                node, ts = rng.choice(nodes), rng.uniform(month, now - 3600.0)
                if _online_at(online[node], ts):
                    kind = rng.choices(kinds, weights)[0] if what == "alarm" else what
                    picked.append((ts, node, kind))
                    break
    picked.sort()
    seqs: dict[str, int] = {}
    boots = {n.node_id: n.boot_id or "" for n in h.nodes}
    alarms = [p for p in picked if p[2] != "patrol_checkin"]
    open_from = alarms[-OPEN_ALARMS][0] if len(alarms) >= OPEN_ALARMS else now
    for ts, node, kind in picked:
        seq = seqs[node] = seqs.get(node, 0) + 1
        zone = rng.randint(1, 8)
        if kind == "patrol_checkin":
            who = {"source": "app", "detail": {"by": rng.choice(("网格员", "村干部"))}}
            h.events.append(EventRow(node, node[:12], boots[node], seq, ts, ts + 0.3, "info",
                                     kind, None, json.dumps(who, ensure_ascii=False)))  # fmt: skip
            continue
        data = json.dumps({"zone": zone, "source": "board"})
        h.events.append(
            EventRow(node, node[:12], boots[node], seq, ts, ts + 0.3, "alarm", kind, "alarm_board",
                     data)
        )  # fmt: skip
        alarm = Alarm(node, seq, ts, kind, zone)
        if ts < open_from:
            acked = ts + rng.uniform(*ACK_DELAY_S)
            alarm.ack = (rng.choice(OPERATORS), acked, rng.choice(ACK_NOTES))
            closed = acked + rng.uniform(*CLOSE_DELAY_S)
            if closed < now:
                alarm.close = (alarm.ack[0], closed, rng.choice(CLOSE_NOTES))
        h.alarms.append(alarm)


def write(db: Path, registry: Registry, h: History, now: float) -> None:
    """Store ``h`` in central's database ``db`` (before central starts)."""
    store = SqliteStore(db)
    _unsynced(store.conn)
    try:
        store.apply([*h.nodes, *h.intervals, *h.events])
        ids = {
            (r[0], r[1]): int(r[2])
            for r in store.conn.execute(
                "SELECT node_id, seq, id FROM events WHERE priority = 'alarm'"
            )
        }
        villages_under = _villages_under(registry)
        days = [history.local_day(now) - dt.timedelta(days=i) for i in range(DAYS, 0, -1)]
        reader = open_db(db)
        try:
            derived = history.derive_rows(reader, registry, villages_under, days)
        finally:
            reader.close()
    finally:
        store.close()
    hs = history.HistoryStore(db)
    try:
        # What central's 23:55 snapshots would have written: the same figures, as snapshots.
        hs.write([dataclasses.replace(r, source="snapshot") for r in derived])
    finally:
        hs.close()
    acks = AckStore(db)
    assert isinstance(acks.db, SqliteDb)  # the demo's database is a file
    _unsynced(acks.db.conn)
    entries = []
    try:
        for a in h.alarms:
            event_id = ids[(a.node, a.seq)]
            for step, action in ((a.ack, "alarm_ack"), (a.close, "alarm_close")):
                if step is None:
                    continue
                by, at, note = step
                if action == "alarm_ack":
                    acks.ack(event_id, by, note, at)
                else:
                    acks.close_alarm(event_id, by, note, at)
                entries.append(Entry(at, by, "operator", "10.45.1.23", action, str(event_id),
                                     "ok", {"node": a.node, "note": note}))  # fmt: skip
    finally:
        acks.close()
    accounts = AccountStore(db)
    try:
        assert isinstance(accounts.db, SqliteDb)  # the demo's database is a file
        _unsynced(accounts.db.conn)
        with accounts.db.transaction(write=True):
            for e in sorted(entries, key=lambda e: e.ts):
                accounts.audit(e)
    finally:
        accounts.close()
    _alerts(db, registry, h, ids)
    ReportStore(db).record((node, report, at) for node, at, report in h.reports)


def _alerts(db: Path, registry: Registry, h: History, ids: dict[tuple[str, int], int]) -> None:
    """The "alarm not acknowledged in 5 minutes" alerts of the month, fired and resolved by the
    evaluator as central would have."""
    rule = next(r for r in rules(registry) if r.kind == "alarm_unacked")
    ev = Evaluator()
    ev.set_rules([rule])
    names = {u.code: u.name for u in registry.villages()}
    transitions: list[Transition] = []
    for a in h.alarms:
        if a.ack is None or severity(a.kind) != "critical":
            continue
        due = a.ts + 0.3 + rule.minutes * 60.0
        if a.ack[1] <= due:
            continue
        row = (ids[(a.node, a.seq)], a.node, a.kind, a.ts + 0.3)
        cond = observe_alarms(rule, [row], names, due)
        transitions += ev.step({rule.id: cond}, due)
        transitions += ev.step({rule.id: []}, a.ack[1])
    store = AlertStore(db)
    try:
        store.record(transitions)
    finally:
        store.close()


def _unsynced(conn: sqlite3.Connection) -> None:
    """No fsync per transaction while seeding: the demo's database is thrown away at its end,
    and central, which starts after, opens its own durable connections."""
    conn.execute("PRAGMA synchronous=OFF")


def _villages_under(registry: Registry) -> dict[str, int]:
    kept = set(history.kept_units(registry))
    counts = dict.fromkeys(kept, 0)
    for v in registry.villages():
        for u in registry.ancestors(v.code):
            if u.code in kept:
                counts[u.code] += 1
    return counts


def seed(
    db: Path, registry: Registry, nodes: list[str], up: set[str], now: float, rng_seed: int
) -> History:
    """Plan and write the month for ``nodes`` (``up``: those the fleet brings online)."""
    h = plan(nodes, up, now, random.Random(rng_seed))
    write(db, registry, h, now)
    return h
