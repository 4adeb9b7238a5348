"""What the long-running agent process carries: ``python -m edge run`` (what ``shilian edge
run`` does too) must exec a process without the CLI framework, so an idle node stays under its
RSS target (bench/edge_footprint.py). Python's own import log (``PYTHONPROFILEIMPORTTIME``, which
survives the exec) shows what each process imported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
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
#: Kept out of the agent by edge.lean_imports: prometheus_client's own HTTP servers and
#: pydantic's plugin discovery (importlib.metadata scanning every installed distribution).
TRIMMED = ("http.server", "socketserver", "wsgiref.simple_server", "importlib.metadata", "zipfile")


def _imported(log: str) -> set[str]:
    """Module names of one process's import log."""
    names = set()
    for line in log.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_agent_process_does_not_import_the_cli_framework(tmp_path: Path, broker: Mosquitto) -> None:
    cfg = tmp_path / "edge.toml"
    metrics_port = free_port()
    cfg.write_text(
        f'node_id = "{NODE}"\n[broker]\nport = {broker.port}\n'
        f'[outbox]\npath = "{tmp_path / "outbox.sqlite3"}"\n'
        f"[metrics]\nport = {metrics_port}\n"
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
            # the trimmed prometheus_client still serves the agent's metrics
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=WAIT_S) as r:
                metrics = r.read().decode()
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
    trimmed = sorted(n for n in agent if n in TRIMMED)
    assert trimmed == [], f"the agent imported {trimmed}"
    assert "shilian_edge_connected 1.0" in metrics


def test_trimmed_libraries_work_and_their_servers_refuse_clearly() -> None:
    """In a process of its own (the trim happens only before the libraries are imported): the
    metric types, exposition and pydantic validation work; prometheus_client's HTTP servers
    raise ServerUnavailable; the stand-ins are gone, so importing the real modules works."""
    script = """
import sys
from edge.lean_imports import ServerUnavailable, trim_imports
trim_imports()
import prometheus_client as p
import pydantic
reg = p.CollectorRegistry()
p.Counter("x", "x", registry=reg).inc()
assert b"x_total 1.0" in p.generate_latest(reg)
class M(pydantic.BaseModel):
    a: int
assert M.model_validate({"a": "2"}).a == 2
try:
    p.start_http_server(0, registry=reg)
except ServerUnavailable as e:
    print("refused:", e)
else:
    raise SystemExit("the stand-in server started")
import http.server
assert http.server.BaseHTTPRequestHandler.__module__ == "http.server"
assert "importlib.metadata" not in sys.modules
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert out.returncode == 0, out.stderr
    assert "refused: prometheus_client's HTTP servers are not loaded" in out.stdout
