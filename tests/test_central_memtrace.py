"""central/memtrace.py: off without its environment variable; with it, SIGUSR2 writes a
tracemalloc snapshot that loads and compares."""

from __future__ import annotations

import asyncio
import os
import signal
import tracemalloc
from pathlib import Path

import pytest

from central import memtrace

#: Upper bound of any wait on the shared machine (not a timing assertion).
WAIT_S = 30.0


async def test_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(memtrace.ENV, raising=False)
    assert memtrace.install(asyncio.get_running_loop()) is None
    assert not tracemalloc.is_tracing()


async def test_sigusr2_writes_a_snapshot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(memtrace.ENV, str(tmp_path / "snaps"))
    loop = asyncio.get_running_loop()
    try:
        assert memtrace.install(loop) == tmp_path / "snaps"
        for n in (1, 2):
            os.kill(os.getpid(), signal.SIGUSR2)
            path = tmp_path / "snaps" / f"snapshot-{n}.tracemalloc"
            async with asyncio.timeout(WAIT_S):
                while not path.exists():  # noqa: ASYNC110  # written by the signal handler
                    await asyncio.sleep(0.01)
    finally:
        loop.remove_signal_handler(signal.SIGUSR2)
        tracemalloc.stop()
    first, second = (
        tracemalloc.Snapshot.load(str(tmp_path / "snaps" / f"snapshot-{n}.tracemalloc"))
        for n in (1, 2)
    )
    second.compare_to(first, "lineno")  # loads and compares
