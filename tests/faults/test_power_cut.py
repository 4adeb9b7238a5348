"""Power cut at the village box: the agent dies (``kill -9``) mid-stream and the disk keeps only
what was synced (tests/faults/power.py). The agent restarted on that disk image must lose no event
it had acknowledged as stored to its local sender (docs/faults.md, row 2: committed with
``synchronous=FULL`` before ``accept`` returns).

Real mosquitto, real central, the real agent under strace. The second test shows the model can
fail: the same power cut on a WAL file committed with ``synchronous=NORMAL`` loses acknowledged
rows.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shilian.broker import Mosquitto
from tests.faults.power import STRACE_ARGS, as_on_disk
from tests.faults.test_network_faults import LONG, NODE, exactly_once, record, wait
from tests.peers import program
from tests.processes import Central, Edge

#: Seconds of events before the cut: long enough for a few outbox checkpoints in the long form.
STREAM_S = 20.0 if LONG else 3.0
#: Emit requests in flight on the local socket (a busy alarm board and camera sources).
PIPELINE = 16


class Emitter(threading.Thread):
    """Emits events over the agent's local socket until it dies; keeps the seqs it acknowledged
    (a reply means "stored"), in the order acknowledged."""

    def __init__(self, sock: Path) -> None:
        super().__init__()
        self.sock, self.acked, self.stop = sock, list[int](), threading.Event()

    def run(self) -> None:
        req = json.dumps({"op": "emit", "priority": "info", "kind": "test", "data": {}}) + "\n"
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(30)
                s.connect(str(self.sock))
                f = s.makefile("rb")
                while not self.stop.is_set():
                    s.sendall(req.encode() * PIPELINE)
                    for _ in range(PIPELINE):
                        line = f.readline()
                        if not line:
                            return
                        reply = json.loads(line)
                        assert reply["ok"], reply
                        self.acked.append(int(reply["seq"]))
        except (OSError, ValueError):
            return  # the agent died mid-reply: what was acknowledged is in self.acked


def _child(pid: int) -> int:
    """The one child process of ``pid`` (the agent that strace started)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if kids:
            return int(kids[0])
        time.sleep(0.05)
    raise AssertionError("strace started no process")


def _central_seqs(db: Path) -> list[int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
        rows = c.execute("SELECT seq FROM events WHERE node_id = ? ORDER BY id", (NODE,))
        return [int(r[0]) for r in rows]


def _depth(outbox: Path) -> int:
    probe = outbox.parent / "probe"
    probe.mkdir()
    for p in outbox.parent.glob(outbox.name + "*"):
        shutil.copy2(p, probe / p.name)
    with sqlite3.connect(probe / outbox.name) as c:
        n = int(c.execute("SELECT count(*) FROM events").fetchone()[0])
    shutil.rmtree(probe)
    return n


def test_an_agent_restarted_after_a_power_cut_loses_no_acknowledged_event(
    broker: Mosquitto, tmp_path: Path
) -> None:
    strace = program("strace", "apt-get install strace")
    central = Central(tmp_path / "central", broker.port)
    edge = Edge(tmp_path / "edge", NODE, broker.port, keepalive_s=5, health_interval_s=2.0)
    trace = tmp_path / "edge.strace"
    edge.args = [strace, *STRACE_ARGS, "-o", str(trace), "--", *edge.args]
    after: Edge | None = None
    try:
        central.start()
        edge.start()
        emitter = Emitter(edge.sock)
        emitter.start()
        time.sleep(STREAM_S)
        assert edge.p is not None
        agent = _child(edge.p.pid)
        os.kill(agent, signal.SIGKILL)  # the power goes: mid-stream, mid-write
        edge.p.wait(30)  # strace ends with its tracee: no write of the agent is still under way
        edge.p = None
        emitter.join(30)
        acked = emitter.acked
        assert acked, "no event was acknowledged before the cut"

        disk = tmp_path / "after" / "disk"
        files = as_on_disk(edge.workdir, disk, trace, "outbox.sqlite3")
        assert files["outbox.sqlite3-wal"].syncs > 0, "the trace saw no sync of the outbox"
        after = Edge(tmp_path / "after", NODE, broker.port, keepalive_s=5, health_interval_s=2.0)
        conf = tmp_path / "after" / "edge.toml"
        own = f'path = "{tmp_path / "after" / "outbox.sqlite3"}"'
        assert own in conf.read_text()
        conf.write_text(conf.read_text().replace(own, f'path = "{disk / "outbox.sqlite3"}"'))
        in_image = _depth(disk / "outbox.sqlite3")
        t0 = time.monotonic()
        after.start()
        recovered = wait(
            lambda: set(acked) <= set(_central_seqs(central.db)), "every acknowledged event"
        )
        recover_s = time.monotonic() - t0
        time.sleep(1.0)  # anything still in flight lands before the final count
        stored = _central_seqs(central.db)
        assert len(stored) == len(set(stored)), "duplicates stored"
        assert stored == sorted(stored), "out of order"
        kept = set(acked)
        exactly_once([q for q in stored if q in kept], sorted(acked))
        record("power_cut", stream_s=STREAM_S, acked=len(acked), stored=len(stored),
               in_disk_image=in_image,
               unsynced_bytes_dropped=sum(f.unsynced_bytes() for f in files.values()),
               syncs=sum(f.syncs for f in files.values()),
               recover_s=round(recover_s, 2), drain_s=round(recovered, 2),
               lost=0, duplicated=0)  # fmt: skip
    finally:
        for p in (after, edge, central):
            if p is not None:
                p.close()


_WRITER = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute(f"PRAGMA synchronous={sys.argv[2]}")
c.execute("CREATE TABLE t(i INTEGER)")
for i in range(50):
    c.execute("INSERT INTO t VALUES (?)", (i,))
    print(i, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize(("synchronous", "survive"), [("FULL", True), ("NORMAL", False)])
def test_the_power_cut_model_keeps_synced_commits_and_drops_the_rest(
    tmp_path: Path, synchronous: str, survive: bool
) -> None:
    strace = program("strace", "apt-get install strace")
    data, trace = tmp_path / "data", tmp_path / "w.strace"
    data.mkdir()
    w = subprocess.Popen(
        [strace, *STRACE_ARGS, "-o", str(trace), "--", sys.executable, "-c", _WRITER,
         str(data / "x.db"), synchronous],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert w.stdout is not None
        committed = [int(w.stdout.readline()) for _ in range(50)]
        os.kill(_child(w.pid), signal.SIGKILL)
        w.wait(30)
    finally:
        w.kill()
        w.wait()
    as_on_disk(data, tmp_path / "disk", trace, "x.db")
    with sqlite3.connect(tmp_path / "disk" / "x.db") as c:
        has_table = c.execute("SELECT 1 FROM sqlite_master WHERE name = 't'").fetchone()
        kept = [int(r[0]) for r in c.execute("SELECT i FROM t ORDER BY i")] if has_table else []
    if survive:
        assert kept == committed
    else:
        assert len(kept) < len(committed), "a commit without a sync survived the power cut"
