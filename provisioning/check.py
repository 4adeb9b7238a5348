"""The commissioning check: is this node really in service?

Steps, in order (each retried until its deadline, since a freshly started agent needs a few
seconds): the broker is reachable over TLS with this node's certificate; central has seen the
node's birth (``GET /api/v1/nodes/{id}`` says online); health reports arrive; this box's clock
agrees with central's (HTTP ``Date`` header). The result is a :class:`Report`, saved as JSON.
"""

from __future__ import annotations

import email.utils
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.tls_probe import HandshakeFailed, tls_handshake

#: Seconds each step may take before it is declared failed (a 4G uplink, an agent starting).
STEP_TIMEOUT_S = 60.0
#: Pause between attempts of a step.
RETRY_S = 0.5
#: Largest clock difference accepted: the Date header has 1 s resolution; certificate validity
#: and event timestamps tolerate a few seconds, not minutes.
MAX_CLOCK_SKEW_S = 10.0
#: Timeout of one network operation.
IO_TIMEOUT_S = 10.0

STEPS = ("tls", "birth", "health", "clock")
STEP_TITLES = {
    "tls": "代理 TLS 可达 / broker reachable over TLS",
    "birth": "中心收到上线消息 / birth seen by central",
    "health": "健康报告到达 / health arriving",
    "clock": "时钟与中心同步 / clock in sync with central",
}


@dataclass
class StepResult:
    step: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class Report:
    node_id: str
    central: str
    started_at: float
    steps: list[StepResult] = field(default_factory=list)
    technician: str = ""
    #: The box's local devices as found by ``provision discover`` (:func:`devices_from_state`).
    devices: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return len(self.steps) == len(STEPS) and all(s.ok for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "central": self.central,
            "started_at": self.started_at,
            "ok": self.ok,
            "technician": self.technician,
            "steps": [asdict(s) for s in self.steps],
            "devices": self.devices,
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=2), "utf-8")


#: Devices listed in a report at most (a village has a few cameras, a board, a terminal).
MAX_REPORT_DEVICES = 64


def devices_from_state(discovered: dict[str, Any] | None) -> list[dict[str, str]]:
    """The devices ``provision discover`` found, as report rows: kind (``camera``,
    ``alarm_board``, ``conference_terminal``), name, address and a short detail."""
    found = discovered or {}
    rows: list[dict[str, str]] = []
    for c in found.get("cameras") or []:
        xaddrs = c.get("xaddrs") or []
        rows.append(
            {
                "kind": "camera",
                "name": str(c.get("name") or c.get("hardware") or ""),
                "address": str(c.get("source") or (xaddrs[0] if xaddrs else "")),
                "detail": str(c.get("hardware") or ""),
            }
        )
    board = found.get("board")
    if board:
        rows.append(
            {
                "kind": "alarm_board",
                "name": str(board.get("board_id") or ""),
                "address": str(board.get("device") or ""),
                "detail": f"fw {board.get('fw_version') or '?'}, {board.get('n_inputs') or 0} in",
            }
        )
    for t in found.get("sip") or []:
        if t.get("reachable"):
            rows.append(
                {
                    "kind": "conference_terminal",
                    "name": str(t.get("user_agent") or ""),
                    "address": str(t.get("address") or ""),
                    "detail": f"SIP {t.get('status') or ''} {t.get('reason') or ''}".strip(),
                }
            )
    return [{k: v[:128] for k, v in r.items()} for r in rows[:MAX_REPORT_DEVICES]]


class StepFailed(Exception):
    """One attempt of a step failed; the message says why (zh / en)."""


@dataclass(frozen=True, slots=True)
class CheckTarget:
    node_id: str
    central: str  # http://host:port
    broker_host: str
    broker_port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    #: The enrolment token: central's commissioning status route accepts it for a week after
    #: enrolment (a technician has no operator login). None: the operator API (no login).
    token: str | None = None


