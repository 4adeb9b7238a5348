"""The SIA DC-09 receiver inside the edge agent: its config section, per-account AES
keys, ``cryptography`` loaded only for encrypted accounts, and the whole path: a real TCP panel
client (our codec on the sending side, itself checked against published frames in
tests/test_fb_sia.py) → ``shilian edge run`` subprocess → real mosquitto → ``shilian central
run`` → the typed alarm with its village in central's API; the receiver's counters in the
edge's /metrics."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edge.config import ConfigError, parse_config
from edge.sia_receiver import SiaReceiverConfig, SiaSession
from firmware_bridge import sia_dc09 as sia
from shilian.broker import Mosquitto, free_port
from tests.processes import Central, Edge, wait_for

NODE = "450102001003-a"
KEY = bytes(range(16))
KEY_B = bytes(range(100, 124))  # 192-bit


def _sia_section(port: int) -> str:
    return (
        f'[sia]\nhost = "127.0.0.1"\nport = {port}\ndevice = "panel1"\n'
        '[[sia.accounts]]\naccount = "1234"\n'
        f'[[sia.accounts]]\naccount = "5678"\nkey_hex = "{KEY.hex()}"\n'
    )


def test_sia_config_section() -> None:
    base: dict[str, Any] = {"node_id": NODE}
    assert parse_config(base).sia is None  # optional: no receiver, nothing imported
    cfg = parse_config(
        base
        | {
            "sia": {
                "port": 12128,
                "accounts": [
                    {"account": "1234"},
                    {"account": "abcd", "key_hex": KEY_B.hex()},
                ],
                "timestamp_past_s": 60,
            }
        }
    )
    assert cfg.sia is not None and cfg.sia.host == "0.0.0.0" and cfg.sia.timestamp_future_s == 20
    rc = SiaReceiverConfig.from_edge(cfg.sia)
    assert rc.accounts == ["1234", "abcd"] and rc.account_keys() == {"ABCD": KEY_B}
    assert rc.timestamp_past_s == 60
    red = cfg.redacted()["sia"]["accounts"]
    assert red[1]["key_hex"] == "***" and red[0]["key_hex"] is None  # never shown
    for bad, where in (
        ({"accounts": [{"account": "12"}]}, "sia.accounts.0.account"),
        ({"accounts": [{"account": "1234", "key_hex": "00" * 15}]}, "sia.accounts.0.key_hex"),
        ({"port": 70000}, "sia.port"),
        ({"listen": "x"}, "sia.listen"),
    ):
        with pytest.raises(ConfigError) as e:
            parse_config(base | {"sia": bad})
        assert where in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config(base | {"sia": {"accounts": [{"account": "12ab"}, {"account": "12AB"}]}})
    assert "账号 12AB 配置了两次" in str(e.value)


def test_each_account_decrypts_with_its_own_key() -> None:
    now = 1_800_000_000.0
    cfg = SiaReceiverConfig(
        port=0, accounts=["1234", "5678", "9ABC"], keys={"5678": KEY.hex(), "9abc": KEY_B.hex()}
    )
    s = SiaSession(cfg, lambda: now)
    plain = s.decide(sia.build_frame("SIA-DCS", 1, "1234", "#1234|Nri1/BA01", now=now))
    assert plain.error is None and b'"ACK"0001' in plain.response
    a = s.decide(sia.build_frame("SIA-DCS", 2, "5678", "#5678|Nri1/FA02", key=KEY, now=now))
    assert a.error is None and b'"*ACK"0002' in a.response
    assert [str(e.kind) for e in a.events] == ["fire"]
    b = s.decide(sia.build_frame("SIA-DCS", 3, "9ABC", "#9ABC|Nri1/PA03", key=KEY_B, now=now))
    assert b.error is None and [str(e.kind) for e in b.events] == ["panic"]
    # encrypted with another account's key: refused (NAK), nothing stored
    wrong = s.decide(sia.build_frame("SIA-DCS", 4, "9ABC", "#9ABC|Nri1/PA03", key=KEY, now=now))
    assert wrong.error is not None and not wrong.events and b'"NAK"' in wrong.response
    # in clear under an account that has a key (a spoof or a misconfigured panel): DUH
    clear = s.decide(sia.build_frame("SIA-DCS", 6, "5678", "#5678|Nri1/FA02", now=now))
    assert clear.error is not None and not clear.events and b'"DUH"' in clear.response
    # encrypted, but the account has no key: DUH
    nokey = s.decide(sia.build_frame("SIA-DCS", 5, "1234", "#1234|Nri1/BA01", key=KEY, now=now))
    assert nokey.error is not None and b'"DUH"' in nokey.response


def test_idempotency_key_ignores_timestamp_but_not_content() -> None:
    now = 1_800_000_000.0
    f1 = sia.parse_frame(sia.build_frame("SIA-DCS", 7, "1234", "#1234|Nri1/BA01", now=now))
    f2 = sia.parse_frame(sia.build_frame("SIA-DCS", 7, "1234", "#1234|Nri1/BA01", now=now + 30))
    f3 = sia.parse_frame(sia.build_frame("SIA-DCS", 7, "1234", "#1234|Nri1/BA02", now=now))
    k = SiaSession.idempotency_key
    assert k(f1, 0) == k(f2, 0) != k(f3, 0)
    assert k(f1, 0) != k(f1, 1) and k(f1, 0).startswith("sia:1234::0:0007:")


_PROBE = """
import sys, tomllib
from edge.agent import Agent
from edge.config import parse_config
cfg = parse_config(tomllib.loads(open(sys.argv[1]).read()))
Agent(cfg, serve_metrics=False, serve_local_socket=False)
print("cryptography" in sys.modules)
"""


@pytest.mark.parametrize("encrypted", [False, True])
def test_cryptography_is_loaded_only_for_an_encrypted_account(
    tmp_path: Path, encrypted: bool
) -> None:
    key = f'key_hex = "{KEY.hex()}"\n' if encrypted else ""
    conf = tmp_path / "edge.toml"
    conf.write_text(
        f'node_id = "{NODE}"\n[outbox]\npath = "{tmp_path / "o.sqlite3"}"\n'
        f'[sia]\nport = 0\n[[sia.accounts]]\naccount = "1234"\n{key}',
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(conf)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(encrypted)


# -- end to end ----------------------------------------------------------------------------------


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def metric(text: str, name: str, **labels: str) -> float:
    """Value of one sample in Prometheus text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if m and m[1] == name and ",".join(sorted((m[2] or "").split(","))) == want:
            return float(m[3])
    return 0.0


