"""The outboxes' shared writer thread: urgent work (alarms) goes ahead of queued work."""

from __future__ import annotations

import asyncio
import threading

import pytest

from edge.outbox_writer import UrgentFirstExecutor


def test_urgent_jobs_run_before_every_queued_normal_job_and_each_class_keeps_its_order() -> None:
    ex = UrgentFirstExecutor("test-writer")
    ran: list[str] = []
    gate = threading.Event()
    first = ex.submit(gate.wait)  # holds the thread while the rest is queued
    jobs = [ex.submit(ran.append, "n1"), ex.submit(ran.append, "n2")]
    jobs += [ex.submit_urgent(ran.append, "u1"), ex.submit_urgent(ran.append, "u2")]
    jobs.append(ex.submit(ran.append, "n3"))
    gate.set()
    assert first.result(timeout=30) is True
    for j in jobs:
        j.result(timeout=30)
    assert ran == ["u1", "u2", "n1", "n2", "n3"]
    ex.shutdown()


def test_errors_reach_the_caller_and_the_thread_goes_on() -> None:
    ex = UrgentFirstExecutor("test-writer")
    with pytest.raises(ZeroDivisionError):
        ex.submit(lambda: 1 // 0).result(timeout=30)
    assert ex.submit_urgent(lambda: 2).result(timeout=30) == 2
    ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(lambda: 3)


async def test_usable_as_the_loops_executor() -> None:
    ex = UrgentFirstExecutor("test-writer")
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(ex, sum, [1, 2, 3]) == 6
    assert await asyncio.wrap_future(ex.submit_urgent(max, 4, 5)) == 5
    ex.shutdown()
