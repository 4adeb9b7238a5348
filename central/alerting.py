"""Alerts at run time: the task that evaluates the rules (central.alerts) every few seconds,
their storage, the webhooks, and the HTTP routes.

- Storage: tables ``alert_rules`` (the rules an admin set through the API; they replace the
  config's until cleared) and ``alerts`` (every firing alert with its start and, once resolved,
  its end) in central's database (SQLite or PostgreSQL, central.db), written on the task's own
  connection (durable commits).
  Firing alerts survive a restart with their since-when, and are not announced twice.
- Webhooks (docs/dashboard.md): one JSON POST per transition (firing or resolved) to every
  configured URL, Alertmanager-like with a zh/en ``text``. Each receiver has its own bounded
  queue and worker, so a slow or dead receiver delays nobody else and never the ingest; retries
  with capped, fully jittered exponential backoff; outcomes counted in
  ``shilian_webhook_deliveries_total{outcome}``.
- Routes (central.alert_routes): ``GET /api/v1/alerts``, ``GET|PUT /api/v1/alerts/rules``. A
  change is published on the live stream as ``alert``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import prometheus_client
from pydantic import TypeAdapter

from central import views
from central.alerts import (
    Alert,
    AlertRule,
    AlertsConfig,
    Condition,
    Evaluator,
    Transition,
    WebhookConfig,
    observe_alarms,
    observe_backlog,
    observe_coverage,
    observe_devices,
    observe_offline,
)
from central.coverage import CoverageIndex
from central.db import ERRORS, Db, Target, open_db
from central.devices import DeviceIndex
from central.live import LiveHub, Message
from central.store import NodeRow
from central.webhooks import WebhookSender, test_body, webhook_body
from registry import Registry

log = logging.getLogger("shilian.central.alerts")

#: Open alarms / backlogged nodes read per rule and evaluation (MAX_ALERTS_PER_RULE fire anyway).
OBSERVE_ROWS = 500
#: Resolved alerts listed with the firing ones by GET /api/v1/alerts (what just cleared).
RECENT_RESOLVED = 20

_RULES = TypeAdapter(list[AlertRule])
_WEBHOOKS = TypeAdapter(dict[str, WebhookConfig])


def config_digest(hook: WebhookConfig) -> str:
    """Names a receiver of central.toml without its secrets: an admin's edit is stored against
    it, so editing that entry in central.toml later makes the file's version count again."""
    return hashlib.sha256(hook.model_dump_json().encode()).hexdigest()


def alert_json(a: Alert) -> dict[str, Any]:
    return {
        "rule": a.rule,
        "kind": a.kind,
        "severity": a.severity,
        "key": a.key,
        "labels": dict(a.labels),
        "summary": {"zh": a.zh, "en": a.en},
        "value": a.value,
        "since": a.since,
        "fired": a.fired,
        "resolved": a.resolved,
    }


# -- storage ------------------------------------------------------------------------------------


