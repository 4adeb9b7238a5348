"""docs/reliability.md from the figures ``make reliability`` measured (one JSON line per fault).

python bench/faults/report.py test-artifacts/reliability.jsonl > docs/reliability.md
python bench/faults/report.py --only backlog_drain FILE.jsonl docs/reliability.md

``--only FAULT`` puts that fault's newest row from FILE into the existing document (replacing its
row, or after the table's last row) without rerunning the rest: for the long benchmarks of
bench/faults/, whose rows carry their own date and machine.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

#: What each fault is and what the user sees; the figures come from the run.
FAULTS = {
    "uplink_cut": (
        "村里上行链路中断（veth 断开）/ the village's uplink cut (veth pair down)",
        "the node stays as it was until its keepalive expires, then offline by its will; events "
        "made meanwhile wait in the node's outbox and arrive, in order, when the link returns",
    ),
    "central_kill9": (
        "中心进程崩溃（kill -9）并重启 / central killed (kill -9) and restarted",
        "the dashboard is unreachable while central is down; the broker keeps central's queue, "
        "central redelivers and deduplicates after its restart",
    ),
    "broker_kill9": (
        "代理崩溃（kill -9）并重启 / the broker killed (kill -9) and restarted",
        "every node reconnects; events the broker had acknowledged and lost with its last "
        "unsaved second are still in the nodes' outboxes (kept until central's "
        "stored-acknowledgement) and arrive after the reconnect",
    ),
    "random_cycles": (
        "随机故障循环 / random cycles of the three faults over one event stream",
        "at the end every event is at central exactly once, the node online; broker crashes "
        "included (events are kept at the node until central says they are stored)",
    ),
    "latency_300ms": (
        "村级链路每个方向增加 300 ms 延迟 / 300 ms added each way on the village link",
        "the node comes online and every event arrives, once and in order; an event reaches "
        "central about a round trip (600 ms) after it was made, not the one-way 300 ms",
    ),
    "loss_5pct": (
        "村级链路双向丢包 5 % / 5 % of packets lost each way on the village link",
        "the node comes online and every event arrives, once and in order; TCP retransmissions "
        "delay the events behind a lost packet",
    ),
    "poor_4g": (
        "4G 弱网：上行 256 kbit/s、下行 1 Mbit/s，节点有积压 / a poor 4G line (256 kbit/s up, "
        "1 Mbit/s down) while the node sends its backlog",
        "the backlog drains at the line's pace, every event once; alarms made meanwhile are sent "
        "ahead of it by the node's outbox and stored long before it has drained",
    ),
    "county_cut": (
        "县级上行链路中断：5 个村节点共用一条链路 / a county's uplink cut: 5 village nodes "
        "behind one link",
        "each node is shown offline by its own rule (1.5 x its health interval of silence or "
        "its will at 1.5 x keepalive + 1 s, whichever first; here the health rule, at 3 s), "
        "never sooner; after the link returns each node is back at its next reconnect attempt "
        "(full-jitter backoff capped at 60 s, longer the longer the cut), then every event "
        "arrives and coverage is whole again",
    ),
    "power_cut": (
        "村端断电：代理被 kill -9，未同步的写入丢失 / power cut at the village box: the agent "
        "killed (kill -9) and every write not yet synced to disk lost",
        "offline via its will; restarted on that disk image the agent still holds (or central "
        "already has) every event it had acknowledged as stored, and sends it on",
    ),
    "backlog_drain": (
        "积压排空：100 个节点各带 24 小时缓存事件同时重连 / backlog drain: 100 nodes, each "
        "with 24 h of buffered events, reconnect at once (bench/faults/backlog.py)",
        "every event arrives, once; alarms made during the drain travel on their own topic and "
        "central session (the alarm lane), have their own in-flight window at the edge and, at "
        "central, join the history transaction under way at its next slice boundary (committed "
        "at once); central holds at most its Receive Maximum of uncommitted messages (target "
        "p99 <= 1,000 ms: not met on a machine this loaded; most of the time is still spent "
        "between the broker and central's ingest)",
    ),
    "soak": (
        "长时间运行：10,000 个模拟节点稳态运行 / soak: 10,000 simulated nodes at steady state "
        "(bench/faults/soak.py; `make soak-central` runs 30 minutes)",
        "every event the nodes sent is stored once and acknowledged, coverage equals the truth "
        "throughout; central's memory after the warm-up should grow < 5 % (not met yet). "
        "not_yet_stored: sent but not stored when the nodes stopped; lost: still not stored "
        "after central drained",
    ),
    "hostile_mqtt": (
        "恶意 MQTT 消息：畸形、超长、重放、冒用他人主题，与正常事件交错 / hostile MQTT at volume: "
        "malformed, oversized, replayed and spoofed-topic messages from 4 clients, interleaved "
        "with a node's real events (tests/test_hostile_mqtt.py)",
        "central keeps serving; every bad message is counted by reason in "
        "shilian_invalid_messages_total, replays in shilian_duplicate_events_total; every good "
        "event stored once",
    ),
    "slowloris_api": (
        "HTTP 慢速攻击：大量连接逐字节发送请求头 / slowloris on central's API: many connections "
        "trickling a request head (tests/test_slowloris.py)",
        "other requests answered throughout; each slow connection closed [http] idle_timeout_s "
        "after it opened, counted in shilian_http_connections_cut_total",
    ),
    "slowloris_api_body": (
        "HTTP 慢速请求体：请求头完整，请求体逐字节发送 / slow request bodies on central's API: a "
        "complete head, then the body a byte at a time (tests/test_slowloris.py)",
        "other requests answered throughout; each slow connection closed [http] body_timeout_s "
        "after its head, counted in shilian_http_connections_cut_total{reason=slow_body}",
    ),
    "slowloris_sia": (
        "SIA 接收机慢速攻击：连接数超过槽位，逐字节发送 / slowloris on the SIA receiver: more "
        "slow connections than slots, from many addresses (tests/test_sia_slowloris.py)",
        "a panel's reports are ACKed throughout (retransmitted when a slot was taken); slow "
        "connections closed at [sia] guest_timeout_s or evicted for a newcomer",
    ),
    "clock_steps_edge": (
        "村端系统时钟跳变：+1 小时、-1 小时、+1 天、-1 天、-10 分钟、+10 分钟（libfaketime）/ the "
        "village box's wall clock stepped +1 h, -1 h, +1 day, -1 day, -10 min, +10 min while "
        "events stream",
        "the node stays online; after two health reports its detail shows its clock offset "
        "(clock_off_s), cleared by the first right report; its events listed by sequence, the "
        "newest first; nothing sent again for a timeout the step faked. `recover_s_<step>`: until "
        "central flags (or clears) the node and lists the first event made after the step first",
    ),
    "clock_steps_central": (
        "中心系统时钟跳变（同样的跳变）/ central's wall clock stepped (the same steps)",
        "no node shown offline (deadlines run on central's monotonic clock); every node reads "
        "off by the step until central's clock is right again. `recover_s_<step>`: until central "
        "shows that offset and lists the first event made after the step first",
    ),
    "memory_1g_edge": (
        "村端代理在 1 GiB 内存限制的 cgroup 中排空积压 / the edge agent in a 1 GiB cgroup "
        "drains a backlog built while the broker was away",
        "every event arrives once; the backlog is on disk, so memory stays far below the limit; "
        "peak_mib: the cgroup's peak; max / oom / oom_kill: the limit's events (v1: failcnt, "
        "under_oom, oom_kill)",
    ),
    "memory_1g_central": (
        "中心在 1 GiB 内存限制的 cgroup 中服务模拟节点群 / central in a 1 GiB cgroup serving a "
        "simulated fleet (shilian simulate)",
        "the simulator's check passes (central shows the fleet as it is); never OOM-killed",
    ),
}


def append(results: Path, fault: str, figures: dict[str, Any]) -> None:
    """Add one benchmark's figures to ``results`` as a row of ``fault``, with the date and
    machine they were measured on."""
    row = {"fault": fault, **figures}
    row["measured"] = f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores"
    row["machine"] = platform.machine()
    with results.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _row(r: dict[str, object]) -> str:
    title, sees = FAULTS.get(str(r["fault"]), (str(r["fault"]), ""))
    figures = ", ".join(f"{k} {v}" for k, v in r.items() if k != "fault")
    return f"| {title} | {sees} | {figures} |"


def only(fault: str, results: Path, doc: Path) -> None:
    """Put ``fault``'s newest row of ``results`` into ``doc``'s table, in place."""
    rows = [json.loads(line) for line in results.read_text().splitlines() if line]
    new = _row([r for r in rows if r["fault"] == fault][-1])
    lines = doc.read_text(encoding="utf-8").split("\n")
    title = FAULTS[fault][0]
    at = [i for i, line in enumerate(lines) if line.startswith(f"| {title} |")]
    if at:
        lines[at[0]] = new
    else:
        last = max(i for i, line in enumerate(lines) if line.startswith("| "))
        lines.insert(last + 1, new)
    doc.write_text("\n".join(lines), encoding="utf-8")


def _found(rows: list[dict[str, object]]) -> list[str]:
    """The "Found" paragraph: what the run's figures say about loss."""
    lost = sum(int(str(r.get("lost", 0))) for r in rows)
    dup = sum(int(str(r.get("duplicated", 0))) for r in rows)
    if lost or dup:
        return [
            "",
            f"**Found:** {lost} events lost and {dup} stored twice (see the rows above and",
            "docs/faults.md for the fault that did it).",
        ]
    cycles = [r for r in rows if r["fault"] == "random_cycles"]
    if not cycles:
        return []
    c = cycles[-1]
    return [
        "",
        f"**Found:** nothing lost, nothing duplicated: {c['cycles']} random fault cycles "
        f"({c['broker_faults']} broker kills, {c['central_faults']} central kills,",
        f"{c['cut_faults']} uplink cuts; {c['events']} events) ended with every event at "
        "central once. A node keeps each event",
        "until central's stored-acknowledgement covers it, so what a broker acknowledged and "
        "lost in a crash is",
        "sent again (tests/faults/test_broker_crash_window.py kills the broker after its PUBACK "
        "with autosave off).",
    ]


