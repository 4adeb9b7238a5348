"""Alert rules and their evaluation: the pure core. No I/O, time passed in.

Rules (``[[alerts.rules]]`` in central.toml, or replaced by an admin through the API):

- ``coverage_below``: a unit's coverage ratio under ``threshold_pct`` (for ``minutes``, default 0);
- ``node_offline``: a node under ``code`` offline for more than ``minutes`` (one alert per node);
- ``alarm_unacked``: an alarm under ``code`` not acknowledged ``minutes`` after central received
  it (one alert per alarm);
- ``outbox_backlog``: a node's last reported outbox depth above ``backlog`` (for ``minutes``);
- ``device_down``: a camera, conference terminal or information-system link under ``code`` not
  ``ok`` for more than ``minutes`` while its node is online (one alert per device). Counted from
  when the fault began or the node came back online, whichever is later; while the node is
  offline its devices neither fire nor resolve (child suppression: the node's silence is one
  fault, reported by ``node_offline``, not one per camera).

Each evaluation turns *observations* (the conditions that hold now, per rule and instance key)
into *transitions*: an alert fires when its condition has held for the rule's duration, and
resolves when the condition no longer holds (or its rule is gone). The runtime
(central.alerting) gathers the observations, persists transitions and sends webhooks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from central import i18n

#: Firing alerts kept per rule: a county's uplink failing takes ~200 nodes offline at once; past
#: this the oldest conditions are shown and the rest are summarised by the count.
MAX_ALERTS_PER_RULE = 500

Kind = Literal["coverage_below", "node_offline", "alarm_unacked", "outbox_backlog", "device_down"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlertRule(_Model):
    id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="stable rule id (lower-case letters, digits, - and _) / 规则编号",
    )
    kind: Kind = Field(description="what is watched / 规则类型")
    code: str = Field(
        default="",
        pattern=r"^(\d{2}|\d{4}|\d{6}|\d{9}|\d{12})?$",
        description='unit the rule watches ("": the whole scope) / 区划代码（空为整个范围）',
    )
    threshold_pct: float | None = Field(
        default=None, ge=0, le=100, description="coverage_below: percent / 覆盖率阈值（%）"
    )
    minutes: float = Field(
        default=0,
        ge=0,
        le=7 * 24 * 60,
        description="how long the condition must hold, minutes / 持续时间（分钟）",
    )
    backlog: int | None = Field(
        default=None, ge=0, description="outbox_backlog: queued messages / 待发消息数"
    )
    severity: Literal["warning", "critical"] = Field(
        default="warning", description="warning or critical / 级别"
    )
    enabled: bool = Field(
        default=True,
        description="false: kept but not evaluated (its alerts resolve) / 停用的规则不评估",
    )

    @model_validator(mode="after")
    def _needs(self) -> Self:
        # Typed errors (central.body_errors names them in zh and en, at the field's path).
        if self.kind == "coverage_below" and self.threshold_pct is None:
            raise PydanticCustomError(
                "rule_needs", "{kind} needs {field}", {"kind": self.kind, "field": "threshold_pct"}
            )
        if self.kind == "outbox_backlog" and self.backlog is None:
            raise PydanticCustomError(
                "rule_needs", "{kind} needs {field}", {"kind": self.kind, "field": "backlog"}
            )
        if self.kind in ("node_offline", "alarm_unacked", "device_down") and self.minutes <= 0:
            raise PydanticCustomError(
                "rule_needs_minutes",
                "{kind} needs minutes > 0",
                {"kind": self.kind, "field": "minutes"},
            )
        return self


class WebhookConfig(_Model):
    url: str = Field(
        pattern=r"^https?://[^\s]+$", description="receiver URL (http or https) / 接收地址"
    )
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="per attempt / 单次超时（秒）")
    max_attempts: int = Field(
        default=8, ge=1, le=20, description="attempts before giving up / 最多尝试次数"
    )


class AlertsConfig(_Model):
    eval_interval_s: float = Field(
        default=5.0, ge=0.2, le=300, description="how often rules are evaluated / 评估间隔（秒）"
    )
    rules: list[AlertRule] = Field(default_factory=list, description="alert rules / 告警规则")
    webhooks: list[WebhookConfig] = Field(
        default_factory=list, description="webhook receivers / 告警推送地址"
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        check_unique(self.rules)
        return self


#: A path segment at least this long, of token characters only, is taken for a secret: receivers
#: such as Feishu and Slack put the credential in the path (``/hook/<uuid>``), and real path
#: words ("open-apis", "webhook") are shorter.
SECRET_SEGMENT_CHARS = 16
_TOKEN_SEGMENT = re.compile(rf"^[A-Za-z0-9_\-.~%]{{{SECRET_SEGMENT_CHARS},}}$")


def masked_url(url: str) -> str:
    """``url`` as an admin may see it: user name and password, every query value, the fragment
    and token-like path segments replaced by ``***``; scheme, host, port and the rest of the
    path kept, so the receiver can still be recognised."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    if parts.username is not None or parts.password is not None:
        netloc = f"***@{netloc}"
    path = "/".join("***" if _TOKEN_SEGMENT.match(seg) else seg for seg in parts.path.split("/"))
    query = "&".join(
        f"{pair.split('=', 1)[0]}=***" if pair else pair for pair in parts.query.split("&")
    )
    return urlunsplit((parts.scheme, netloc, path, query, "***" if parts.fragment else ""))