def _exchange(port: int, frame: bytes) -> bytes:
    """One report as a panel sends it: connect, send, read the answer up to its CR."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(frame)
        buf = b""
        while not buf.endswith(b"\r"):
            chunk = s.recv(256)
            if not chunk:
                break
            buf += chunk
        return buf


@pytest.mark.slow
async def test_panel_report_reaches_central_as_typed_alarm_with_village(
    broker: Mosquitto, tmp_path: Path
) -> None:
    central = Central(tmp_path / "central", broker.port)
    await asyncio.to_thread(central.start)
    sia_port, metrics_port = free_port(), free_port()
    edge = Edge(tmp_path / "edge", NODE, broker.port, keepalive_s=5)
    conf = tmp_path / "edge" / "edge.toml"
    text = conf.read_text(encoding="utf-8").replace(
        "[metrics]\nenabled = false\n",
        f'[metrics]\nenabled = true\nhost = "127.0.0.1"\nport = {metrics_port}\n',
    )
    conf.write_text(text + _sia_section(sia_port), encoding="utf-8")
    try:
        await asyncio.to_thread(edge.start)
        now = time.time()
        burglary = sia.build_frame("SIA-DCS", 41, "1234", "#1234|Nri1/BA03", now=now)
        ans = await asyncio.to_thread(
            wait_for, lambda: _exchange(sia_port, burglary), 30.0, "SIA listening"
        )
        assert b'"ACK"0041L0#1234[]' in ans
        fire = sia.build_frame("ADM-CID", 42, "5678", "#5678|1110 01 007", key=KEY, now=now)
        assert b'"*ACK"0042' in await asyncio.to_thread(_exchange, sia_port, fire)
        # the ACK of report 41 was lost: the panel sends it again, restamped
        again = sia.build_frame("SIA-DCS", 41, "1234", "#1234|Nri1/BA03", now=now + 5)
        assert b'"ACK"0041' in await asyncio.to_thread(_exchange, sia_port, again)
        # damaged on the LAN, unknown account, stale clock: refused, nothing stored
        bad_crc = burglary[:1] + (b"0" if burglary[1:2] != b"0" else b"1") + burglary[2:]
        assert b'"NAK"' in await asyncio.to_thread(_exchange, sia_port, bad_crc)
        stranger = sia.build_frame("SIA-DCS", 43, "9999", "#9999|Nri1/BA01", now=now)
        assert b'"DUH"' in await asyncio.to_thread(_exchange, sia_port, stranger)
        stale = sia.build_frame("SIA-DCS", 44, "1234", "#1234|Nri1/BA05", now=now - 3600)
        assert b'"NAK"' in await asyncio.to_thread(_exchange, sia_port, stale)

        def two_alarms() -> list[dict[str, Any]] | None:
            page = central.get("/api/v1/alarms?state=all")
            return list(page["alarms"]) if page["total"] >= 2 else None

        alarms = await asyncio.to_thread(wait_for, two_alarms, 60.0, "alarms at central")
        by_kind = {a["kind"]: a for a in alarms}
        assert sorted(by_kind) == ["fire", "intrusion"] and len(alarms) == 2
        for a in alarms:
            assert a["village"] == NODE[:12] and a["county_name"] == "兴宁区"
            assert a["state"] == "open" and a["device"] == "panel1"
        assert by_kind["intrusion"]["data"]["zone"] == 3
        assert by_kind["intrusion"]["data"]["detail"]["account"] == "1234"
        assert by_kind["fire"]["data"]["zone"] == 7
        assert by_kind["fire"]["data"]["detail"]["format"] == "ADM-CID"

        m = await asyncio.to_thread(_metrics, metrics_port)
        dev = {"device": "panel1"}
        assert metric(m, "shilian_edge_sia_frames_total", outcome="ack", **dev) == 2
        assert metric(m, "shilian_edge_sia_frames_total", outcome="duplicate", **dev) == 1
        assert metric(m, "shilian_edge_sia_frames_total", outcome="crc", **dev) == 1
        assert metric(m, "shilian_edge_sia_frames_total", outcome="timestamp", **dev) == 1
        assert metric(m, "shilian_edge_sia_responses_total", type="ack", **dev) == 3
        assert metric(m, "shilian_edge_sia_responses_total", type="nak", **dev) == 2
        assert metric(m, "shilian_edge_sia_responses_total", type="duh", **dev) == 1
    finally:
        edge.close()
        central.close()