class AlertStore:
    """Writer of ``alert_rules``, ``alert_webhooks`` and ``alerts``: one connection
    (central.db), used from one thread."""

    def __init__(self, target: Target) -> None:
        self.db = open_db(target)

    def close(self) -> None:
        self.db.close()

    def rules(self) -> list[AlertRule] | None:
        row = self.db.fetchone("SELECT body FROM alert_rules WHERE id = 1")
        return None if row is None else _RULES.validate_json(row[0])

    def set_rules(self, rules: list[AlertRule] | None, by: str, at: float) -> None:
        if rules is None:
            self.db.execute("DELETE FROM alert_rules")
            return
        body = _RULES.dump_json(rules).decode()
        self.db.execute(
            "INSERT INTO alert_rules(id, body, updated, updated_by) VALUES (1,?,?,?)"
            " ON CONFLICT(id) DO UPDATE SET body=excluded.body, updated=excluded.updated,"
            " updated_by=excluded.updated_by",
            (body, at, by),
        )

    def webhooks(self) -> dict[str, WebhookConfig]:
        """The admin's receivers, by the digest of the central.toml entry each replaces."""
        row = self.db.fetchone("SELECT body FROM alert_webhooks WHERE id = 1")
        return {} if row is None else _WEBHOOKS.validate_json(row[0])

    def set_webhooks(self, hooks: dict[str, WebhookConfig], by: str, at: float) -> None:
        self.db.execute(
            "INSERT INTO alert_webhooks(id, body, updated, updated_by) VALUES (1,?,?,?)"
            " ON CONFLICT(id) DO UPDATE SET body=excluded.body, updated=excluded.updated,"
            " updated_by=excluded.updated_by",
            (_WEBHOOKS.dump_json(hooks).decode(), at, by),
        )

    def firing(self) -> list[Alert]:
        rows = self.db.fetchall(
            "SELECT rule, kind, severity, key, labels, zh, en, value, since, fired FROM alerts"
            " WHERE resolved IS NULL ORDER BY id"
        )
        return [
            Alert(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8], r[9])
            for r in rows
        ]

    def recent_resolved(self, limit: int) -> list[Alert]:
        rows = self.db.fetchall(
            "SELECT rule, kind, severity, key, labels, zh, en, value, since, fired, resolved"
            " FROM alerts WHERE resolved IS NOT NULL ORDER BY resolved DESC, id DESC LIMIT ?",
            (limit,),
        )
        return [
            Alert(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8], r[9], r[10])
            for r in rows
        ]

    def record(self, transitions: list[Transition]) -> None:
        """The transitions in one transaction: all recorded, or none."""
        with self.db.transaction(write=True):
            for t in transitions:
                a = t.alert
                if t.status == "firing":
                    self.db.execute(
                        "INSERT INTO alerts(rule, key, kind, severity, labels, zh, en, value,"
                        " since, fired) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (
                            a.rule, a.key, a.kind, a.severity,
                            json.dumps(dict(a.labels), ensure_ascii=False),
                            a.zh, a.en, a.value, a.since, a.fired,
                        ),
                    )  # fmt: skip
                else:
                    self.db.execute(
                        "UPDATE alerts SET resolved = ? WHERE rule = ? AND key = ?"
                        " AND resolved IS NULL",
                        (a.resolved, a.rule, a.key),
                    )


# -- the task -----------------------------------------------------------------------------------