def rule_in_scope(rule: AlertRule, scope: str | None) -> bool:
    """A rule a user with ``scope`` (a division-code prefix; None or "": everything) may see:
    its unit lies at or under the scope. A rule over the whole registry ("" code) is seen by
    unscoped users only."""
    return not scope or rule.code.startswith(scope)


def check_unique(rules: Iterable[AlertRule]) -> None:
    seen: set[str] = set()
    for r in rules:
        if r.id in seen:
            raise ValueError(f"duplicate rule id {r.id!r} / 规则编号重复")
        seen.add(r.id)


# -- observations and alerts --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """A rule's condition holding now for one instance (``key``: a unit code, node id or alarm
    id). ``since``: when it began if known (a node's offline time); None: the evaluator counts
    from the first evaluation that saw it. ``held``: the instance cannot be observed now (its
    node is offline): a firing alert stays as it is, nothing new fires."""

    key: str
    labels: Mapping[str, str]
    zh: str
    en: str
    value: float
    since: float | None = None
    held: bool = False


@dataclass(slots=True)
class Alert:
    rule: str
    kind: str
    severity: str
    key: str
    labels: Mapping[str, str]
    zh: str
    en: str
    value: float
    since: float  # when the condition began
    fired: float  # when the alert fired
    resolved: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    status: Literal["firing", "resolved"]
    alert: Alert


@dataclass
class Evaluator:
    """Firing alerts and pending conditions. Pure: :meth:`step` is the only mutation."""

    rules: dict[str, AlertRule] = field(default_factory=dict)
    firing: dict[tuple[str, str], Alert] = field(default_factory=dict)
    pending: dict[tuple[str, str], float] = field(default_factory=dict)
    stale: list[Alert] = field(default_factory=list)

    def set_rules(self, rules: Iterable[AlertRule]) -> None:
        """Replace the rules; alerts of removed or changed rules resolve at the next step (and
        fire again under the new rule if its condition holds)."""
        new = {r.id: r for r in rules}
        for key in [k for k in self.firing if new.get(k[0]) != self.rules.get(k[0])]:
            self.stale.append(self.firing.pop(key))
        for key in [k for k in self.pending if new.get(k[0]) != self.rules.get(k[0])]:
            del self.pending[key]
        self.rules = new

    def restore(self, alerts: Iterable[Alert]) -> None:
        """Alerts that were firing when central stopped (they resolve if no longer true)."""
        for a in alerts:
            self.firing[(a.rule, a.key)] = a

    def step(self, observed: Mapping[str, Iterable[Condition]], now: float) -> list[Transition]:
        """Fire what has held long enough, resolve what no longer holds."""
        out: list[Transition] = []
        for alert in self.stale:
            alert.resolved = now
            out.append(Transition("resolved", alert))
        self.stale.clear()
        live: set[tuple[str, str]] = set()
        for rule_id, conditions in observed.items():
            rule = self.rules.get(rule_id)
            if rule is None:
                continue
            hold = rule.minutes * 60.0
            count = sum(1 for k in self.firing if k[0] == rule_id)
            for c in conditions:
                key = (rule_id, c.key)
                existing = self.firing.get(key)
                if c.held:
                    if existing is not None:
                        live.add(key)
                    continue
                if existing is not None:
                    live.add(key)
                    existing.value, existing.zh, existing.en = c.value, c.zh, c.en
                    continue
                since = c.since if c.since is not None else self.pending.setdefault(key, now)
                if now - since < hold:
                    live.add(key)
                    continue
                if count >= MAX_ALERTS_PER_RULE:
                    continue
                count += 1
                live.add(key)
                alert = Alert(
                    rule_id, rule.kind, rule.severity, c.key, dict(c.labels), c.zh, c.en,
                    c.value, since, now,
                )  # fmt: skip
                self.firing[key] = alert
                out.append(Transition("firing", alert))
        for key in [k for k in self.firing if k not in live]:
            alert = self.firing.pop(key)
            alert.resolved = now
            out.append(Transition("resolved", alert))
        for key in [k for k in self.pending if k not in live]:
            del self.pending[key]
        return out


# -- observing (pure over the runtime's inputs) -------------------------------------------------


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.2f}%"


def _minutes(m: float) -> str:
    return f"{m:g}"


def _node_labels(node_id: str, village_name: Mapping[str, str]) -> dict[str, str]:
    """Labels of a condition about one node: the node, its village's code and name."""
    village = node_id[:12]
    return {"code": village, "node": node_id, "village": village_name.get(village, village)}


def observe_coverage(
    rule: AlertRule, ratio: float, covered: int, villages: int, name: str
) -> list[Condition]:
    assert rule.threshold_pct is not None
    if villages == 0 or ratio * 100 >= rule.threshold_pct:
        return []
    code = rule.code
    return [
        Condition(
            key=code or "all",
            labels={"code": code, "unit": name},
            zh=f"{name}覆盖率 {_pct(ratio)}（{covered}/{villages}）低于 {rule.threshold_pct:g}%",
            en=f"{name} coverage {_pct(ratio)} ({covered}/{villages}) below "
            f"{rule.threshold_pct:g}%",
            value=ratio,
        )
    ]


def observe_offline(
    rule: AlertRule,
    offline: Iterable[tuple[str, float]],
    village_name: Mapping[str, str],
    now: float,
) -> list[Condition]:
    """``offline``: (node id, offline since) of the offline nodes under the rule's code."""
    out = []
    for node_id, since in offline:
        labels = _node_labels(node_id, village_name)
        name = labels["village"]
        out.append(
            Condition(
                key=node_id,
                labels=labels,
                zh=f"节点 {node_id}（{name}）离线超过 {_minutes(rule.minutes)} 分钟",
                en=f"node {node_id} ({name}) offline for more than {_minutes(rule.minutes)} min",
                value=now - since,
                since=since,
            )
        )
    return out


def observe_alarms(
    rule: AlertRule,
    alarms: Iterable[tuple[int, str, str, float]],
    village_name: Mapping[str, str],
    now: float,
) -> list[Condition]:
    """``alarms``: (event id, node id, kind, received at) of open alarms under the code."""
    out = []
    for event_id, node_id, kind, received in alarms:
        labels = _node_labels(node_id, village_name) | {"alarm": str(event_id)}
        name = labels["village"]
        zh_kind, en_kind = _named("event", kind)
        out.append(
            Condition(
                key=str(event_id),
                labels=labels,
                zh=f"{zh_kind}报警（{name}，节点 {node_id}）{_minutes(rule.minutes)} 分钟未确认",
                en=f"{en_kind} alarm ({name}, node {node_id}) not acknowledged in "
                f"{_minutes(rule.minutes)} min",
                value=now - received,
                since=received,
            )
        )
    return out


def observe_backlog(
    rule: AlertRule, depths: Iterable[tuple[str, int]], village_name: Mapping[str, str]
) -> list[Condition]:
    """``depths``: (node id, last reported outbox depth) of nodes under the code."""
    assert rule.backlog is not None
    out = []
    for node_id, depth in depths:
        if depth <= rule.backlog:
            continue
        labels = _node_labels(node_id, village_name)
        name = labels["village"]
        out.append(
            Condition(
                key=node_id,
                labels=labels,
                zh=f"节点 {node_id}（{name}）待发消息 {depth} 条，超过 {rule.backlog}",
                en=f"node {node_id} ({name}) has {depth} messages queued, over {rule.backlog}",
                value=float(depth),
            )
        )
    return out


#: Names of the device kinds in alert texts (zh, en).
_DEVICE_KIND = {
    "camera": ("摄像机", "camera"),
    "conference_terminal": ("会议终端", "conference terminal"),
    "info_system": ("综治信息系统链路", "information-system link"),
}


def _named(prefix: str, code: str) -> tuple[str, str]:
    """(zh, en) name of an event kind or a device health from the dashboard's catalogue; the
    code itself when the catalogue has none (a newer node's kind)."""
    texts = i18n.catalogue().get(f"{prefix}_{code}")
    return (texts["zh-CN"], texts["en"]) if texts else (code, code)


def observe_devices(
    rule: AlertRule,
    devices: Iterable[tuple[str, str, str, str, float, bool]],
    village_name: Mapping[str, str],
    now: float,
) -> list[Condition]:
    """``devices``: (node id, device id, kind, health, since, suppressed) of the devices under
    the code that are not ok; ``since``: when the fault began or the node came back online,
    whichever is later; ``suppressed``: the node is offline (the condition is held)."""
    out = []
    for node_id, device_id, kind, health, since, suppressed in devices:
        labels = _node_labels(node_id, village_name) | {
            "device": device_id,
            "device_kind": kind,
            "health": health,
        }
        name = labels["village"]
        zh_kind, en_kind = _DEVICE_KIND.get(kind, (kind, kind))
        zh_health, en_health = _named("health", health)
        out.append(
            Condition(
                key=f"{node_id}/{device_id}",
                labels=labels,
                zh=f"{zh_kind} {device_id}（{name}，节点 {node_id}）{zh_health}超过 "
                f"{_minutes(rule.minutes)} 分钟",
                en=f"{en_kind} {device_id} ({name}, node {node_id}) {en_health} for more than "
                f"{_minutes(rule.minutes)} min",
                value=now - since,
                since=since,
                held=suppressed,
            )
        )
    return out
