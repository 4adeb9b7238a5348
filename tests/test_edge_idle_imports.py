"""What the long-running agent process carries: ``python -m edge run`` (what ``shilian edge
run`` does too) must exec a process without the CLI framework, so an idle node stays under its
RSS target (bench/edge_footprint.py). Python's own import log (``PYTHONPROFILEIMPORTTIME``, which
survives the exec) shows what each process imported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from shilian.broker import Mosquitto, free_port

from .processes import WAIT_S, wait_for

NODE = "450102001001-a"
ROOT = Path(__file__).resolve().parents[1]
#: First line of each process's import log (CPython's -X importtime format).
IMPORT_LOG_HEADER = "import time: self [us] | cumulative | imported package"
#: The CLI's framework: only the short-lived CLI process may import these.
CLI_ONLY = ("typer", "click", "rich")
#: Loaded only when cameras are configured (FFmpeg through PyAV: ~22 MB of RSS) or ONVIF /
#: camera probing is on: an agent without cameras never imports them.
CAMERA_ONLY = ("av", "edge.camera_source", "edge.picture", "edge.rtsp", "edge.onvif")
#: Loaded only while a meeting is set up (WebRTC: aiortc, aioice, their crypto and codecs): an
#: agent that answers calls but has none never imports them.
MEETING_ONLY = ("aiortc", "aioice", "pylibsrtp", "edge.meeting_media")
#: Never loaded by the agent: paho-mqtt's optional DNS SRV support would import dnspython
#: (~5 MB of RSS) although the agent never asks for SRV records (edge/aiomqtt_adapter.py).
NEVER = ("dns",)


def _imported(log: str) -> set[str]:
    """Module names of one process's import log."""
    names = set()
    for line in log.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_agent_process_does_not_import_the_cli_framework(tmp_path: Path, broker: Mosquitto) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'node_id = "{NODE}"\n[broker]\nport = {broker.port}\n'
        f'[outbox]\npath = "{tmp_path / "outbox.sqlite3"}"\n'
        f"[metrics]\nport = {free_port()}\n"
        f'[local_socket]\npath = "{tmp_path / "edge.sock"}"\n'
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONPROFILEIMPORTTIME="1")
    err = tmp_path / "stderr.txt"
    with err.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(cfg)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
        try:
            # connected: everything the idle agent needs has been imported
            wait_for(lambda: "connected (birth_seq" in err.read_text(), WAIT_S, "agent connected")
            pid_cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(WAIT_S) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # same PID, now the agent module (systemd and the bench watch this PID)
    assert b"edge.runner" in pid_cmdline
    logs = err.read_text().split(IMPORT_LOG_HEADER)
    # the CLI process's log, then the exec'd agent's
    assert len(logs) == 3, f"expected two processes' import logs, got {len(logs) - 1}"
    cli, agent = _imported(logs[1]), _imported(logs[2])
    assert "typer" in cli  # the CLI did parse the command line with typer
    assert {"edge.agent", "edge.outbox", "wire"} <= agent  # (edge.runner runs as __main__)
    carried = sorted(n for n in agent if n.split(".")[0] in CLI_ONLY)
    assert carried == [], f"the agent process imported {carried}"
    camera = sorted(n for n in agent if n in CAMERA_ONLY or n.split(".")[0] == "av")
    assert camera == [], f"the agent without cameras imported {camera}"
    assert "edge.meetings" in agent  # meetings are on: the agent listens for calls
    meeting = sorted(n for n in agent if n.split(".")[0] in MEETING_ONLY or n in MEETING_ONLY)
    assert meeting == [], f"the agent without a call imported {meeting}"
    # (the log names an import that was tried, so paho's attempt at dns.resolver shows: the
    # package itself must never load)
    never = sorted(n for n in agent if n in NEVER)
    assert never == [], f"the agent imported {never}"
