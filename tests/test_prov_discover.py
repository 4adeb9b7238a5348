"""``shilian provision discover`` against real peers:

- ONVIF WS-Discovery: the third-party ``wsdiscovery`` package's publisher (a real WS-Discovery
  implementation) — a directed probe on loopback inside a private network namespace
  (``unshare -n``: its Hello multicasts never leave the test), and a multicast probe between two
  network namespaces joined by a veth pair with a 224.0.0.0/4 route (docs/evidence.md);
- the alarm board: the board simulator on a pty; a silent pty; a missing port;
- SIP terminals: real ``sipp`` answering OPTIONS with 200, a sipp scenario answering 503, and a
  port where nothing listens.
Codecs: the probe, a ProbeMatches as the publisher sends it, hostile bytes (hypothesis); the SIP
OPTIONS codec is tests/test_sipcodec.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.simulator import simulate_board
from provisioning import wsdiscovery as wsd
from provisioning.discover import Discovery, record
from provisioning.flow import State, edge_config_data
from provisioning.lan_probes import probe_board, probe_sip
from shilian.broker import free_port
from tests.processes import wait_for

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT or shutil.which("ip") is None, reason="needs root + ip")

PUBLISHER = textwrap.dedent(
    """
    import signal, sys, time
    from wsdiscovery import QName, Scope
    from wsdiscovery.publishing import ThreadedWSPublishing

    pub = ThreadedWSPublishing()
    pub.start()
    pub.publishService(
        types=[QName("http://www.onvif.org/ver10/network/wsdl", "NetworkVideoTransmitter", "dn")],
        scopes=[
            Scope("onvif://www.onvif.org/name/%E4%B8%9C%E9%97%A8"),
            Scope("onvif://www.onvif.org/hardware/IPC-T1"),
            Scope("onvif://www.onvif.org/location/village-office"),
        ],
        xAddrs=[sys.argv[1]],
    )
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        while True:
            time.sleep(1)
    finally:
        pub.stop()
    """
)


def discover_cli(workdir: Path, *args: str) -> str:
    base = (PY, "-m", "shilian", "provision", "discover", "--dir", str(workdir), "--json")
    return " ".join((*base, "--no-serial-scan", *args))


# -- WS-Discovery --------------------------------------------------------------------------------


@needs_root
def test_directed_probe_finds_the_wsdiscovery_publisher(tmp_path: Path) -> None:
    """Unicast Probe to 127.0.0.1:3702 in a private namespace; the result lands in state.json."""
    pub = tmp_path / "pub.py"
    pub.write_text(PUBLISHER)
    work = tmp_path / "node"
    script = (
        "ip link set lo up\n"
        f"{PY} {pub} http://127.0.0.1/onvif/device_service >{tmp_path / 'pub.log'} 2>&1 &\n"
        "P=$!\n"
        # The publisher needs a moment to bind; a probe before that is simply not answered.
        "for i in 1 2 3 4 5 6 7 8 9 10; do\n"
        f"  {discover_cli(work, '--camera', '127.0.0.1', '--no-multicast', '--wait', '1')}"
        " > out.json\n"
        "  grep -q NetworkVideoTransmitter out.json && break\n"
        "done\n"
        "kill $P; wait $P; cat out.json\n"
    )
    r = subprocess.run(
        ["unshare", "-n", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    found = json.loads(r.stdout.strip().splitlines()[-1])
    [cam] = found["cameras"]
    assert cam["name"] == "东门" and cam["hardware"] == "IPC-T1"
    assert cam["location"] == "village-office" and cam["source"] == "127.0.0.1"
    assert cam["xaddrs"] == ["http://127.0.0.1/onvif/device_service"]
    state = json.loads((work / "state.json").read_text("utf-8"))
    assert state["discovered"]["cameras"][0]["endpoint"] == cam["endpoint"]
    assert "discover" in state["done"]


@pytest.fixture
def two_namespaces() -> Iterator[tuple[str, str]]:
    """``cam`` (10.250.0.1) and ``tech`` (10.250.0.2) joined by a veth pair, each with a
    224.0.0.0/4 route; addresses exist only inside these namespaces."""
    n = os.getpid() % 100000
    cam, tech = f"shl-cam-{n}", f"shl-tech-{n}"
    cmds = [
        f"ip netns add {cam}",
        f"ip netns add {tech}",
        f"ip link add shc{n} type veth peer name sht{n}",
        f"ip link set shc{n} netns {cam}",
        f"ip link set sht{n} netns {tech}",
        f"ip -n {cam} addr add 10.250.0.1/24 dev shc{n}",
        f"ip -n {tech} addr add 10.250.0.2/24 dev sht{n}",
        f"ip -n {cam} link set shc{n} up",
        f"ip -n {tech} link set sht{n} up",
        f"ip -n {cam} link set lo up",
        f"ip -n {tech} link set lo up",
        f"ip -n {cam} route add 224.0.0.0/4 dev shc{n}",
        f"ip -n {tech} route add 224.0.0.0/4 dev sht{n}",
    ]
    try:
        for c in cmds:
            subprocess.run(c.split(), check=True, capture_output=True, timeout=30)
        yield cam, tech
    finally:
        for ns in (cam, tech):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@needs_root
def test_multicast_probe_between_two_namespaces(
    tmp_path: Path, two_namespaces: tuple[str, str]
) -> None:
    cam, tech = two_namespaces
    pub = tmp_path / "pub.py"
    pub.write_text(PUBLISHER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    publisher = subprocess.Popen(
        ["ip", "netns", "exec", cam, PY, str(pub), "http://10.250.0.1/onvif/device_service"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        cmd = discover_cli(tmp_path / "node", "--wait", "2").split()
        for _ in range(10):  # until the publisher has joined the group on its interface
            r = subprocess.run(
                ["ip", "netns", "exec", tech, *cmd],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
            )
            assert r.returncode == 0, r.stderr
            found = json.loads(r.stdout.strip().splitlines()[-1])
            if found["cameras"]:
                break
        [c] = found["cameras"]
        assert c["source"] == "10.250.0.1" and c["name"] == "东门"
        assert c["xaddrs"] == ["http://10.250.0.1/onvif/device_service"]
    finally:
        publisher.terminate()
        publisher.wait(30)


MATCHES = """<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"
 xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"
 xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"
 xmlns:dn="http://www.onvif.org/ver10/network/wsdl">