class AlertTask:
    """Evaluates the rules every ``eval_interval_s``; owned by central's supervisor."""

    def __init__(
        self,
        cfg: AlertsConfig,
        db_path: Target,
        registry: Registry,
        coverage: CoverageIndex,
        nodes: Callable[[], Iterable[NodeRow]],
        hub: LiveHub,
        metrics: prometheus_client.CollectorRegistry,
        clock: Callable[[], float],
        devices: DeviceIndex | None = None,
    ) -> None:
        self.cfg = cfg
        self.db_path = db_path
        self.registry = registry
        self.coverage = coverage
        self.nodes = nodes
        self.hub = hub
        self.clock = clock
        self.devices = devices
        self.evaluator = Evaluator()
        self.rules_source = "config"
        self.recent: deque[Alert] = deque(maxlen=RECENT_RESOLVED)
        self.evaluations = 0
        self._names: dict[str, str] = {}
        self._store: AlertStore | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerts")
        self._reads = views.ReadViews(db_path, workers=1)
        self._changed = asyncio.Event()
        self.outcomes = prometheus_client.Counter(
            "shilian_webhook_deliveries",
            "告警推送结果 / webhook deliveries by outcome (delivered, retried, rejected, failed, "
            "dropped)",
            ["outcome"],
            registry=metrics,
        )
        for outcome in ("delivered", "retried", "rejected", "failed", "dropped"):
            self.outcomes.labels(outcome)
        self.tests = prometheus_client.Counter(
            "shilian_webhook_tests",
            "管理员发送的推送测试 / webhook test messages sent by admins, by outcome (delivered, "
            "failed)",
            ["outcome"],
            registry=metrics,
        )
        for outcome in ("delivered", "failed"):
            self.tests.labels(outcome)
        self.firing_gauge = prometheus_client.Gauge(
            "shilian_alerts_firing",
            "正在告警的数量 / alerts firing, by rule and severity",
            ["rule", "severity"],
            registry=metrics,
        )
        self.senders = [WebhookSender(w, self.outcomes) for w in cfg.webhooks]

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def run(self, stop: asyncio.Event) -> None:
        self._store = store = await self._db(AlertStore, self.db_path)
        try:
            saved = await self._db(store.rules)
            if saved is not None:
                self.rules_source = "api"
            self.evaluator.set_rules(saved if saved is not None else self.cfg.rules)
            edited = await self._db(store.webhooks)
            for sender, hook in zip(self.senders, self.cfg.webhooks, strict=True):
                if config_digest(hook) in edited:
                    sender.configure(edited[config_digest(hook)])
            self.evaluator.restore(await self._db(store.firing))
            self.recent.extend(reversed(await self._db(store.recent_resolved, RECENT_RESOLVED)))
            async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as tg:
                workers = [tg.create_task(s.run(session)) for s in self.senders]
                while not stop.is_set():
                    try:
                        await self.evaluate()
                    except ERRORS as e:  # a locked or failing disk: try again next time
                        log.warning("告警评估失败 / alert evaluation failed: %s", e)
                    self._changed.clear()
                    try:
                        async with asyncio.timeout(self.cfg.eval_interval_s):
                            await _first(stop.wait(), self._changed.wait())
                    except TimeoutError:
                        pass
                for w in workers:
                    w.cancel()
        finally:
            await self._db(store.close)
            self._writer.shutdown(wait=True)
            await asyncio.to_thread(self._reads.close)

    def _name(self, code: str) -> str:
        if code not in self._names:
            u = self.registry.unit(code)
            self._names[code] = u.name if u is not None else code
        return self._names[code]

    async def observe(self, now: float) -> dict[str, list[Condition]]:
        observed: dict[str, list[Condition]] = {}
        for rule in self.evaluator.rules.values():
            if not rule.enabled:
                observed[rule.id] = []  # kept for the admin to re-enable; its alerts resolve
                continue
            code = rule.code or self.registry.scope
            if self.registry.unit(code) is None:
                observed[rule.id] = []  # outside this central's scope: never fires
                continue
            low, high = code.ljust(12, "0"), code.ljust(12, "9")
            if rule.kind == "coverage_below":
                c = self.coverage.summary(code)
                observed[rule.id] = observe_coverage(rule, c.ratio, c.covered, c.villages, c.name)
            elif rule.kind == "node_offline":
                cutoff = now - rule.minutes * 60
                offline = sorted(
                    (n.node_id, n.state_since)
                    for n in self.nodes()
                    if n.state == "offline" and n.state_since <= cutoff and low <= n.village <= high
                )
                names = {v: self._name(v) for v in {n[:12] for n, _ in offline}}
                observed[rule.id] = observe_offline(rule, offline, names, now)
            elif rule.kind == "alarm_unacked":
                due = now - rule.minutes * 60
                rows = await self._reads.run(
                    functools.partial(_alarms, low=low, high=high, due=due)
                )
                names = {v: self._name(v) for v in {r[1][:12] for r in rows}}
                observed[rule.id] = observe_alarms(rule, rows, names, now)
            elif rule.kind == "device_down":
                rows3 = self._device_faults(code)
                names = {v: self._name(v) for v in {r[0][:12] for r in rows3}}
                observed[rule.id] = observe_devices(rule, rows3, names, now)
            else:
                assert rule.backlog is not None
                rows2 = await self._reads.run(
                    functools.partial(_backlogs, low=low, high=high, backlog=rule.backlog)
                )
                names = {v: self._name(v) for v in {r[0][:12] for r in rows2}}
                observed[rule.id] = observe_backlog(rule, rows2, names)
        return observed

    def _device_faults(self, code: str) -> list[tuple[str, str, str, str, float, bool]]:
        """Devices under ``code`` whose node last reported them not ok (central.alerts)."""
        if self.devices is None:
            return []
        online_since = {n.node_id: n.state_since for n in self.nodes() if n.state == "online"}
        out = []
        for v in self.devices.devices(code):
            d = v.device
            if d.health == "ok":
                continue
            began = d.since if d.since is not None else d.ts
            since = max(began, online_since.get(d.node_id, 0.0))
            out.append((d.node_id, d.device_id, d.kind, d.health, since, v.suppressed))
        return out

    async def evaluate(self) -> list[Transition]:
        now = self.clock()
        observed = await self.observe(now)
        transitions = self.evaluator.step(observed, self.clock())
        self.evaluations += 1
        if transitions:
            assert self._store is not None
            try:
                await self._db(self._store.record, transitions)
            except ERRORS as e:  # the disk: alerts still show and webhooks still go out
                log.warning("告警记录写入失败 / alerts not recorded: %s", e)
            for t in transitions:
                if t.status == "resolved":
                    self.recent.appendleft(t.alert)
                log.info(
                    "告警%s / alert %s: %s / %s",
                    "触发" if t.status == "firing" else "恢复",
                    t.status,
                    t.alert.zh,
                    t.alert.en,
                )
                body = webhook_body(t)
                for s in self.senders:
                    s.put(body)
            self.hub.publish([Message("alert", {"firing": len(self.evaluator.firing)})])
        self.firing_gauge.clear()
        counts: dict[tuple[str, str], int] = {}
        for a in self.evaluator.firing.values():
            counts[a.rule, a.severity] = counts.get((a.rule, a.severity), 0) + 1
        for (rule_id, sev), n in counts.items():
            self.firing_gauge.labels(rule_id, sev).set(n)
        return transitions

    async def replace_rules(self, rules: list[AlertRule] | None, by: str) -> None:
        """Admin's rules (None: back to the config's); persisted, then applied at once."""
        assert self._store is not None
        await self._db(self._store.set_rules, rules, by, self.clock())
        self.rules_source = "config" if rules is None else "api"
        self.evaluator.set_rules(self.cfg.rules if rules is None else rules)
        self._changed.set()

    async def change_webhook(self, index: int, hook: WebhookConfig, by: str) -> None:
        """An admin's new settings for receiver ``index``: stored, then used at once (what is
        queued for it goes to the new address)."""
        assert self._store is not None
        edited = {
            config_digest(c): s.cfg
            for c, s in zip(self.cfg.webhooks, self.senders, strict=True)
            if s.cfg != c
        }
        edited[config_digest(self.cfg.webhooks[index])] = hook
        await self._db(self._store.set_webhooks, edited, by, self.clock())
        self.senders[index].configure(hook)

    async def test_webhook(self, index: int, by: str) -> tuple[int | None, str | None]:
        """One test message to receiver ``index`` now, outside its queue: (HTTP status, the
        problem or None when the receiver took it)."""
        async with aiohttp.ClientSession() as session:
            status, problem = await self.senders[index].attempt(
                session, test_body(by, self.clock())
            )
        self.tests.labels("delivered" if problem is None else "failed").inc()
        return status, problem

    def firing(self, code: str | None) -> list[Alert]:
        alerts = sorted(
            self.evaluator.firing.values(), key=lambda a: (a.severity != "critical", a.fired)
        )
        if code:
            alerts = [a for a in alerts if a.labels.get("code", "").startswith(code)]
        return alerts


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


