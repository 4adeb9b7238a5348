"""The simulator's supervisor: it spawns the worker processes, hands each the same spec, starts
them together once every node is connected, restarts the broker when the scenario says so, and
samples central's coverage against the plan's phases.

One process holds a few thousand nodes (docs/scale.md); beyond :data:`NODES_PER_WORKER` the
fleet is spread over several."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from registry import Registry
from shilian.broker import die_with_parent
from shilian.simulate.check import CentralCoverage, Verdict
from shilian.simulate.plan import Plan, SimSpec, make_plan

#: Nodes one worker process holds by default: one Python process on this class of machine keeps
#: 10,000 idle connections, but a reconnect storm of that many is CPU-bound in one process, so
#: a second core takes half (docs/scale.md).
NODES_PER_WORKER = 5000
#: Seconds between the go signal and the common start: every worker reads it before the start.
START_MARGIN_S = 0.5
#: Longest wait for every worker's ``ready`` (its own connect timeout is shorter).
READY_WAIT_S = 180.0


def default_workers(nodes: int) -> int:
    return max(1, math.ceil(nodes / NODES_PER_WORKER))


@dataclass
class WorkerStatus:
    nodes: int = 0
    ready: int = 0
    connected: int = 0
    connects: int = 0
    #: Events the worker's nodes have sent (QoS 1; every node's seq of its boot), final once
    #: :meth:`Simulation.run` has returned.
    events: int = 0
    rss_kb: int = 0


@dataclass
class Simulation:
    """One run. ``start`` (Unix time) is set when the workers are told to go; ``samples`` holds
    central's figures as read (seconds after the start, figures by unit code)."""

    spec: SimSpec
    plan: Plan
    central: CentralCoverage | None = None
    poll_s: float = 1.0
    restart: Callable[[], Awaitable[None]] | None = None
    start: float | None = None
    workers: list[WorkerStatus] = field(default_factory=list)
    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    verdict: Verdict | None = None
    log: Callable[[str], None] = print

    @classmethod
    def of(cls, spec: SimSpec, **kw: Any) -> Simulation:
        return cls(spec, make_plan(spec, Registry.from_package(spec.scope)), **kw)

    @property
    def connected(self) -> int:
        return sum(w.connected for w in self.workers)

    async def run(self) -> bool:
        """Run the scenario to its end; True when central showed what it must (or no check)."""
        self.verdict = Verdict(self.plan.phases)
        self.workers = [WorkerStatus() for _ in range(self.spec.workers)]
        procs = [await self._spawn(k) for k in range(self.spec.workers)]
        try:
            async with asyncio.TaskGroup() as tg:
                readers = [tg.create_task(self._read(k, p)) for k, p in enumerate(procs)]
                await self._until_ready(readers)
                self.start = time.time() + START_MARGIN_S
                go = json.dumps({"go": self.start}).encode() + b"\n"
                for p in procs:
                    assert p.stdin is not None
                    p.stdin.write(go)
                self.log(
                    f"开始 / start: {sum(w.ready for w in self.workers)}/{self.spec.nodes} "
                    f"节点已连接 / nodes connected, {len(procs)} 个进程 / processes"
                )
                if self.plan.restart_at is not None and self.restart is not None:
                    tg.create_task(self._restart_at(self.plan.restart_at))
                if self.central is not None:
                    tg.create_task(self._poll())
                await asyncio.sleep(self.start + self.plan.end - time.time())
                for p in procs:
                    assert p.stdin is not None
                    p.stdin.close()
                for p in procs:
                    if await p.wait() != 0:
                        raise RuntimeError(
                            f"模拟进程出错退出 / a simulator worker failed ({p.returncode})"
                        )
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
        return self.verdict.ok if self.central is not None else True

    async def _spawn(self, k: int) -> asyncio.subprocess.Process:
        p = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shilian.simulate.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        assert p.stdin is not None
        p.stdin.write(json.dumps({"spec": self.spec.model_dump(), "index": k}).encode() + b"\n")
        return p

    async def _read(self, k: int, p: asyncio.subprocess.Process) -> None:
        assert p.stdout is not None
        w = self.workers[k]
        async for line in p.stdout:
            msg = json.loads(line)
            if "ready" in msg:
                w.ready, w.nodes, w.connected = msg["ready"], msg["nodes"], msg["ready"]
            else:
                w.connected, w.connects, w.rss_kb = msg["connected"], msg["connects"], msg["rss_kb"]
                w.events = msg["events"]

    async def _until_ready(self, readers: list[asyncio.Task[None]]) -> None:
        deadline = time.monotonic() + READY_WAIT_S
        while not all(w.nodes for w in self.workers):
            if any(r.done() for r in readers):
                raise RuntimeError("模拟进程已退出 / a simulator worker exited while starting")
            if time.monotonic() > deadline:
                raise RuntimeError("模拟进程未就绪 / simulator workers not ready in time")
            await asyncio.sleep(0.1)

    async def _restart_at(self, at: float) -> None:
        assert self.start is not None and self.restart is not None
        await asyncio.sleep(max(0.0, self.start + at - time.time()))
        self.log(f"t={at:.0f}s 重启代理 / restarting the broker")
        await self.restart()

    async def _poll(self) -> None:
        assert self.start is not None and self.central is not None and self.verdict is not None
        while (t := time.time() - self.start) <= self.plan.end:
            try:
                figures = await self.central.figures(self.spec.scope)
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
                figures = {}  # counted as missing in any phase being checked
            t = time.time() - self.start
            self.samples.append((t, figures))
            for m in self.verdict.add(t, figures)[:3]:
                self.log("不符 / mismatch: " + m.describe())
            await asyncio.sleep(self.poll_s)
