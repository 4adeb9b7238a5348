"""A worker process of the simulator: it holds one slice of the fleet (node ``i`` belongs to
worker ``i mod workers``), every node a connection and a coroutine, and carries out the plan's
changes for its slice.

Run as ``python -m shilian.simulate.worker``. It talks to its parent over stdin/stdout, one JSON
object a line: it reads ``{"spec": …, "index": k}``, connects its nodes (at its share of the start
rate) and answers ``{"ready": connected, "nodes": n}``; it reads ``{"go": <unix time>}``, the
common start every worker counts the plan from, and then reports ``{"t", "connected",
"connects", "events", "rss_kb"}`` every second (``events``: events its nodes have sent); end of
input (or SIGTERM) stops every node cleanly, and a last report follows the stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import signal
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

from registry import Registry
from resilience.backoff import Backoff
from shilian.simulate.node import SimNode
from shilian.simulate.plan import Plan, SimSpec, Timeline, make_plan

#: Seconds between status lines to the parent.
STATUS_S = 1.0
#: Longest wait for a worker's nodes to be connected before it answers ``ready`` anyway (the
#: parent's check will then show what is missing).
READY_TIMEOUT_S = 120.0
#: Seconds a clean stop of every node may take before the process leaves regardless.
STOP_DRAIN_S = 10.0


def ssl_context(spec: SimSpec) -> ssl.SSLContext | None:
    if not spec.tls_ca:
        return None
    ctx = ssl.create_default_context(cafile=spec.tls_ca)
    if spec.tls_cert:
        ctx.load_cert_chain(spec.tls_cert, spec.tls_key)
    return ctx


def build_nodes(spec: SimSpec, plan: Plan, index: int) -> dict[int, SimNode]:
    """This worker's nodes by their index in the plan; each node's jitter and boot id come from
    its own generator seeded from the spec's seed and its index, whatever the worker count."""
    ctx = ssl_context(spec)
    nodes = {}
    for i in range(index, spec.nodes, spec.workers):
        rng = random.Random(spec.seed * 1_000_003 + i)
        nodes[i] = SimNode(
            plan.node_ids[i],
            spec.host,
            spec.port,
            spec.health_interval_s,
            Backoff(rng.random, base=spec.backoff_base_s, cap=spec.backoff_cap_s),
            spec.connect_timeout_s,
            skew_s=plan.skew_s[i],
            event_interval_s=spec.event_interval_s,
            ssl_context=ctx,
            rng=rng,
        )
    return nodes


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run_worker() -> None:
    stdin = await _lines()
    first = json.loads(await stdin.readline())
    spec, index = SimSpec.model_validate(first["spec"]), int(first["index"])
    plan = make_plan(spec, Registry.from_package(spec.scope))
    nodes = build_nodes(spec, plan, index)
    timeline = Timeline([c for c in plan.changes if c.index in nodes])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    rate = spec.start_rate_per_s / spec.workers
    async with asyncio.TaskGroup() as tg:
        for k, node in enumerate(nodes.values()):
            tg.create_task(node.run(stop))
            if k % 50 == 49:
                await asyncio.sleep(50 / rate)
        await _until(lambda: all(n.connected for n in nodes.values()), READY_TIMEOUT_S)
        _say({"ready": sum(n.connected for n in nodes.values()), "nodes": len(nodes)})
        line = await _line_or_stop(stdin, stop)
        start = time.time()
        if line:
            start = float(json.loads(line)["go"])
            tg.create_task(_follow(timeline, nodes, start, stop))
            tg.create_task(_status(nodes, start, stop))
            await _line_or_stop(stdin, stop)  # anything more, or end of input: stop
        stop.set()
        await _until(lambda: not any(n.connected for n in nodes.values()), STOP_DRAIN_S)
    _say(_status_line(nodes, start))


async def _until(cond: Callable[[], bool], within_s: float) -> None:
    """Poll ``cond`` (node flags, set by thousands of coroutines: no event to wait on)."""
    deadline = time.monotonic() + within_s
    while not cond() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)


async def _line_or_stop(stdin: asyncio.StreamReader, stop: asyncio.Event) -> bytes:
    """The parent's next line; empty at end of input or once ``stop`` is set (SIGTERM)."""
    line = asyncio.ensure_future(stdin.readline())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({line, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if line.done():
        return line.result()
    line.cancel()
    return b""


async def _follow(
    timeline: Timeline, nodes: dict[int, SimNode], start: float, stop: asyncio.Event
) -> None:
    while not stop.is_set() and (at := timeline.next_at()) is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, start + at - time.time()))
        for change in timeline.due(time.time() - start):
            node = nodes[change.index]
            node.down("cut") if change.action == "down" else node.up()


def _status_line(nodes: dict[int, SimNode], start: float) -> dict[str, Any]:
    return {
        "t": round(time.time() - start, 2),
        "connected": sum(n.connected for n in nodes.values()),
        "connects": sum(n.connects for n in nodes.values()),
        "events": sum(n.seq for n in nodes.values()),
        "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


async def _status(nodes: dict[int, SimNode], start: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        _say(_status_line(nodes, start))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), STATUS_S)


def main() -> None:
    # Each node holds one socket: raise the soft limit to the hard one (10,000 nodes need it).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(run_worker())


if __name__ == "__main__":
    main()
