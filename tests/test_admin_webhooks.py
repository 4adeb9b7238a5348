"""The webhook receivers from the admin pages' side, over central's whole HTTP app
(tests/central_site.py) and a real HTTP receiver (tests.dashboard_client.Receiver): an admin
changes a receiver without ever seeing its secret URL, sends it a test message and reads what
the receiver answered; both are audited, refused to anyone else, announced on the live stream
to admins only, and the change outlives a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import prometheus_client
import pytest

from central.alerting import AlertTask
from central.alerts import AlertsConfig, WebhookConfig
from central.coverage import CoverageIndex
from central.live import LiveHub, Message, visible
from tests.central_site import NANNING, SECRET_HOOK, XINGNING, CentralSite, admin_site
from tests.central_site import call as _call
from tests.dashboard_client import Receiver


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[CentralSite]:
    async with admin_site(tmp_path) as s:
        yield s


@pytest.fixture
def receiver() -> Any:
    rx = Receiver()
    try:
        yield rx
    finally:
        rx.close()


async def _hooks(http: aiohttp.ClientSession) -> list[dict[str, Any]]:
    status, body = await _call(http, "GET", "/api/v1/alerts")
    assert status == 200
    hooks: list[dict[str, Any]] = body["webhooks"]
    return hooks


async def test_an_admin_changes_a_receiver_and_its_secret_stays_hidden(
    site: CentralSite, receiver: Receiver
) -> None:
    boss = await site.session("boss")
    try:
        (hook,) = await _hooks(boss)
        del hook["queued"]  # the city's coverage alert, waiting for the dead receiver
        assert hook == {
            "id": 1, "url": "http://***@127.0.0.1:9/send?access_token=***&x=***",
            "timeout_s": 5.0, "max_attempts": 8, "source": "config",
        }  # fmt: skip
        secret = f"{receiver.url}?access_token=tok-7f3a9c"
        status, body = await _call(boss, "PATCH", "/api/v1/alerts/webhooks/1", {"url": secret})
        assert status == 200, body
        assert body["url"] == f"{receiver.url}?access_token=***" and body["source"] == "api"
        assert body["timeout_s"] == 5.0 and body["max_attempts"] == 8
        # No URL given: the one set before is kept (the page never has it to send back).
        status, body = await _call(
            boss, "PUT", "/api/v1/alerts/webhooks/1", {"timeout_s": 2, "max_attempts": 3}
        )
        assert status == 200 and body["timeout_s"] == 2 and body["max_attempts"] == 3
        assert body["url"] == f"{receiver.url}?access_token=***"
        status, body = await _call(boss, "POST", "/api/v1/alerts/webhooks/1/test", {})
        assert status == 200, body
        assert body == {
            "id": 1, "url": f"{receiver.url}?access_token=***", "ok": True, "status": 200,
            "error": None,
        }  # fmt: skip
        # What was queued for the old address goes to the new one; the test is sent at once.
        (msg,) = [b for b in receiver.bodies if b["status"] == "test"]
        assert site.sample("shilian_webhook_tests_total", outcome="delivered") == 1
        assert msg["status"] == "test" and msg["alerts"] == []
        zh, en = msg["text"].split("\n")
        assert zh.startswith("【测试】视联告警推送测试（boss，") and en.startswith("[TEST] shilian")
        # The audit log says who changed and tested which receiver, without the secret.
        status, log = await _call(boss, "GET", "/api/v1/audit?action=webhook_change")
        assert [(e["user"], e["target"]) for e in log["entries"]] == [("boss", "1"), ("boss", "1")]
        assert log["entries"][1]["detail"]["fields"] == ["url"]
        assert log["entries"][0]["detail"]["fields"] == ["max_attempts", "timeout_s"]
        status, log = await _call(boss, "GET", "/api/v1/audit?action=webhook_test")
        (entry,) = log["entries"]
        assert entry["outcome"] == "ok" and entry["detail"]["status"] == 200
        everything = (await _call(boss, "GET", "/api/v1/audit?limit=200"))[1]
        assert "tok-7f3a9c" not in str(everything) and "hunter2" not in str(everything)
    finally:
        await boss.close()
    # Stored: central started again over the same file sends to the admin's receiver.
    again = AlertTask(
        AlertsConfig(webhooks=[WebhookConfig(url=SECRET_HOOK)]),
        site.db,
        NANNING,
        CoverageIndex(NANNING),
        lambda: [],
        LiveHub(CoverageIndex(NANNING), lambda v: (), lambda: 0.0),
        prometheus_client.CollectorRegistry(),
        lambda: site.clock[0],
    )
    stop = asyncio.Event()
    stop.set()
    await again.run(stop)
    assert again.senders[0].cfg == WebhookConfig(url=secret, timeout_s=2, max_attempts=3)


async def test_a_failing_test_says_why_and_bad_changes_are_refused(
    site: CentralSite, receiver: Receiver
) -> None:
    boss = await site.session("boss")
    try:
        # The configured receiver (port 9) refuses connections: the answer names it masked.
        status, body = await _call(boss, "POST", "/api/v1/alerts/webhooks/1/test", {})
        assert status == 200 and body["ok"] is False and body["status"] is None
        assert "127.0.0.1:9" in body["error"] and "hunter2" not in body["error"]
        receiver.statuses = [503]
        await _call(boss, "PATCH", "/api/v1/alerts/webhooks/1", {"url": receiver.url})
        status, body = await _call(boss, "POST", "/api/v1/alerts/webhooks/1/test", {})
        assert (body["ok"], body["status"], body["error"]) == (False, 503, "HTTP 503")
        (entry,) = [
            e
            for e in (await _call(boss, "GET", "/api/v1/audit?action=webhook_test"))[1]["entries"]
            if e["detail"]["status"] == 503
        ]
        assert entry["outcome"] == "failed"
        assert site.sample("shilian_webhook_tests_total", outcome="failed") == 2
        status, body = await _call(boss, "PATCH", "/api/v1/alerts/webhooks/1", {"url": "ftp://x"})
        assert status == 400 and body["error"]["code"] == "bad_webhook"
        assert body["error"]["message"].startswith("推送地址设置无效：url：")
        status, body = await _call(boss, "PATCH", "/api/v1/alerts/webhooks/1", {"timeout_s": 0})
        assert status == 400 and "timeout_s" in body["error"]["message"]
        status, body = await _call(boss, "PATCH", "/api/v1/alerts/webhooks/1", {"secret": "x"})
        assert status == 400 and body["error"]["code"] == "bad_webhook"
        for n in ("2", "0", "x"):
            status, body = await _call(boss, "PATCH", f"/api/v1/alerts/webhooks/{n}", {})
            assert status == 404 and body["error"]["code"] == "unknown_webhook"
        assert (await _hooks(boss))[0]["url"] == receiver.url  # nothing refused was kept
    finally:
        await boss.close()
    for name, code in (("op", "forbidden"), ("xadmin", "out_of_scope")):
        http = await site.session(name)
        try:
            for method, path in (
                ("PATCH", "/api/v1/alerts/webhooks/1"),
                ("POST", "/api/v1/alerts/webhooks/1/test"),
            ):
                status, body = await _call(http, method, path, {"url": "http://evil.example/"})
                assert status == 403 and body["error"]["code"] == code, (name, method, body)
        finally:
            await http.close()


async def test_changes_are_announced_to_admins_on_the_live_stream(site: CentralSite) -> None:
    boss = await site.session("boss")
    try:
        async with boss.get("/api/v1/live") as stream:
            assert (await stream.content.readline()).startswith(b"retry:")
            await _call(boss, "PATCH", "/api/v1/alerts/webhooks/1", {"max_attempts": 2})
            rule = {"id": "xn-live", "kind": "node_offline", "code": XINGNING, "minutes": 5}
            await _call(boss, "POST", "/api/v1/alerts/rules", rule)
            await _call(boss, "POST", "/api/v1/users/op/disabled", {"disabled": True})
            seen: list[bytes] = []
            while len(seen) < 3:
                line = await asyncio.wait_for(stream.content.readline(), 30)
                if line.startswith(b"event: admin"):
                    seen.append(await stream.content.readline())
    finally:
        await boss.close()
    assert seen == [
        b'data: {"what":"webhooks","by":"boss"}\n',
        b'data: {"what":"rules","by":"boss"}\n',
        b'data: {"what":"users","by":"boss"}\n',
    ]
    # Viewers and operators are not told (the message is for the admin pages).
    message = Message("admin", {"what": "users", "by": "boss"})
    assert visible(message, "", admin=True) and not visible(message, "", admin=False)
