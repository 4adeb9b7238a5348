"""Webhooks for alerts: one JSON POST per transition (firing or resolved) to a receiver.

The body is Alertmanager-like (webhook ``version`` 4: ``status``, ``alerts[]`` with ``labels``,
``annotations``, ``startsAt``/``endsAt``) plus ``text``, the zh then en line a chat bot
(DingTalk, WeCom) can forward as it is. Each receiver has its own bounded queue and worker, so a
slow or dead receiver delays nobody else and never ingest; retries use capped, fully jittered
exponential backoff; every outcome is counted (``shilian_webhook_deliveries_total{outcome}``).
Nothing queued survives a restart: firing alerts are stored (central.alerting), the deliveries
in flight are not.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp
import prometheus_client

from central.alerts import Transition, WebhookConfig, masked_url

log = logging.getLogger("shilian.central.alerts")

#: Deliveries queued per receiver: a county's uplink failing makes ~200 transitions at once, and
#: a receiver down for an hour should not take central's memory with it; past this the oldest
#: are dropped (counted) since a later transition tells the current state.
WEBHOOK_QUEUE = 1000
#: Backoff between attempts: exponential from 1 s, full jitter, capped at 60 s (STYLE.md).
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def webhook_body(t: Transition) -> dict[str, Any]:
    """An Alertmanager-like webhook message (version 4) for one transition, plus ``text``."""
    a = t.alert
    firing = t.status == "firing"
    zh = ("【告警】" if firing else "【恢复】") + a.zh
    en = ("[FIRING] " if firing else "[RESOLVED] ") + a.en
    labels = {"alertname": a.rule, "kind": a.kind, "severity": a.severity, **a.labels}
    return {
        "version": "4",
        "receiver": "shilian",
        "status": t.status,
        "groupKey": f"{a.rule}:{a.key}",
        "commonLabels": labels,
        "alerts": [
            {
                "status": t.status,
                "labels": labels,
                "annotations": {"summary": a.zh, "summary_en": a.en},
                "startsAt": _iso(a.fired),
                "endsAt": _iso(a.resolved) if a.resolved is not None else None,
                "since": _iso(a.since),
                "value": a.value,
            }
        ],
        "text": f"{zh}\n{en}",
    }


def test_body(by: str, at: float) -> dict[str, Any]:
    """The message an admin's "send a test" delivers: shaped like an alert's (version 4) so the
    receiver's parsing is tried too, with ``status`` "test" and no alerts, so nothing acts on it.
    """
    when = dt.datetime.fromtimestamp(at, dt.timezone(dt.timedelta(hours=8))).strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    return {
        "version": "4",
        "receiver": "shilian",
        "status": "test",
        "groupKey": "test",
        "commonLabels": {"alertname": "test"},
        "alerts": [],
        "text": f"【测试】视联告警推送测试（{by}，{when}），收到即表示推送地址可用"
        f"\n[TEST] shilian webhook test ({by}, {when} CST): this receiver works",
    }


# -- webhooks -----------------------------------------------------------------------------------


class WebhookSender:
    """Delivers transitions to one receiver: bounded queue, one worker, retries with backoff."""

    def __init__(
        self,
        cfg: WebhookConfig,
        outcomes: prometheus_client.Counter,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rand: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.cfg = cfg
        self.shown = masked_url(cfg.url)  # the URL may carry a token: logs get this instead
        self.queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._outcomes = outcomes
        self._sleep = sleep
        self._rand = rand
        self._failing = False

    def put(self, body: dict[str, Any]) -> None:
        if len(self.queue) >= WEBHOOK_QUEUE:
            self.queue.popleft()
            self._outcomes.labels("dropped").inc()
        self.queue.append(body)
        self._wake.set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            await self._wake.wait()
            while self.queue:
                await self._deliver(session, self.queue[0])
                if self.queue:
                    self.queue.popleft()
            self._wake.clear()

    def configure(self, cfg: WebhookConfig) -> None:
        """An admin changed the receiver: what is queued goes to the new address."""
        self.cfg = cfg
        self.shown = masked_url(cfg.url)
        self._failing = False

    async def attempt(
        self, session: aiohttp.ClientSession, body: dict[str, Any]
    ) -> tuple[int | None, str | None]:
        """One POST of ``body``: (HTTP status or None, the problem or None when delivered). The
        problem names the receiver masked, never its secrets."""
        data = json.dumps(body, ensure_ascii=False).encode()
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        try:
            async with session.post(
                self.cfg.url,
                data=data,
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=timeout,
            ) as r:
                await r.read()
                return r.status, None if 200 <= r.status < 300 else f"HTTP {r.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            problem = f"{type(e).__name__}: {e}".replace(self.cfg.url, self.shown)
            return None, problem.rstrip(": ")

    async def _deliver(self, session: aiohttp.ClientSession, body: dict[str, Any]) -> None:
        for attempt in range(self.cfg.max_attempts):
            status, problem = await self.attempt(session, body)
            if problem is None:
                self._outcomes.labels("delivered").inc()
                if self._failing:
                    log.info("告警推送恢复 / webhook %s delivering again", self.shown)
                    self._failing = False
                return
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                # The receiver refuses this message: resending it cannot help.
                self._outcomes.labels("rejected").inc()
                log.warning(
                    "告警推送被拒绝 / webhook %s rejected an alert: %s", self.shown, problem
                )
                return
            if not self._failing:
                log.warning("告警推送失败，将重试 / webhook %s failed: %s", self.shown, problem)
                self._failing = True
            else:
                log.debug("webhook %s attempt %d failed: %s", self.shown, attempt + 1, problem)
            if attempt + 1 < self.cfg.max_attempts:
                self._outcomes.labels("retried").inc()
                await self._sleep(self._rand(0.0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)))
        self._outcomes.labels("failed").inc()
        log.warning(
            "告警推送放弃 / webhook %s: gave up after %d attempts",
            self.shown,
            self.cfg.max_attempts,
        )