<s:Header><a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</a:Action>
<a:MessageID>urn:uuid:2</a:MessageID><a:RelatesTo>{rel}</a:RelatesTo>
<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To></s:Header>
<s:Body><d:ProbeMatches><d:ProbeMatch>
<a:EndpointReference><a:Address>urn:uuid:cam-1</a:Address></a:EndpointReference>
<d:Types>dn:NetworkVideoTransmitter</d:Types>
<d:Scopes>onvif://www.onvif.org/name/%E8%A5%BF%E9%97%A8 onvif://www.onvif.org/hardware/X1
 onvif://www.onvif.org/type/video_encoder</d:Scopes>
<d:XAddrs>http://192.0.2.7/onvif/device_service http://[2001:db8::7]/onvif/device_service</d:XAddrs>
<d:MetadataVersion>1</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>"""


def test_probe_matches_codec() -> None:
    mid = wsd.new_message_id()
    probe = wsd.probe(mid)
    assert mid.encode() in probe and b"dn:NetworkVideoTransmitter" in probe
    [cam] = wsd.parse_probe_matches(MATCHES.format(rel=mid).encode(), mid, "192.0.2.7")
    assert cam.endpoint == "urn:uuid:cam-1" and cam.name == "西门" and cam.hardware == "X1"
    assert len(cam.xaddrs) == 2 and cam.location is None
    with pytest.raises(wsd.ReplyError, match="another probe"):
        wsd.parse_probe_matches(MATCHES.format(rel="urn:uuid:other").encode(), mid)
    with pytest.raises(wsd.ReplyError, match="DTD"):
        wsd.parse_probe_matches(b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', mid)
    with pytest.raises(wsd.ReplyError, match="not a SOAP"):
        wsd.parse_probe_matches(b"<x/>", mid)


@given(st.binary(max_size=2000))
def test_any_datagram_is_cameras_or_a_reply_error(data: bytes) -> None:
    with contextlib.suppress(wsd.ReplyError):
        assert isinstance(wsd.parse_probe_matches(data, "urn:uuid:1"), list)


# -- the alarm board -----------------------------------------------------------------------------


async def test_board_found_on_its_pty_and_not_elsewhere(tmp_path: Path) -> None:
    async with simulate_board(board_id="VB-0042", n_inputs=8) as sim:
        found = await probe_board(sim.slave_path)
    assert found.found and found.board_id == "VB-0042" and found.n_inputs == 8
    master, slave = os.openpty()  # a serial port with nothing behind it
    try:
        silent = await probe_board(os.ttyname(slave), wait_s=1.5)
    finally:
        os.close(master)
        os.close(slave)
    assert not silent.found and "no board handshake" in (silent.error or "")
    missing = await probe_board(str(tmp_path / "ttyUSB9"))
    assert not missing.found and "cannot open" in (missing.error or "")


async def test_board_port_goes_into_the_edge_config(tmp_path: Path) -> None:
    async with simulate_board() as sim:
        found = Discovery(boards=[await probe_board(sim.slave_path)])
    state = State.open(tmp_path / "node")
    state.mark("enrol", node_id="450102001001-a", broker={"host": "h", "port": 8883})
    state.mark("config")
    record(state, found)
    assert not state.done("config")  # the config is written again with the board
    reopened = State.open(tmp_path / "node")
    data = edge_config_data(reopened)
    assert data["alarm_board"] == {"device": sim.slave_path}
    assert reopened.data["discovered"]["board"]["board_id"] == "SIM-0001"


# -- SIP -----------------------------------------------------------------------------------------

SCENARIO_503 = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="busy">
  <recv request="OPTIONS" />
  <send><![CDATA[
SIP/2.0 503 Service Unavailable
[last_Via:]
[last_From:]
[last_To:];tag=[pid]
[last_Call-ID:]
[last_CSeq:]
User-Agent: test-terminal/1.0
Content-Length: 0

]]></send>
</scenario>
"""


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Callable[..., int]]:
    if shutil.which("sipp") is None:
        pytest.skip("sipp (Debian sip-tester) not installed")
    procs: list[subprocess.Popen[bytes]] = []

    def start(*extra: str) -> int:
        port = free_port()
        p = subprocess.Popen(
            [
                *("sipp", "-i", "127.0.0.1", "-p", str(port), "-nostdin"),
                *("-mp", str(free_port()), "-cp", str(free_port()), *extra),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp_path,
        )
        procs.append(p)
        # Ready once its SIP socket is bound (before that the kernel answers ICMP unreachable,
        # which the product rightly reports as "nothing there").
        wait_for(lambda: f":{port:04X} " in Path("/proc/net/udp").read_text(), what="sipp")
        return port

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)


async def test_sip_terminals(sipp: Callable[..., int], tmp_path: Path) -> None:
    ok_port = sipp("-sn", "uas", "-aa")
    (tmp_path / "busy.xml").write_text(SCENARIO_503)
    busy_port = sipp("-sf", str(tmp_path / "busy.xml"))
    ok = await probe_sip(f"127.0.0.1:{ok_port}")  # retransmitted until sipp is up
    assert ok.reachable and ok.status == 200, ok
    busy = await probe_sip(f"127.0.0.1:{busy_port}")
    assert not busy.reachable and busy.status == 503 and busy.user_agent == "test-terminal/1.0"
    dead = await probe_sip(f"127.0.0.1:{free_port()}", wait_s=2)
    assert not dead.reachable and dead.status is None and dead.error
    bad = await probe_sip("no such host name.invalid:5060")
    assert not bad.reachable and "bad address" in (bad.error or "")
