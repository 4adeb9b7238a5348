"""Soak, short form (``make soak-central`` runs the long one: 10,000 nodes for 30 minutes):
simulated nodes at steady state against a real mosquitto and a real central process; at the end
every event the nodes sent is stored once and covered by central's stored-acknowledgements, and
central's coverage matched the truth throughout. The memory and CPU figures are the long form's
(not asserted here: a short run on a shared machine says nothing about growth).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "faults" / "soak.py"


def test_a_steady_fleet_loses_nothing_and_central_shows_the_truth() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            *("--nodes", "200", "--minutes", "0.4", "--event-interval", "2"),
            *("--warmup", "5", "--sample", "5", "--settle", "8", "--poll", "2"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["events_sent"] > 1000  # 200 nodes, one event every 2 s each, for 24 s
    assert figures["health_stored"] > 0  # first reports come within one interval (30 s)
    assert figures["lost"] == 0
    assert figures["duplicated"] == 0
    assert figures["not_acked"] == 0
    assert figures["coverage_ok"], figures
    assert figures["mismatches"] == 0
