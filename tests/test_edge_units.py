"""Pure parts of the edge agent: backoff, outbox policy, /proc parsing, local API and command
protocol (no broker, no sleeps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.commands import CommandHandler, Refused, Reply
from edge.health import (
    CpuTimes,
    HostProbe,
    cpu_percent,
    parse_meminfo,
    parse_proc_stat,
    parse_thermal,
)
from edge.local_api import RequestError, parse_request
from edge.mqtt_link import Incoming
from edge.outbox_policy import Admission, admit, send_key
from resilience.backoff import Backoff
from wire import CommandResponse, Priority, Topics, decode

NODE = "450102001001-a"
BOOT = "ab" * 16


# -- backoff ---------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_full_jitter_and_caps() -> None:
    b = Backoff(rng=lambda: 1.0, base=1.0, cap=60.0)
    assert [b.next() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    b.reset()
    assert b.next() == 1.0
    zero = Backoff(rng=lambda: 0.0)
    assert zero.next() == 0.0  # full jitter: anywhere in [0, window]
    half = Backoff(rng=lambda: 0.5)
    assert [half.next() for _ in range(3)] == [0.5, 1.0, 2.0]


def test_backoff_never_overflows_and_auth_failures_go_to_cap() -> None:
    b = Backoff(rng=lambda: 1.0)
    for _ in range(5000):
        assert b.next() <= 60.0
    c = Backoff(rng=lambda: 1.0)
    assert c.to_cap() == 60.0
    assert c.next() == 60.0
    c.reset()
    assert c.next() == 1.0


# -- outbox policy ---------------------------------------------------------------------------

A, D, INF = Priority.ALARM, Priority.DEVICE, Priority.INFO


def _counts(a: int = 0, d: int = 0, i: int = 0) -> dict[Priority, int]:
    return {A: a, D: d, INF: i}


def test_admit_below_bound() -> None:
    assert admit(INF, _counts(i=9), 10) == Admission()


def test_admit_full_evicts_lowest_class_first() -> None:
    assert admit(A, _counts(a=1, d=1, i=8), 10) == Admission(evict=INF)
    assert admit(A, _counts(a=5, d=5), 10) == Admission(evict=D)
    assert admit(D, _counts(d=5, i=5), 10) == Admission(evict=INF)
    assert admit(D, _counts(a=5, d=5), 10) == Admission(evict=D)
    assert admit(INF, _counts(d=5, i=5), 10) == Admission(evict=INF)


def test_alarms_never_refused_and_low_priority_never_evicts_higher() -> None:
    assert admit(A, _counts(a=10), 10) == Admission()  # over the bound on purpose
    assert admit(INF, _counts(a=5, d=5), 10) == Admission(refuse=True)
    assert admit(D, _counts(a=10), 10) == Admission(refuse=True)


def test_send_order() -> None:
    rows = [(INF, 1), (D, 2), (A, 3), (INF, 4), (A, 5)]
    assert sorted(rows, key=lambda r: send_key(*r)) == [(A, 3), (A, 5), (D, 2), (INF, 1), (INF, 4)]


# -- /proc parsing -----------------------------------------------------------------------------

STAT_1 = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\nintr 1 2 3\n"
STAT_2 = "cpu  200 0 150 800 150 0 0 0 0 0\ncpu0 100 0 75 400 75 0 0 0 0 0\n"
MEMINFO = """MemTotal:        1000000 kB
MemFree:          200000 kB
MemAvailable:     250000 kB
Buffers:           10000 kB
"""


def test_parse_proc_stat_and_cpu_percent() -> None:
    a, b = parse_proc_stat(STAT_1), parse_proc_stat(STAT_2)
    assert a == CpuTimes(busy=200, total=1000)
    # +150 busy (user 100, system 50) of +300 total (idle 100, iowait 50 are idle)
    assert cpu_percent(a, b) == pytest.approx(50.0)
    assert cpu_percent(b, b) == 0.0
    with pytest.raises(ValueError):
        parse_proc_stat("intr 1 2\n")


def test_parse_meminfo_uses_available() -> None:
    assert parse_meminfo(MEMINFO) == pytest.approx(75.0)
    assert parse_meminfo("MemTotal: 100 kB\nMemFree: 50 kB\n") == pytest.approx(50.0)
    with pytest.raises(ValueError):
        parse_meminfo("Foo: 1 kB\n")


def test_parse_thermal_takes_hottest_and_skips_junk() -> None:
    assert parse_thermal(["45000\n", "51234\n", "garbage"]) == pytest.approx(51.234)
    assert parse_thermal([]) is None


def test_host_probe_on_a_fake_proc_tree(tmp_path: Path) -> None:
    proc, sys = tmp_path / "proc", tmp_path / "sys"
    (sys / "class/thermal/thermal_zone0").mkdir(parents=True)
    proc.mkdir()
    (proc / "stat").write_text(STAT_1)
    (proc / "meminfo").write_text(MEMINFO)
    (sys / "class/thermal/thermal_zone0/temp").write_text("48500\n")
    probe = HostProbe(tmp_path / "not/yet/created/outbox.sqlite3", proc=proc, sys=sys)
    assert probe.cpu_pct() == 0.0  # first sample has no rate yet
    (proc / "stat").write_text(STAT_2)
    assert probe.cpu_pct() == pytest.approx(50.0)
    assert probe.mem_used_pct() == pytest.approx(75.0)
    assert probe.temp_c() == pytest.approx(48.5)
    assert 0.0 <= probe.disk_used_pct() <= 100.0
    assert HostProbe(tmp_path, proc=tmp_path / "none", sys=tmp_path / "none").temp_c() is None


# -- local API requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"not json", "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        (b"[1,2]", "JSON object"),
        (b'{"op":"explode"}', "unknown op"),
        (b'{"no_op":1}', "unknown op"),
    ],
)
def test_parse_request_errors(line: bytes, error: str) -> None:
    with pytest.raises(RequestError, match=error):
        parse_request(line)


def test_parse_request_ok() -> None:
    assert parse_request(b'{"op":"status"}') == {"op": "status"}


# -- commands ----------------------------------------------------------------------------------


def _handler(now: float = 100.0) -> CommandHandler:
    return CommandHandler(Topics(NODE), BOOT, lambda: {"node_id": NODE}, lambda: now)


def _req(payload: dict[str, object], rt: str | None, expiry: float | None = None) -> Incoming:
    return Incoming(
        topic=Topics(NODE).cmd_req,
        payload=json.dumps(payload).encode(),
        retain=False,
        response_topic=rt,
        correlation=b"c1",
        expiry_s=expiry,
    )


def test_commands_ping_config_unknown() -> None:
    h, t = _handler(), Topics(NODE)
    out = h.handle(_req({"v": 1, "cmd": "ping"}, t.cmd_res), 100.0)
    assert isinstance(out, Reply) and out.correlation == b"c1" and out.topic == t.cmd_res
    resp = decode(CommandResponse, out.payload, node_id=NODE)
    assert resp.ok and resp.result == {"pong": 100.0, "boot_id": BOOT}
    out = h.handle(_req({"v": 1, "cmd": "get-config"}, t.cmd_res), 100.0)
    assert isinstance(out, Reply)
    assert decode(CommandResponse, out.payload).result == {"node_id": NODE}
    out = h.handle(_req({"v": 1, "cmd": "reboot"}, t.cmd_res), 100.0)
    assert isinstance(out, Reply)
    resp = decode(CommandResponse, out.payload)
    assert not resp.ok and resp.error is not None and resp.error.code == "unknown_command"
    out = h.handle(_req({"v": 1, "cmd": "BAD NAME"}, t.cmd_res), 100.0)
    assert isinstance(out, Reply) and not decode(CommandResponse, out.payload).ok


@pytest.mark.parametrize(
    "rt",
    [
        None,
        "shilian/v1/450102001001-b/cmd/res",  # another node
        "elsewhere/cmd/res",
        "shilian/v1/450102001001-a/state",  # would overwrite our birth
        "shilian/v1/450102001001-a/event",
        "shilian/v1/450102001001-a/device/cam1",
        "shilian/v1/450102001001-a/cmd/res/#",
    ],
)
def test_commands_refuse_response_topics_outside_our_reply_space(rt: str | None) -> None:
    out = _handler().handle(_req({"v": 1, "cmd": "ping"}, rt), 100.0)
    assert isinstance(out, Refused)


def test_expired_request_is_not_answered() -> None:
    t = Topics(NODE)
    assert isinstance(
        _handler(now=110.0).handle(_req({"v": 1, "cmd": "ping"}, t.cmd_res, 5), 100), Refused
    )
    assert isinstance(
        _handler(now=104.0).handle(_req({"v": 1, "cmd": "ping"}, t.cmd_res, 5), 100), Reply
    )