def main() -> None:
    if sys.argv[1] == "--only":
        only(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
        return
    rows = [json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines() if line]
    cpu = platform.processor() or platform.machine()
    out = [
        "# 可靠性 / Reliability, measured",
        "",
        "Regenerated by `make reliability` (tests/faults/, long forms: a 30 s uplink cut, 100",
        "random fault cycles, 300 events over a slow or lossy line, 20,000 events of backlog over",
        "4G, a 30 s county cut, 20 s of events before a power cut, 15 s after each clock step,",
        "a 100,000-event backlog and a simulated fleet in a 1 GiB cgroup). Real processes on a",
        "real network path: mosquitto and central in one network namespace, the edge agents in",
        "another, joined by a veth pair. Faults are `ip link set down`, `kill -9`, nftables rules",
        "on the",
        "village's end of the link (`numgen random` loss, `limit rate over` bandwidth), an",
        "iptables NFQUEUE whose verdicts a small process gives 300 ms late",
        "(tests/faults/delayer.py), and a power cut: the agent killed under strace and its files",
        "cut back to what it had synced (tests/faults/power.py). The hostile-input rows (hostile",
        "MQTT, slowloris) run real processes on loopback instead. The short forms run in",
        "`make test`.",
        "",
        f"Machine: {os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}; "
        f"run {time.strftime('%Y-%m-%d %H:%M %Z')}.",
        "",
        "| fault | what the user sees | figures (time to recover in s) |",
        "| --- | --- | --- |",
    ]
    out += [_row(r) for r in rows]
    out += _found(rows)
    out += [
        "",
        "`recover_s`: from the fault's end (link up, process restarted) until central's view is",
        "right again (every event stored, node online); `lost`: events made by the village and",
        "missing at central at the end; `duplicated`: events stored twice (always 0: central",
        "deduplicates by node, boot and sequence number).",
        "",
        "Event delays are central's receive time minus the node's accept time (one clock: same",
        "machine). Clock steps: the stepped process runs under libfaketime (its monotonic clock",
        "untouched), events streaming all along. Memory: the process in a child cgroup with a",
        "1 GiB limit. Not yet measured here: latency, loss and a bandwidth cap together, jitter",
        "and reordering on a link, a disk that acknowledges syncs it has not done, disk full at",
        "volume. The soak (`make soak-central`) is its own row, from bench/faults/soak.py.",
        "",
    ]
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    main()
