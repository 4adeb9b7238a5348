"""The board link's fault counters in the edge's Prometheus /metrics move under injected faults:
bit errors on the line (the simulator flips bits in both directions) and a cut cable. Real
``shilian edge run`` subprocess, board simulator on a pty, real mosquitto."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware_bridge.simulator import simulate_board
from shilian.broker import Mosquitto, free_port
from tests.processes import Edge, wait_for
from tests.test_edge_sia import metric

NODE = "450102001003-a"
PRESSES = 20
DEV = {"device": "alarm_board"}


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


@pytest.mark.slow
async def test_link_counters_move_under_noise_and_a_cut(broker: Mosquitto, tmp_path: Path) -> None:
    metrics_port = free_port()
    async with simulate_board(seed=3, n_inputs=4, noise=0.02) as sim:
        edge = Edge(tmp_path / "edge", NODE, broker.port, keepalive_s=5)
        conf = tmp_path / "edge" / "edge.toml"
        text = conf.read_text(encoding="utf-8").replace(
            "[metrics]\nenabled = false\n",
            f'[metrics]\nenabled = true\nhost = "127.0.0.1"\nport = {metrics_port}\n',
        )
        zones = "".join(
            f'[[alarm_board.zones]]\ninput = {i}\nkind = "panic"\ndebounce_ms = 0\n'
            for i in range(1, 5)
        )
        conf.write_text(text + f'[alarm_board]\ndevice = "{sim.slave_path}"\n' + zones)
        try:
            await asyncio.to_thread(edge.start)

            async def until(pred: Callable[[str], bool], what: str) -> str:
                def check() -> str | None:
                    m = _scrape(metrics_port)
                    return m if pred(m) else None

                return await asyncio.to_thread(wait_for, check, 90.0, what)

            for i in range(PRESSES):
                sim.press(1 + i % 4)
                await asyncio.sleep(0.05)
            m = await until(
                lambda m: (
                    metric(m, "shilian_edge_board_alarms_emitted_total", **DEV) == 2 * PRESSES
                ),
                "every press and release stored",
            )
            frame_errors = sum(
                metric(m, "shilian_edge_board_frame_errors_total", fault=f, **DEV)
                for f in ("crc", "cobs", "short", "oversize")
            )
            assert frame_errors > 0, "bit errors were injected: frames must have been dropped"
            assert metric(m, "shilian_edge_board_link_up", **DEV) == 1
            assert "shilian_edge_board_naks_sent_total" in m
            assert "shilian_edge_board_duplicates_total" in m
            assert metric(m, "shilian_edge_events_deduplicated_total") == 0
            acked = metric(m, "shilian_edge_board_events_acked_total", **DEV)
            assert acked == 2 * PRESSES

            sim.set_noise(0.0)
            handshakes = metric(m, "shilian_edge_board_handshakes_total", **DEV)
            sim.cut(4.0)  # longer than the 3 s link timeout
            await until(
                lambda m: (
                    metric(m, "shilian_edge_board_link_up", **DEV) == 0
                    and metric(m, "shilian_edge_board_link_downs_total", reason="timeout", **DEV)
                    >= 1
                ),
                "link down counted",
            )
            await until(
                lambda m: (
                    metric(m, "shilian_edge_board_link_up", **DEV) == 1
                    and metric(m, "shilian_edge_board_handshakes_total", **DEV) > handshakes
                ),
                "link up again after the cut",
            )
        finally:
            edge.close()
