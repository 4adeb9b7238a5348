"""A poor line instead of a clean veth: latency, loss and a bandwidth cap on the village's end of
the link, made with nftables inside the village's network namespace (this kernel has no ``tc
netem``). Every rule matches the uplink interface only, so the village's loopback is untouched;
deleting the namespace deletes the rules.

- loss: ``numgen random mod 100 < N drop``, each direction on its own;
- bandwidth: ``limit rate over B bytes/second drop`` (a policer, as a 4G operator's shaper drops
  what exceeds the plan; TCP backs off and retransmits);
- latency: an iptables ``NFQUEUE`` rule (this kernel has the xtables target, not nftables'
  ``queue``), after the rules above so a dropped packet is not delayed first, to a queue whose
  verdicts :mod:`tests.faults.delayer` gives ``delay`` late, each direction, so a round trip
  gains twice the delay.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.faults.lan import IP_TIMEOUT_S, Lan
from tests.peers import missing

#: The NFQUEUE number the delay rules feed (queues are per namespace: one village, one queue).
DELAY_QUEUE = 7
#: Seconds the delayer may take to bind its queue on a loaded machine.
DELAYER_START_S = 30.0


@dataclass(frozen=True)
class Shape:
    """What the village's uplink does to packets; zero means "not at all"."""

    delay_ms: float = 0.0
    loss_pct: int = 0
    up_bytes_s: int = 0
    down_bytes_s: int = 0
    #: Bytes the policer lets through at line rate before it limits (a modem's buffer).
    burst_bytes: int = 16_384


def _nft(net: Lan, ns: str, script: str) -> None:
    r = subprocess.run(
        net.run(ns, ["nft", "-f", "-"]),
        input=script,
        capture_output=True,
        text=True,
        timeout=IP_TIMEOUT_S,
    )
    if r.returncode != 0:
        raise RuntimeError(f"nft: {r.stderr.strip()}\n{script}")


def _iptables(net: Lan, *args: str) -> None:
    r = subprocess.run(net.run(net.village, ["iptables", *args]), capture_output=True, text=True,
                       timeout=IP_TIMEOUT_S)  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)}: {r.stderr.strip()}")


def _ruleset(ifname: str, shape: Shape) -> str:
    out: list[str] = []
    inp: list[str] = []
    if shape.loss_pct:
        out.append(f'oifname "{ifname}" numgen random mod 100 < {shape.loss_pct} drop')
        inp.append(f'iifname "{ifname}" numgen random mod 100 < {shape.loss_pct} drop')
    if shape.up_bytes_s:
        out.append(
            f'oifname "{ifname}" limit rate over {shape.up_bytes_s} bytes/second '
            f"burst {shape.burst_bytes} bytes drop"
        )
    if shape.down_bytes_s:
        inp.append(
            f'iifname "{ifname}" limit rate over {shape.down_bytes_s} bytes/second '
            f"burst {shape.burst_bytes} bytes drop"
        )
    return (
        "table inet shiliancut {\n"
        "  chain up { type filter hook output priority -10; policy accept;\n"
        + "".join(f"    {r}\n" for r in out)
        + "  }\n"
        "  chain down { type filter hook input priority -10; policy accept;\n"
        + "".join(f"    {r}\n" for r in inp)
        + "  }\n}\n"
    )


@contextmanager
def shaped(net: Lan, shape: Shape, workdir: Path) -> Iterator[None]:
    """The village's uplink behaves as ``shape`` inside the block, and is clean again after."""
    for tool in ("nft", "iptables"):
        if shutil.which(tool) is None:
            missing(tool, "apt-get install nftables iptables (make sysdeps)")
    delayer: subprocess.Popen[bytes] | None = None
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if shape.delay_ms:
            # the verdict process first: a queue rule with nobody bound drops every packet
            log = (workdir / "delayer.log").open("wb")
            delayer = subprocess.Popen(
                net.run(net.village, [sys.executable, "-m", "tests.faults.delayer",
                        "--queue", str(DELAY_QUEUE), "--delay-ms", str(shape.delay_ms)]),
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=Path(__file__).resolve().parents[2],  # ``tests`` is imported from the repo
            )  # fmt: skip
            assert delayer.stdout is not None
            line = delayer.stdout.readline()
            if line.strip() != b"ready":
                delayer.wait(DELAYER_START_S)
                raise RuntimeError(f"delayer: {(workdir / 'delayer.log').read_text()[-2000:]}")
        _nft(net, net.village, _ruleset(net.village_if, shape))
        if shape.delay_ms:
            for chain, flag in (("OUTPUT", "-o"), ("INPUT", "-i")):
                _iptables(net, "-A", chain, flag, net.village_if,
                          "-j", "NFQUEUE", "--queue-num", str(DELAY_QUEUE))  # fmt: skip
        yield
    finally:
        subprocess.run(net.run(net.village, ["nft", "delete", "table", "inet", "shiliancut"]),
                       capture_output=True, timeout=IP_TIMEOUT_S)  # fmt: skip
        if shape.delay_ms:
            for chain in ("OUTPUT", "INPUT"):
                subprocess.run(net.run(net.village, ["iptables", "-F", chain]),
                               capture_output=True, timeout=IP_TIMEOUT_S)  # fmt: skip
        if delayer is not None:
            delayer.terminate()
            delayer.wait(DELAYER_START_S)