def _alarms(db: Db, low: str, high: str, due: float) -> list[tuple[int, str, str, float]]:
    rows = db.fetchall(
        "SELECT e.id, e.node_id, e.kind, e.recv_ts FROM events e WHERE e.priority = 'alarm'"
        " AND e.village BETWEEN ? AND ? AND e.recv_ts <= ? AND NOT EXISTS"
        " (SELECT 1 FROM alarm_acks a WHERE a.event_id = e.id) ORDER BY e.recv_ts LIMIT ?",
        (low, high, due, OBSERVE_ROWS),
    )
    return [(int(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]


#: A node's outbox depth from its last health report (JSON text), in each backend's dialect;
#: NULL when the report has no number there.
_OUTBOX_DEPTH = {
    "sqlite": "CAST(json_extract(last_health, '$.outbox_depth') AS INTEGER)",
    "postgresql": "CASE WHEN jsonb_typeof(last_health::jsonb -> 'outbox_depth') = 'number'"
    " THEN floor((last_health::jsonb ->> 'outbox_depth')::numeric) END",
}


def _backlogs(db: Db, low: str, high: str, backlog: int) -> list[tuple[str, int]]:
    rows = db.fetchall(
        f"SELECT node_id, d FROM (SELECT node_id, {_OUTBOX_DEPTH[db.backend]} AS d FROM nodes"
        " WHERE village BETWEEN ? AND ?) AS n WHERE d > ? ORDER BY d DESC LIMIT ?",
        (low, high, backlog, OBSERVE_ROWS),
    )
    return [(str(r[0]), int(r[1])) for r in rows]
