"""The demo's simulated fleet: one real edge :class:`~edge.agent.Agent` per simulated node, all in
one process, each a real MQTT client with its own durable outbox, birth and last will. What
happens when comes from the pure :class:`~shilian.churn.ChurnPlan`.

Run as ``python -m shilian.fleet --port P --workdir DIR``; SIGTERM/SIGINT ends every agent as
a power cut would (their wills fire), at once."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from edge.agent import Agent, AgentNotRunning
from edge.config import EdgeConfig
from edge.outbox import OutboxError
from registry import Registry
from shilian.churn import Action, ChurnPlan, SimDevice, Step
from wire.devices import device_state

log = logging.getLogger("shilian.fleet")

#: Agents started per second at start-up: ~1,400 connects would otherwise hit the broker and this
#: process in one burst; this spreads the storm over a few seconds.
START_RATE_PER_S = 300.0


@dataclass
class _Running:
    agent: Agent
    stop: asyncio.Event
    task: asyncio.Task[None]


class Fleet:
    def __init__(
        self, host: str, port: int, workdir: Path, health_interval_s: float, plan: ChurnPlan
    ) -> None:
        self.host, self.port, self.workdir = host, port, workdir
        self.health_interval_s = health_interval_s
        self.plan = plan
        self.running: dict[str, _Running] = {}

    def _config(self, node_id: str) -> EdgeConfig:
        return EdgeConfig.model_validate(
            {
                "node_id": node_id,
                "broker": {"host": self.host, "port": self.port, "keepalive_s": 30},
                "health_interval_s": self.health_interval_s,
                "outbox": {"path": str(self.workdir / f"{node_id}.sqlite3")},
                "metrics": {"enabled": False},
                "local_socket": {"path": str(self.workdir / f"{node_id}.sock")},
                "shutdown_flush_s": 2.0,
            }
        )

    def _start(self, tg: asyncio.TaskGroup, node_id: str) -> None:
        if node_id in self.running:
            return
        agent = Agent(self._config(node_id), serve_metrics=False, serve_local_socket=False)
        stop = asyncio.Event()
        task = tg.create_task(self._guarded(node_id, agent, stop), name=f"agent {node_id}")
        self.running[node_id] = _Running(agent, stop, task)

    async def _guarded(self, node_id: str, agent: Agent, stop: asyncio.Event) -> None:
        # One simulated node failing must not take the other 1,800 down with it: log it loudly
        # and leave that village offline, as a broken box would.
        devices = asyncio.create_task(self._devices(node_id, agent), name=f"devices {node_id}")
        try:
            await agent.run(stop)
        except Exception:
            log.exception("fleet: agent %s failed", node_id)
            self.running.pop(node_id, None)
        finally:
            devices.cancel()

    async def _devices(self, node_id: str, agent: Agent) -> None:
        """Once the agent runs: its devices' retained states, as its probes would publish them
        (again after every restart: the plan keeps their current health)."""
        await agent.started.wait()
        with contextlib.suppress(AgentNotRunning):
            for d in self.plan.devices.get(node_id, []):
                await self._set_device(agent, d)

    @staticmethod
    async def _set_device(agent: Agent, d: SimDevice) -> None:
        await agent.sink.set_device(d.device_id, d.kind, device_state(d.health), d.name, d.detail())

    async def _apply(self, tg: asyncio.TaskGroup, step: Step) -> None:
        r = self.running.get(step.node_id)
        if step.action is Action.START:
            self._start(tg, step.node_id)
        elif r is None:
            return
        elif step.action is Action.CRASH:
            del self.running[step.node_id]
            await r.agent.crash()
            r.task.cancel()
        elif step.action is Action.STOP:
            del self.running[step.node_id]
            r.stop.set()
        elif step.action is Action.EVENT and r.agent.started.is_set():
            # An agent still starting or already stopping refuses events; the plan moves on.
            with contextlib.suppress(OutboxError):
                await r.agent.sink.emit(step.priority, step.kind, None, {"simulated": True})
        elif step.action is Action.DEVICE and r.agent.started.is_set() and step.device:
            # The contract: the retained state, and a device_health event for the change.
            d = step.device
            with contextlib.suppress(OutboxError, AgentNotRunning):
                await self._set_device(r.agent, d)
                await r.agent.sink.emit("device", "device_health", d.device_id, d.detail())

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            for i, step in enumerate(self.plan.initial()):
                if stop.is_set():
                    break
                await self._apply(tg, step)
                if i % 50 == 49:
                    await asyncio.sleep(50 / START_RATE_PER_S)
            log.info("fleet: %d nodes started of %d", len(self.running), len(self.plan.nodes))
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                for step in self.plan.step(time.monotonic()):
                    await self._apply(tg, step)
            # The demo ends as a power cut for every box: drop every connection (the broker
            # publishes the wills) and leave without closing ~1,400 SQLite files one fsync at a
            # time. Nothing is lost by it: every accepted event is already committed.
            for r in self.running.values():
                await r.agent.crash()
            log.info("fleet: %d agents cut off", len(self.running))
            logging.shutdown()
            os._exit(0)


def _raise_fd_limit() -> None:
    # Each agent holds a socket and an SQLite database (with its WAL): ~5 fds.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _main(args: argparse.Namespace) -> None:
    registry = Registry.from_package(args.city)
    villages = [u.code for u in registry.villages()]
    plan = ChurnPlan(villages, args.share, random.Random(args.seed), start_time=time.time())
    fleet = Fleet(args.host, args.port, Path(args.workdir), args.health_interval, plan)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await fleet.run(stop)


def main() -> None:
    p = argparse.ArgumentParser(description="shilian demo fleet / 演示节点群")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--city", default="4501")
    p.add_argument("--share", type=float, default=0.7688)
    p.add_argument("--workdir", required=True)
    p.add_argument("--health-interval", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    _raise_fd_limit()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
