"""The outboxes' writer thread: one thread runs the SQLite work of every outbox in the process,
urgent work first.

One thread, because commits are fsync-bound (more threads would only contend for the same
disk) and the demo must not start a thread per agent (~1,800 in one process). Urgent work (a
transaction that stores an alarm, or reads the next events to send while an alarm waits) goes
ahead of every other queued job of every outbox: an alarm waits for the commit under way, not
for one commit of each of the other outboxes. Each outbox submits one job at a time and waits
for it, so the order of its own work is never changed.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

URGENT, NORMAL = 0, 1


class UrgentFirstExecutor(Executor):
    """A one-thread executor whose queue is ordered by urgency, then by submission. Usable
    with ``loop.run_in_executor`` (normal priority) and :meth:`submit_urgent`."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: list[tuple[int, int, Callable[[], Any], Future[Any]]] = []
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._shutdown = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        return self._put(NORMAL, lambda: fn(*args, **kwargs))

    def submit_urgent(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        return self._put(URGENT, lambda: fn(*args, **kwargs))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._ready:
            self._shutdown = True
            if cancel_futures:
                for *_, fut in self._queue:
                    fut.cancel()
                self._queue.clear()
            self._ready.notify()
            thread = self._thread
        if wait and thread is not None:
            thread.join()

    def _put(self, urgency: int, job: Callable[[], T]) -> Future[T]:
        fut: Future[T] = Future()
        with self._ready:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            heapq.heappush(self._queue, (urgency, next(self._order), job, fut))
            if self._thread is None:
                # Daemon: a commit cut short at exit is rolled back by SQLite; nobody waits.
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
            self._ready.notify()
        return fut

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._shutdown:
                    self._ready.wait()
                if not self._queue:
                    return
                *_, job, fut = heapq.heappop(self._queue)
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = job()
            except BaseException as e:  # handed to the waiting caller, as any executor does
                fut.set_exception(e)
            else:
                fut.set_result(result)