def check_tls(t: CheckTarget) -> str:
    """The broker accepts this node's certificate (see :func:`edge.tls_probe.tls_handshake`)."""
    try:
        return tls_handshake(
            t.broker_host, t.broker_port, t.ca_file, t.cert_file, t.key_file, IO_TIMEOUT_S
        )
    except HandshakeFailed as e:
        raise StepFailed(str(e)) from None


def central_refusal(e: urllib.error.HTTPError) -> str:
    """What central said when it refused a request (its ``error.message``, Chinese then
    English), else the bare status: the technician is told why, not just a number."""
    try:
        message = json.load(e)["error"]["message"]
    except (ValueError, KeyError, TypeError, OSError):
        return f"HTTP {e.code}"
    return f"HTTP {e.code}: {message}" if isinstance(message, str) else f"HTTP {e.code}"


def _get_node(t: CheckTarget) -> tuple[dict[str, Any], str | None]:
    url = f"{t.central.rstrip('/')}/api/v1/nodes/{t.node_id}"
    headers = {}
    if t.token:
        url += "/commissioning/status"
        headers["Authorization"] = f"Bearer {t.token}"
    try:
        req = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(req, timeout=IO_TIMEOUT_S) as r:
            return json.load(r), r.headers.get("Date")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise StepFailed("中心尚未见过本节点 / central has not seen this node yet") from None
        raise StepFailed(f"中心拒绝 / central refused: {central_refusal(e)}") from None
    except (OSError, ValueError) as e:
        raise StepFailed(f"无法访问中心 / cannot reach central: {e}") from None


def check_birth(t: CheckTarget) -> str:
    node, _ = _get_node(t)
    if node.get("state") != "online":
        raise StepFailed(f"节点状态为 {node.get('state')} / node state is {node.get('state')}")
    return "online"


def check_health(t: CheckTarget) -> str:
    node, _ = _get_node(t)
    health = node.get("health") or []
    count = health if isinstance(health, int) else len(health)
    if not count:
        raise StepFailed("中心尚未收到健康报告 / no health report at central yet")
    return f"{count} report(s)"


def check_clock(t: CheckTarget) -> str:
    before = time.time()
    _, date = _get_node(t)
    after = time.time()
    if not date:
        raise StepFailed("中心未返回 Date 头 / central sent no Date header")
    central = email.utils.parsedate_to_datetime(date).timestamp()
    # Date is truncated to the second: central's time lies within [central, central + 1).
    skew = (before + after) / 2 - (central + 0.5)
    if abs(skew) > MAX_CLOCK_SKEW_S:
        raise StepFailed(
            f"本机时钟与中心相差 {skew:+.0f} 秒，请校时（NTP）/ "
            f"clock differs from central's by {skew:+.0f} s: fix NTP"
        )
    return f"skew {skew:+.1f} s"


CHECKS: dict[str, Callable[[CheckTarget], str]] = {
    "tls": check_tls,
    "birth": check_birth,
    "health": check_health,
    "clock": check_clock,
}


def run_check(
    target: CheckTarget,
    *,
    timeout_s: float = STEP_TIMEOUT_S,
    on_step: Callable[[str], None] = lambda step: None,
    on_result: Callable[[StepResult], None] = lambda r: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    technician: str = "",
) -> Report:
    """Run the steps in order; stop at the first one that fails (the next ones depend on it)."""
    report = Report(target.node_id, target.central, time.time(), technician=technician[:64])
    for step in STEPS:
        on_step(step)
        t0 = clock()
        deadline = t0 + timeout_s
        while True:
            try:
                detail = CHECKS[step](target)
                result = StepResult(step, True, detail, clock() - t0)
                break
            except StepFailed as e:
                if clock() >= deadline:
                    result = StepResult(step, False, str(e), clock() - t0)
                    break
                sleep(RETRY_S)
        report.steps.append(result)
        on_result(result)
        if not result.ok:
            break
    return report
