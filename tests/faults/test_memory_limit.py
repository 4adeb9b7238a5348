"""Central and the edge agent each in a cgroup with a 1 GiB memory limit (the smallest box we
ship on), under load: they stay inside it, are never OOM-killed, and lose nothing (docs/faults.md,
row 95). The peak memory and the limit's events are measured (``make reliability`` writes them
to docs/reliability.md).

- edge: a backlog built while the broker is away (the outbox on disk, not in memory), then
  drained to a real central; every event arrives once.
- central: ``shilian simulate``, thousands of real MQTT nodes with health and events, checked
  against central's API by the simulator's own verdict (long form only: starting thousands of
  connections takes longer than ``make test`` allows).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shilian.broker import Mosquitto
from tests.faults.backlog import stored_seqs
from tests.faults.cgroup import MemoryCgroup
from tests.faults.test_network_faults import LONG, NODE, exactly_once, record, wait
from tests.processes import ADMIN, ADMIN_PASSWORD, Central, Edge

#: The limit: the 1 GB village box (and the smallest central VM we document).
LIMIT = 1 << 30
#: Events built up while the broker is away.
BACKLOG = 100_000 if LONG else 5_000
#: Bound on the drain (a stop for a hung run, not a figure): ~1,000 events/s measured here.
DRAIN_WITHIN_S = max(180.0, BACKLOG / 200)
#: Simulated nodes and seconds per phase against central (long form).
SIM_NODES, SIM_PHASE_S = 5000, 60


def _seqs(db: Path) -> list[int]:
    """The node's event seqs central stored, in storage order (one boot: the agent runs on)."""
    return [q for (node, _), seqs in stored_seqs(db).items() if node == NODE for q in seqs]


def _count(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
        row = c.execute("SELECT count(*) FROM events WHERE node_id = ?", (NODE,)).fetchone()
        return int(row[0])


def test_edge_in_1_gib_drains_a_backlog_without_oom_or_loss(
    broker: Mosquitto, tmp_path: Path
) -> None:
    central = Central(tmp_path / "central", broker.port)
    edge = Edge(tmp_path / "edge", NODE, broker.port, keepalive_s=5, health_interval_s=5.0)
    with MemoryCgroup(LIMIT) as cg:
        edge.args = cg.wrap(edge.args)
        try:
            central.start()
            edge.start()
            sent = edge.emit(10)
            wait(lambda: _seqs(central.db) == sent, "first events at central")
            broker.stop()  # the village is cut off: everything waits in the outbox
            t0 = time.monotonic()
            sent += edge.emit(BACKLOG)
            built_s = time.monotonic() - t0
            broker.start()
            t1 = time.monotonic()
            drain_s = wait(
                lambda: _count(central.db) >= len(sent), "the backlog at central", DRAIN_WITHIN_S
            )
            time.sleep(1.0)
            exactly_once(_seqs(central.db), sent)
            assert edge.p is not None and edge.p.poll() is None, "the agent died"
            f = cg.figures()
            assert f["oom_kill"] == 0 and f["peak_bytes"] <= LIMIT, f
            record("memory_1g_edge", limit_mib=LIMIT >> 20, backlog=BACKLOG,
                   build_s=round(built_s, 1), recover_s=round(time.monotonic() - t1, 2),
                   drain_s=round(drain_s, 2), peak_mib=round(f["peak_bytes"] / 2**20, 1),
                   **{k: v for k, v in f.items() if k != "peak_bytes"}, lost=0,
                   duplicated=0)  # fmt: skip
        finally:
            edge.close()
            central.close()


@pytest.mark.skipif(not LONG, reason="long form: make reliability")
def test_central_in_1_gib_serves_a_simulated_fleet_without_oom(
    broker: Mosquitto, tmp_path: Path
) -> None:
    central = Central(tmp_path / "central", broker.port)
    env = {**os.environ, "SHILIAN_PASSWORD": ADMIN_PASSWORD}
    with MemoryCgroup(LIMIT) as cg:
        central.args = cg.wrap(central.args)
        try:
            central.start()
            t0 = time.monotonic()
            sim = subprocess.run(
                [sys.executable, "-m", "shilian", "simulate", "--nodes", str(SIM_NODES),
                 "--coverage", "0.8", "--phase", str(SIM_PHASE_S), "--settle", "20",
                 "--health-interval", "30", "--event-interval", "30", "--poll", "2",
                 "--broker", f"127.0.0.1:{broker.port}", "--check", central.api,
                 "--user", ADMIN],
                capture_output=True, text=True, env=env, timeout=1800,
            )  # fmt: skip
            assert sim.returncode == 0, sim.stdout[-3000:] + sim.stderr[-3000:]
            assert central.p is not None and central.p.poll() is None, "central died"
            f = cg.figures()
            assert f["oom_kill"] == 0 and f["peak_bytes"] <= LIMIT, f
            record("memory_1g_central", limit_mib=LIMIT >> 20, nodes=SIM_NODES,
                   run_s=round(time.monotonic() - t0, 1),
                   peak_mib=round(f["peak_bytes"] / 2**20, 1),
                   **{k: v for k, v in f.items() if k != "peak_bytes"}, lost=0,
                   duplicated=0)  # fmt: skip
        finally:
            central.close()


def test_the_limit_is_enforced() -> None:
    """The harness can fail: a process that needs more than its cgroup's limit is stopped."""
    with MemoryCgroup(64 << 20) as cg:
        hog = subprocess.run(
            cg.wrap([sys.executable, "-c", "b = bytearray(128 << 20); b[::4096] = b'x' * 32768"]),
            capture_output=True,
            timeout=60,
        )
        f = cg.figures()
    assert hog.returncode != 0
    assert f["oom_kill"] >= 1, f
