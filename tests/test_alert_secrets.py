"""Alert rules and webhook targets over the real HTTP app: webhook URLs are write-only secrets
(masked, and only for admins), and rules are narrowed to the caller's scope."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from central.alert_routes import ALERTS
from central.alerts import masked_url
from tests.central_site import QINGXIU, SECRET_HOOK, XINGNING, CentralSite, central_site

SECRETS = ("hunter2", "s3cr3t-value", "bot:")


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[CentralSite]:
    async with central_site(tmp_path) as s:
        yield s


async def _get(site: CentralSite, user: str, path: str) -> tuple[str, dict[str, Any]]:
    async with await site.session(user) as http, http.get(path) as r:
        assert r.status == 200, await r.text()
        text = await r.text()
        return text, json.loads(text)


def test_masked_url_hides_userinfo_query_values_and_token_paths() -> None:
    assert masked_url(SECRET_HOOK) == "http://***@127.0.0.1:9/send?access_token=***&x=***"
    assert masked_url("http://10.0.0.5:8080/alert") == "http://10.0.0.5:8080/alert"
    feishu = "https://open.feishu.cn/open-apis/bot/v2/hook/3f7a1c2e-9b8d-4e6f-a1b2-c3d4e5f6a7b8"
    assert masked_url(feishu) == "https://open.feishu.cn/open-apis/bot/v2/hook/***"
    assert masked_url("https://h.example/x#frag") == "https://h.example/x#***"


async def test_webhook_targets_are_masked_for_admins_and_hidden_from_others(
    site: CentralSite,
) -> None:
    site.user("boss", "admin")
    site.user("watcher", "viewer")
    site.user("xn-op", "operator", XINGNING)
    text, body = await _get(site, "boss", "/api/v1/alerts")
    assert [w["url"] for w in body["webhooks"]] == [
        "http://***@127.0.0.1:9/send?access_token=***&x=***"
    ]
    for who in ("watcher", "xn-op"):
        text, body = await _get(site, who, "/api/v1/alerts")
        assert body["webhooks"] == []
        assert not any(s in text for s in SECRETS), text
        assert "127.0.0.1:9" not in text


async def test_rules_are_narrowed_to_the_callers_scope(site: CentralSite) -> None:
    site.user("boss", "admin")
    site.user("xn-op", "operator", XINGNING)
    _, everything = await _get(site, "boss", "/api/v1/alerts")
    assert {r["id"] for r in everything["rules"]} == {"xingning-off", "qingxiu-off", "city-cov"}
    for path in ("/api/v1/alerts", "/api/v1/alerts/rules"):
        text, body = await _get(site, "xn-op", path)
        assert [r["id"] for r in body["rules"]] == ["xingning-off"], path
        assert QINGXIU not in text


class Lines(logging.Handler):
    """Log lines of one logger; ``seen`` is set at the first line naming the receiver's host."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if "127.0.0.1:9" in self.lines[-1]:
            self.seen.set()


async def test_webhook_failures_are_logged_without_the_secret(site: CentralSite) -> None:
    lines = Lines()
    logger = logging.getLogger("shilian.central.alerts")
    logger.addHandler(lines)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        site.app[ALERTS].senders[0].put({"text": "probe"})
        async with asyncio.timeout(10):
            await lines.seen.wait()
    finally:
        logger.removeHandler(lines)
        logger.setLevel(old_level)
    logged = "\n".join(lines.lines)
    assert not any(s in logged for s in SECRETS), logged
