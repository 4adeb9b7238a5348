"""What central's log says while its broker is unreachable: one warning when the link goes
down, naming when the next attempt is (so a duty officer reading the journal knows central is
still trying, and when), the retries below it, one line when it is back."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

from central.config import BrokerConfig
from central.link import Inbound, MqttLink
from shilian.broker import Mosquitto, free_port


async def test_an_unreachable_broker_is_logged_once_with_the_next_try(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG, logger="shilian.central")
    port = free_port()

    async def handle(_: list[Inbound]) -> None:
        return None

    link = MqttLink(BrokerConfig(host="127.0.0.1", port=port), handle, rng=lambda: 0.5)
    task = asyncio.create_task(link.run())
    broker: Mosquitto | None = None
    try:
        for _ in range(600):  # until two retries failed (a 60 s deadline, polled)
            if sum("still unreachable" in r.message for r in caplog.records) >= 2:
                break
            await asyncio.sleep(0.1)
        broker = Mosquitto(workdir=tmp_path, port=port)
        broker.start()
        for _ in range(600):
            if link.connected:
                break
            await asyncio.sleep(0.1)
        assert link.connected
    finally:
        link.stop()
        await asyncio.wait_for(task, 30)
        if broker is not None:
            broker.stop()
    mine = [r for r in caplog.records if r.name.startswith("shilian.central")]
    warnings = [r.getMessage() for r in mine if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert re.search(r"下次重试 \d+\.\d 秒后（\d\d:\d\d:\d\d）", warnings[0]), warnings[0]
    assert re.search(r"next try in \d+\.\d s at \d\d:\d\d:\d\d", warnings[0]), warnings[0]
    assert any(r.levelno == logging.INFO and "reconnected" in r.getMessage() for r in mine)
