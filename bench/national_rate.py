"""The whole country's health traffic against one ingest process on PostgreSQL: 620,573 node ids
(several per village of the packaged Nanning registry, which is the scope an ingest process
accepts), a health report per node per 30 s (~20,686 msg/s) and events at 1 % of that, for
``--seconds`` (120), through a real mosquitto into ``shilian central run --role ingest`` (a shared
group of one member) on a scratch PostgreSQL database.

The publishers (``--publishers`` processes, QoS 1, paced to the target rate, each its share of
the nodes in turn) stamp each message's ``ts`` when they send it. Measured:

- ``offered_msg_per_s``: messages the broker acknowledged to the publishers per second; when it
  is below the target (``offered_short``: this machine cannot offer the national rate), no
  headroom is claimed (``headroom`` null) and ``stored_msg_per_s`` says what was stored;
- ``stored_msg_per_s``: rows stored (health + events) over the span of their ``recv_ts``;
- ``ingest_cpu_share``: the ingest process's CPU time over the publishing time (1.0 = one core;
  the process runs its ingest on one core at a time);
- ``headroom``: 1 / ``ingest_cpu_share``, how many times the offered rate the ingest process's
  core could take, only when the national rate was offered, everything offered was stored and
  the p99 delay stayed under the health interval; PostgreSQL's own CPU is not in it (it is on
  another host in production, on this one here);
- ``p99_delay_ms``: health ``recv_ts - ts`` (publisher's send to central's handling);
- ``coverage_p99_ms``: per node, its first report's send to the node's ``state_since`` (online
  in the ``nodes`` table that coverage counts), 99th percentile;
- ``rss_mb``: the ingest process's highest resident memory, sampled every second.

    python bench/national_rate.py [--seconds 120] [--nodes 620573] [--publishers 2]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import wire
from registry import Registry
from shilian.broker import Mosquitto

ADMIN_URL = os.environ.get("SHILIAN_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
NATIONAL_NODES = 620_573
HEALTH_INTERVAL_S = 30.0
EVENT_SHARE = 0.01
#: Unacknowledged QoS 1 messages per publisher (paho's window).
PUBLISH_INFLIGHT = 1000
#: How long central may take to store what was offered after the publishers stop.
DRAIN_TIMEOUT_S = 300.0
#: Pacing step of a publisher: it sends what the target rate owes every this many seconds.
TICK_S = 0.01


def node_ids(n: int) -> list[str]:
    villages = [u.code for u in Registry.from_package("4501").villages()]
    return [f"{villages[i % len(villages)]}-n{i // len(villages)}" for i in range(n)]


#: (sent, acknowledged, first send, last acknowledgement) of one publisher.
Result = tuple[int, int, float, float]


def publisher(
    port: int,
    nodes: list[str],
    rate: float,
    seconds: float,
    q: mp.Queue[Result],
) -> None:
    """Publish ``nodes``' health in turn at ``rate`` msg/s (events at 1 % more) for ``seconds``;
    put (sent, acknowledged, first send, last acknowledgement) on ``q``."""
    acked = 0
    last_ack = 0.0
    lock = threading.Lock()

    def on_publish(c: paho.Client, u: object, mid: int, rc: object, p: object) -> None:
        nonlocal acked, last_ack
        with lock:
            acked += 1
            last_ack = time.time()

    c = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"nat-pub-{secrets.token_hex(4)}",
        protocol=paho.MQTTv5,
    )  # fmt: skip
    c.max_inflight_messages_set(PUBLISH_INFLIGHT)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    boots: dict[str, str] = {}
    seqs: dict[str, int] = {}
    sent = 0
    k = 0
    t0 = time.time()
    next_event = 0.0
    while True:
        now = time.time()
        if now - t0 >= seconds:
            break
        owed = int((now - t0) * rate) - sent
        # Never more than the in-flight window unacknowledged: what the broker does not take is
        # not offered (paho would otherwise queue it in memory and the rate would be a fiction).
        room = PUBLISH_INFLIGHT - (sent - acked)
        if owed <= 0 or room <= 0:
            time.sleep(TICK_S)
            continue
        for _ in range(min(owed, room)):
            nid = nodes[k % len(nodes)]
            k += 1
            boot = boots.get(nid)
            if boot is None:
                boot = boots[nid] = uuid.uuid4().hex
            ts = time.time()
            h = wire.Health(node=nid, boot_id=boot, ts=ts, interval_s=HEALTH_INTERVAL_S,
                            uptime_s=100.0, sw_version="1.0.0", cpu_pct=3.0, mem_used_pct=40.0,
                            disk_used_pct=50.0, outbox_depth=0)  # fmt: skip
            c.publish(wire.Topics(nid).health, wire.encode(h), qos=1)
            sent += 1
            next_event += EVENT_SHARE
            if next_event >= 1.0:
                next_event -= 1.0
                seq = seqs[nid] = seqs.get(nid, 0) + 1
                e = wire.Event(node=nid, boot_id=boot, seq=seq, ts=ts,
                               priority=wire.Priority.INFO, kind="patrol_checkin")  # fmt: skip
                c.publish(wire.Topics(nid).event, wire.encode(e), qos=1)
                sent += 1
    deadline = time.time() + 60
    while time.time() < deadline:
        with lock:
            if acked >= sent:
                break
        time.sleep(0.05)
    c.disconnect()
    c.loop_stop()
    q.put((sent, acked, t0, last_ack))


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scalar(url: str, sql: str) -> float | None:
    with psycopg.connect(url) as c:
        row = c.execute(sql).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--nodes", type=int, default=NATIONAL_NODES)
    ap.add_argument("--publishers", type=int, default=2)
    a = ap.parse_args()
    health_rate = a.nodes / HEALTH_INTERVAL_S
    target = health_rate * (1 + EVENT_SHARE)
    load_before = os.getloadavg()
    ids = node_ids(a.nodes)
    name = f"shilian_bench_{secrets.token_hex(5)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    peak_rss = 0.0
    try:
        with tempfile.TemporaryDirectory(prefix="shilian-national-") as tmp:
            work = Path(tmp)
            (work / "broker").mkdir()
            broker = Mosquitto(work / "broker")
            broker.start()
            conf = work / "central.toml"
            conf.write_text(
                f'[store]\nurl = "{url}"\n[registry]\ndefault_scope = "4501"\n'
                f'[broker]\nhost = "127.0.0.1"\nport = {broker.port}\nclient_id = "{name}"\n'
                f'[ingest]\nshared_group = "{name}"\nmembers = 1\n',
                encoding="utf-8",
            )
            log = work / "ingest.log"
            with log.open("ab") as f:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "shilian", "central", "run", "--role", "ingest",
                     "-c", str(conf)],
                    stdout=f, stderr=subprocess.STDOUT,
                )  # fmt: skip
            try:
                deadline = time.monotonic() + 120
                while "subscribed" not in log.read_text():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("ingest process did not subscribe: " + log.read_text())
                    time.sleep(0.1)
                q: mp.Queue[Result] = mp.Queue()
                pubs = [
                    mp.Process(
                        target=publisher,
                        args=(
                            broker.port,
                            ids[i :: a.publishers],
                            health_rate / a.publishers,
                            a.seconds,
                            q,
                        ),
                    )
                    for i in range(a.publishers)
                ]
                for p in pubs:
                    p.start()
                results: list[Result] = []
                cpu0 = cpu_s(proc.pid)
                t_pub = time.monotonic()
                while len(results) < len(pubs):
                    peak_rss = max(peak_rss, rss_mb(proc.pid))
                    with contextlib.suppress(queue.Empty):
                        results.append(q.get(timeout=1.0))
                cpu_share = (cpu_s(proc.pid) - cpu0) / (time.monotonic() - t_pub)
                for p in pubs:
                    p.join()
                sent = sum(r[0] for r in results)
                acked = sum(r[1] for r in results)
                offered = acked / (max(r[3] for r in results) - min(r[2] for r in results))
                drain_end = time.monotonic() + DRAIN_TIMEOUT_S
                stored = 0.0
                while time.monotonic() < drain_end:
                    peak_rss = max(peak_rss, rss_mb(proc.pid))
                    h = scalar(url, "SELECT count(*) FROM health") or 0.0
                    e = scalar(url, "SELECT count(*) FROM events") or 0.0
                    stored = h + e
                    if stored >= acked:
                        break
                    time.sleep(1.0)
                first = scalar(url, "SELECT min(recv_ts) FROM health")
                last = scalar(url, "SELECT max(recv_ts) FROM health")
                p99_delay = scalar(
                    url,
                    "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY recv_ts - ts) FROM health",
                )
                coverage_p99 = scalar(
                    url,
                    "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY n.state_since - f.t)"
                    " FROM nodes n JOIN (SELECT node_id, min(ts) AS t FROM health"
                    " GROUP BY node_id) f USING (node_id) WHERE n.state = 'online'",
                )
                online = scalar(url, "SELECT count(*) FROM nodes WHERE state = 'online'")
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                broker.stop()
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    span = (last - first) if first is not None and last is not None and last > first else None
    stored_rate = stored / span if span else None
    short = offered < 0.95 * target
    all_stored = stored >= acked
    keeps_up = p99_delay is not None and p99_delay < HEALTH_INTERVAL_S and cpu_share > 0
    print(
        json.dumps(
            {
                "target_msg_per_s": round(target),
                "offered_msg_per_s": round(offered),
                "offered_short": short,
                "stored_msg_per_s": None if stored_rate is None else round(stored_rate),
                "headroom": None
                if short or not all_stored or not keeps_up
                else round(1 / cpu_share, 2),
                "ingest_cpu_share": round(cpu_share, 3),
                "sent": sent,
                "acknowledged_by_broker": acked,
                "stored": round(stored),
                "all_stored": all_stored,
                "nodes_online": None if online is None else round(online),
                "p99_delay_ms": None if p99_delay is None else round(p99_delay * 1000),
                "coverage_p99_ms": None if coverage_p99 is None else round(coverage_p99 * 1000),
                "rss_mb": round(peak_rss, 1),
                "nodes": a.nodes,
                "seconds": a.seconds,
                "publishers": a.publishers,
                "cpus": os.cpu_count(),
                "load_avg_before": [round(x, 2) for x in load_before],
                "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            }
        )
    )


if __name__ == "__main__":
    main()
