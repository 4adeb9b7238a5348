"""Relay pulses (power-cycling a camera) over a real pty pair with the board simulator: the
board answers every RELAY_PULSE, pulses once per command id, switches the relay back after
``off_ms``, and refuses a relay it does not have. The frames' bytes are pinned (golden)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from firmware_bridge import relay_frames
from firmware_bridge.framing import CAP_RELAY, MessageError, encode_frame
from firmware_bridge.relay_frames import RelayPulse, RelayResult, RelayStatus
from firmware_bridge.relays import BoardRelays
from firmware_bridge.transport import RelayError

from .test_fb_sim import rig, until

DOC = Path(__file__).resolve().parent.parent / "docs" / "serial-protocol.md"
RELAY_BLOCK = re.compile(r"```hex-relay ([A-Z_]+)\n(.*?)```", re.S)


def test_frames_round_trip_and_the_documented_bytes_are_what_the_code_sends() -> None:
    pulse = RelayPulse(0x2265B1F5, 2, 5000)
    status = RelayStatus(0x2265B1F5, 2, RelayResult.PULSING, 5000)
    blocks = dict(RELAY_BLOCK.findall(DOC.read_text(encoding="utf-8")))
    assert blocks["RELAY_PULSE"].split() == pulse.encode().hex(" ").split()
    assert blocks["RELAY_STATUS"].split() == encode_frame(status.to_frame()).hex(" ").split()
    assert relay_frames.decode(pulse.to_frame()) == pulse
    assert relay_frames.decode(status.to_frame()) == status
    bad = status.to_frame()
    with pytest.raises(MessageError):
        relay_frames.decode(type(bad)(bad.type, bad.seq, bad.payload[:-1]))


def test_the_board_pulses_once_per_command_and_switches_back() -> None:
    r = BoardRelays(2)
    first = r.pulse(RelayPulse(7, 1, 500), now=10.0)
    assert first.result is RelayResult.PULSING and not r.powered(1)
    assert r.pulse(RelayPulse(7, 1, 500), now=10.1) == first  # a repeat: no second pulse
    assert r.pulses == {1: 1}
    assert r.pulse(RelayPulse(8, 1, 500), now=10.2).result is RelayResult.BUSY
    assert r.pulse(RelayPulse(9, 3, 500), now=10.2).result is RelayResult.NO_SUCH_RELAY
    assert r.pulse(RelayPulse(10, 2, 50), now=10.2).result is RelayResult.BAD_REQUEST
    assert r.next_deadline() == 10.5
    r.on_timer(10.5)
    assert r.powered(1) and r.next_deadline() is None


async def test_pulse_over_the_pty_is_acked_and_the_relay_comes_back() -> None:
    async with rig(seed=3, n_relays=2) as (sim, host):
        assert host.port.board is not None and host.port.board.capabilities & CAP_RELAY
        status = await host.port.pulse_relay(2, 300)
        assert status.result is RelayResult.PULSING and status.relay == 2
        assert sim.core.relays.pulses == {2: 1}
        await until(lambda: sim.core.relays.powered(2))
        missing = await host.port.pulse_relay(5, 300)
        assert missing.result is RelayResult.NO_SUCH_RELAY
        assert sim.core.relays.pulses == {2: 1}


async def test_a_cut_line_is_a_relay_error_not_a_hang() -> None:
    async with rig(seed=4, n_relays=1) as (sim, host):
        sim.cut(30)
        with pytest.raises(RelayError) as e:
            await host.port.pulse_relay(1, 300)
        assert e.value.code in ("no_answer", "link_down")
        assert sim.core.relays.pulses == {}
