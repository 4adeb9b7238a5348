"""An alarm does not wait for a main-lane batch of history to be written.

Central in-process against a real mosquitto and a real SQLite file. A large batch of history is
being written (central's own ingest path, in slices); an alarm a node publishes meanwhile on the
alarm lane joins the transaction under way at the next slice boundary, which is committed at
once: the alarm is committed with the slices before it, in one commit, and long before the
batch's last slice is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

import wire
from central.config import BrokerConfig, CentralConfig, HttpConfig, StoreConfig
from central.ingest import Outcome
from central.link import MAX_BATCH, Inbound
from central.service import SLICE, CentralService
from shilian.broker import Mosquitto

VILLAGE = "450102001003"
NODE = f"{VILLAGE}-a"
ALARM_NODE = f"{VILLAGE}-b"
BOOT = uuid.uuid4().hex
#: The history batch: several of the main link's largest, so that the alarm (published when the
#: batch's first message is handled) certainly arrives while it is being written.
HISTORY = 5 * MAX_BATCH
#: Upper bound of any wait on the shared machine (not a timing assertion).
WAIT_S = 60.0


async def _wait_for(cond: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not cond():  # noqa: ASYNC110  # a condition on several objects, not an event
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _central(broker: Mosquitto, tmp_path: Path) -> AsyncIterator[CentralService]:
    cfg = CentralConfig(
        broker=BrokerConfig(port=broker.port, client_id="central-" + uuid.uuid4().hex[:6]),
        store=StoreConfig(path=tmp_path / "central.db"),
        http=HttpConfig(port=0),
    )
    svc = CentralService(cfg)
    task = asyncio.create_task(svc.run())
    try:
        await _wait_for(
            lambda: (
                task.done()
                or (
                    svc._started.is_set()
                    and svc.link.subscribed.is_set()
                    and svc.alarm_link is not None
                    and svc.alarm_link.subscribed.is_set()
                )
            ),
            "central up",
        )
        if task.done():
            task.result()
        yield svc
    finally:
        svc.stop()
        await asyncio.wait_for(task, WAIT_S)


def _history(n: int) -> list[Inbound]:
    topic = wire.Topics(NODE).event
    return [
        Inbound(
            topic,
            wire.encode(
                wire.Event(
                    node=NODE, boot_id=BOOT, seq=seq, ts=1.0, priority=wire.Priority.INFO, kind="h"
                )
            ),
            False,
            None,
        )
        for seq in range(1, n + 1)
    ]


def _alarm() -> tuple[str, bytes]:
    msg = wire.Event(
        node=ALARM_NODE, boot_id=BOOT, seq=1, ts=2.0, priority=wire.Priority.ALARM, kind="panic"
    )
    return wire.Topics(ALARM_NODE).event_for(wire.Priority.ALARM), wire.encode(msg)


async def test_an_alarm_is_committed_before_the_main_batchs_last_slice(
    broker: Mosquitto, tmp_path: Path
) -> None:
    node = paho.Client(CallbackAPIVersion.VERSION2, client_id="n-" + uuid.uuid4().hex[:6])
    node.connect("127.0.0.1", broker.port)
    node.loop_start()
    try:
        async with _central(broker, tmp_path) as svc:
            trail: list[str] = []  # "main" / "alarm" per message handled, "commit" per commit
            lock = threading.Lock()  # commits run on the store's thread
            handle, commit = svc.ingest.handle, svc.store.commit
            history = _history(HISTORY)
            sent = threading.Event()

            def handled(
                topic: str, payload: bytes, now: float, mono: float | None = None
            ) -> Outcome:
                with lock:
                    trail.append("alarm" if topic.endswith("/alarm") else "main")
                    if not sent.is_set():
                        sent.set()  # the main batch is under way: the node raises an alarm
                        node.publish(*_alarm(), qos=1)
                    elif "alarm" not in trail:
                        # History handled slowly until the alarm is in: however fast this
                        # machine, the batch is still under way when the alarm reaches central.
                        time.sleep(0.001)
                return handle(topic, payload, now, mono)

            def committed() -> None:
                commit()
                with lock:
                    trail.append("commit")

            svc.ingest.handle = handled  # type: ignore[method-assign]
            svc.store.commit = committed  # type: ignore[method-assign]
            started = time.monotonic()
            await svc._handle_batch(history)
            await _wait_for(lambda: "alarm" in trail and trail[-1] == "commit", "the alarm")
            assert time.monotonic() - started < WAIT_S
    finally:
        node.loop_stop()
        node.disconnect()
    main_done = [i for i, t in enumerate(trail) if t == "main"]
    assert len(main_done) == len(history)
    last_slice = main_done[-SLICE]  # the first message of the batch's last slice
    alarm_at = trail.index("alarm")
    alarm_committed = trail.index("commit", alarm_at)
    assert alarm_committed < last_slice, (
        f"the alarm was committed after {sum(1 for i in main_done if i < alarm_committed)} of "
        f"{len(history)} history messages"
    )
    # It joined the transaction under way: no commit of its own between the history handled
    # before it and itself, and no history handled between it and its commit.
    assert trail[alarm_at - 1] == "main", "the history before the alarm was committed apart"
    assert alarm_committed == alarm_at + 1, "history was written between the alarm and its commit"
    # Everything once: the whole batch and the alarm are in the events table.
    with contextlib.closing(sqlite3.connect(tmp_path / "central.db")) as db:
        rows = dict(db.execute("SELECT node_id, COUNT(DISTINCT seq) FROM events GROUP BY node_id"))
    assert rows == {NODE: HISTORY, ALARM_NODE: 1}
