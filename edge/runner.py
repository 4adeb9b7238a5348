"""The long-running agent process: ``python -m edge.runner --config FILE``.

``shilian edge run`` execs this module (same PID, so signals and supervisors see one process)
so the agent does not carry the CLI framework and the other subcommands' imports: an idle node
must stay small (bench/edge_footprint.py: RSS <= 40 MB). Exit codes: 0 clean stop, 1 bad config
or an outbox file that cannot be used (e.g. written by a newer release).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from pathlib import Path

from edge.lean_imports import trim_imports

# First: the modules below import prometheus_client and pydantic (edge.lean_imports says why).
trim_imports()

from edge.agent import Agent  # noqa: E402
from edge.config import ConfigError, EdgeConfig, load_config  # noqa: E402
from edge.outbox import OutboxError  # noqa: E402
from edge.sdnotify import Notifier  # noqa: E402
from edge.texts import text  # noqa: E402

log = logging.getLogger("shilian.edge")


def _give_back_memory() -> None:
    """Free the start-up garbage (pymalloc hands arenas left empty back to the OS).

    Deliberately no glibc ``malloc_trim`` through ctypes: ctypes and libffi stay resident and
    cost more than the trim returns (net ~0.2 MB worse, docs/edge.md). The one-malloc-arena cap
    comes from ``MALLOC_ARENA_MAX`` in the environment that ``shilian edge run`` sets.
    """
    gc.collect()


async def serve(cfg: EdgeConfig) -> None:
    """Run one agent until SIGTERM/SIGINT; a second SIGINT exits at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    agent = Agent(cfg)
    notifier = Notifier()  # systemd (deploy/shilian-edge.service); a no-op elsewhere

    def on_signal(sig: int) -> None:
        if stop.is_set() and sig == signal.SIGINT:
            os._exit(130)  # second Ctrl-C: every accepted event is already on disk
        if not stop.is_set():
            notifier.stopping(f"stopping: flushing {_pending(agent)} pending")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(agent.run(stop))
            await agent.started.wait()
            _give_back_memory()
            notifier.ready(_status(agent))
            # Pinged from this loop: a hung loop stops the pings and systemd restarts us.
            watchdog = tg.create_task(notifier.watchdog(lambda: _status(agent)))
            await task
            watchdog.cancel()
    finally:
        notifier.close()


def _pending(agent: Agent) -> int:
    return agent.outbox.depth if agent.outbox is not None else 0


def _status(agent: Agent) -> str:
    """systemd's STATUS= line (``systemctl status`` shows it)."""
    link = "connected" if agent.connected else "disconnected"
    return f"{link}, {_pending(agent)} pending"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("--config", "-c"):
        print("usage: python -m edge.runner --config FILE", file=sys.stderr)
        return 2
    try:
        cfg = load_config(Path(args[1]))
    except ConfigError as e:
        print(text("config_errors", n=len(e.problems)), file=sys.stderr)
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        asyncio.run(serve(cfg))
    except (OutboxError, ExceptionGroup) as e:
        err = _outbox_error(e)
        if err is None:
            raise
        print(err, file=sys.stderr)  # e.g. an outbox file from a newer release (zh/en)
        return 1
    return 0


def _outbox_error(e: BaseException) -> OutboxError | None:
    """The outbox error behind ``e`` (the task groups wrap it), if that is what ended us."""
    if isinstance(e, OutboxError):
        return e
    if isinstance(e, BaseExceptionGroup):
        for sub in e.exceptions:
            if (found := _outbox_error(sub)) is not None:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())
