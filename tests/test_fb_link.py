"""The board link state machines (host and board cores) with injected time, over an in-memory
line that can drop, corrupt and cut bytes. No I/O, no sleeps: time is stepped by hand."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from firmware_bridge.board import MAX_TRIES, WINDOW, BoardCore
from firmware_bridge.framing import (
    PROTOCOL_VERSION,
    EventKey,
    Frame,
    FrameType,
    HelloMsg,
    encode_frame,
)
from firmware_bridge.link import (
    LINK_TIMEOUT_S,
    Heartbeat,
    HostLink,
    InputChanged,
    LinkDown,
    LinkEvent,
    LinkUp,
    PanelMessage,
)

STEP_S = 0.01


class Line:
    """A board and a host joined by a line; ``filter`` may rewrite bytes in either direction."""

    def __init__(self, seed: int = 0, auto_ack: bool = True) -> None:
        self.now = 1000.0
        self.rng = random.Random(seed)
        self.board = BoardCore(self.now, rng=lambda: self.rng.getrandbits(32))
        self.host = HostLink(self.now)
        self.auto_ack = auto_ack
        self.noise = 0.0
        self.cut = False
        self.drop_next_event_frames = 0
        self.log: list[tuple[float, LinkEvent]] = []

    def _line(self, data: bytes, to_host: bool) -> bytes:
        if self.cut:
            return b""
        if to_host and self.drop_next_event_frames:
            # Corrupt the CRC of the next event frames in this chunk (one byte flipped).
            parts = data.split(b"\x00")
            for i, p in enumerate(parts):
                if self.drop_next_event_frames and len(p) > 20:
                    parts[i] = p[:-1] + bytes([p[-1] ^ 0x01 or 0x02])
                    self.drop_next_event_frames -= 1
            data = b"\x00".join(parts)
        if self.noise:
            out = bytearray(data)
            for i in range(len(out)):
                if self.rng.random() < self.noise:
                    out[i] ^= 1 << self.rng.randrange(8)
            data = bytes(out)
        return data

    def exchange(self) -> None:
        for _ in range(4):
            b2h = self._line(self.board.data_to_send(self.now), to_host=True)
            if b2h:
                self.host.receive_data(b2h, self.now)
            for ev in self.host.events():
                self.log.append((self.now, ev))
                if self.auto_ack and isinstance(ev, InputChanged | PanelMessage):
                    self.host.ack(ev.key)
            h2b = self._line(self.host.data_to_send(), to_host=False)
            if h2b:
                self.board.receive_data(h2b, self.now)

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = round(self.now + STEP_S, 6)
            self.host.on_timer(self.now)
            self.board.on_timer(self.now)
            self.exchange()

    def until(self, cond: Callable[[], bool], limit_s: float = 60.0) -> None:
        end = self.now + limit_s
        while not cond():
            assert self.now < end, "condition not met in simulated time"
            self.run(STEP_S)

    def events(self, kind: type) -> list[LinkEvent]:
        return [e for _, e in self.log if isinstance(e, kind)]

    def inputs(self) -> list[InputChanged]:
        return [e for _, e in self.log if isinstance(e, InputChanged)]


def test_handshake_reports_the_board() -> None:
    line = Line()
    line.run(0.1)
    (up,) = line.events(LinkUp)
    assert isinstance(up, LinkUp)
    assert up.board.board_id == "SIM-0001"
    assert up.board.fw_version == "1.0.0"
    assert up.board.boot_id == line.board.boot_id
    assert up.board.n_inputs == 8
    assert up.board.protocol_version == PROTOCOL_VERSION
    assert line.host.state == "up" and line.board.state == "up"


def test_heartbeat_carries_full_input_state() -> None:
    line = Line()
    line.run(0.1)
    line.board.set_input(2, True, line.now)
    line.board.set_input(8, True, line.now)
    line.run(2.5)
    hbs = line.events(Heartbeat)
    assert len(hbs) >= 2
    last = hbs[-1]
    assert isinstance(last, Heartbeat)
    assert last.inputs == (False, True, False, False, False, False, False, True)
    assert last.queued == 0


def test_silence_takes_the_link_down_within_3s_and_it_comes_back() -> None:
    line = Line()
    line.run(1.5)
    line.cut = True
    cut_at = line.now
    line.until(lambda: line.host.state == "down")
    (down,) = line.events(LinkDown)
    assert isinstance(down, LinkDown) and down.reason == "timeout"
    down_at = next(t for t, e in line.log if isinstance(e, LinkDown))
    assert down_at - cut_at <= LINK_TIMEOUT_S + STEP_S
    line.board.set_input(1, True, line.now)  # pressed while the cable is out
    line.run(10)
    assert line.board.state == "hello"
    line.cut = False
    line.until(lambda: len(line.events(LinkUp)) == 2)
    line.until(lambda: len(line.inputs()) == 1)
    assert line.inputs()[0].active is True


def test_lost_event_frame_is_retransmitted_and_delivered_once() -> None:
    line = Line()
    line.run(0.1)
    line.drop_next_event_frames = 1
    line.board.set_input(4, True, line.now)
    line.run(0.05)
    assert line.inputs() == []
    line.until(lambda: len(line.inputs()) == 1)
    line.run(3)
    assert len(line.inputs()) == 1
    assert line.board.retransmits >= 1
    assert not line.board.queue


def test_order_is_kept_when_an_earlier_frame_is_lost() -> None:
    line = Line()
    line.run(0.1)
    line.drop_next_event_frames = 1
    for n in range(1, 6):
        line.board.set_input(n, True, line.now)
    line.until(lambda: len(line.inputs()) == 5)
    assert [e.input_no for e in line.inputs()] == [1, 2, 3, 4, 5]
    assert [e.key.seq for e in line.inputs()] == [1, 2, 3, 4, 5]


def test_board_retransmits_until_acked_and_host_does_not_redeliver() -> None:
    line = Line(auto_ack=False)
    line.run(0.1)
    key = line.board.set_input(1, True, line.now)
    line.run(1.0)
    assert [e.key for e in line.inputs()] == [key]
    assert line.board.retransmits >= 1  # not acked yet: the board keeps sending
    assert line.host.duplicates >= 1
    assert key is not None and key in line.board.queue
    line.host.ack(key)
    line.run(0.1)
    assert not line.board.queue
    line.run(5)
    assert len(line.inputs()) == 1


def test_retries_exhausted_rehandshake_keeps_the_event() -> None:
    line = Line(auto_ack=False)
    line.run(0.1)
    key = line.board.set_input(1, True, line.now)
    line.run(10)  # > MAX_TRIES sends: the board re-handshakes, the host stays up
    assert line.board.retransmits >= MAX_TRIES
    assert line.events(LinkDown) == []
    assert key is not None and key in line.board.queue
    line.host.ack(key)
    line.run(0.5)
    assert not line.board.queue
    assert len(line.inputs()) == 1


def test_reboot_with_unacked_events_neither_loses_nor_duplicates() -> None:
    line = Line(auto_ack=False)
    line.run(0.1)
    old = [line.board.set_input(n, True, line.now) for n in (1, 2, 3)]
    line.run(0.2)
    assert [e.key for e in line.inputs()] == old  # delivered, not yet durable
    old_boot = line.board.boot_id
    line.board.reboot(line.now)  # flash keeps the unacknowledged events
    new = line.board.set_input(5, True, line.now)
    line.run(0.5)
    assert line.board.boot_id != old_boot
    assert [type(e) for _, e in line.log if isinstance(e, LinkUp | LinkDown)] == [
        LinkUp,
        LinkDown,
        LinkUp,
    ]
    assert line.events(LinkDown)[0] == LinkDown("board_rebooted")
    line.auto_ack = True
    for e in line.inputs():
        line.host.ack(e.key)
    line.until(lambda: not line.board.queue)
    line.run(2)
    keys = [e.key for e in line.inputs()]
    assert keys == [*old, new]  # old ones once, then the new boot's event
    assert new is not None and new.boot_id == line.board.boot_id and new.seq == 1


def test_events_during_cut_then_reboot_arrive_in_order_with_original_keys() -> None:
    line = Line()
    line.run(0.1)
    line.cut = True
    before = [line.board.set_input(n, True, line.now) for n in (1, 2)]
    line.run(1)
    line.board.reboot(line.now)
    after = line.board.set_input(3, True, line.now)
    line.cut = False
    line.until(lambda: len(line.inputs()) == 3)
    assert [e.key for e in line.inputs()] == [*before, after]


def test_reboot_without_flash_loses_only_what_it_documents() -> None:
    line = Line(auto_ack=False)
    line.run(0.1)
    line.cut = True
    line.board.set_input(1, True, line.now)
    line.board.reboot(line.now, keep_queue=False)
    line.cut = False
    line.run(2)
    assert line.inputs() == []  # the board had no flash: documented loss


def test_host_restart_redelivers_unacked_with_the_same_key() -> None:
    line = Line(auto_ack=False)
    line.run(0.1)
    keys = [line.board.set_input(n, True, line.now) for n in (1, 2)]
    line.run(0.2)
    assert keys[0] is not None
    line.host.ack(keys[0])  # the first one was durable before the edge process died
    line.run(0.1)
    line.host = HostLink(line.now)  # edge restart: a fresh host end
    line.log.clear()
    line.auto_ack = True
    line.until(lambda: not line.board.queue)
    assert [e.key for e in line.inputs()] == [keys[1]]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_noise_and_cuts_every_press_exactly_once_in_order(seed: int) -> None:
    n = 300
    line = Line(seed=seed)
    line.noise = 0.01
    rng = random.Random(seed)
    line.run(0.5)
    pressed: dict[int, int] = {}
    for i in range(n):
        button = 1 + i % 4
        line.board.set_input(button, True, line.now)
        line.board.set_input(button, False, line.now)
        pressed[button] = pressed.get(button, 0) + 1
        if rng.random() < 0.01:
            line.cut = True
            line.run(rng.uniform(0.5, 5))
            line.cut = False
        line.run(rng.choice([0.0, 0.01, 0.05]))
    line.until(lambda: not line.board.queue, limit_s=300)
    line.run(1)
    presses = [e for e in line.inputs() if e.active]
    assert len(presses) == n
    assert len(line.inputs()) == 2 * n
    keys = [e.key for e in line.inputs()]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    for button, count in pressed.items():
        assert sum(1 for e in presses if e.input_no == button) == count
    assert sum(line.host.faults.values()) > 0  # the noise did hit frames


def test_window_bounds_frames_in_flight() -> None:
    line = Line(auto_ack=False)
    line.run(0.1)
    for _ in range(WINDOW * 2):
        line.board.panel_message("1234181130001017", line.now)
    line.run(0.05)
    assert len(line.events(PanelMessage)) == WINDOW
    for e in line.events(PanelMessage):
        assert isinstance(e, PanelMessage)
        line.host.ack(e.key)
    line.run(0.05)
    assert len(line.events(PanelMessage)) == 2 * WINDOW


def test_board_queue_bound_counts_drops() -> None:
    line = Line()
    board = BoardCore(line.now, queue_max=3)
    keys = [board.set_input(1, n % 2 == 0, line.now) for n in range(5)]
    assert keys[3] is None and keys[4] is None
    assert board.dropped == 2


def test_peer_faults_are_counted_not_raised() -> None:
    host = HostLink(0.0)
    bad_version = HelloMsg(PROTOCOL_VERSION + 1, 7, 0, 8, "X", "9").to_frame()
    host.receive_data(encode_frame(bad_version), 0.1)
    host.receive_data(encode_frame(Frame(0x7E, 0, b"")), 0.2)
    host.receive_data(encode_frame(Frame(FrameType.HELLO, 0, b"\x01")), 0.3)
    host.receive_data(b"\x00garbage\x00", 0.4)
    assert host.state == "down"
    assert host.faults["version"] == 1
    assert host.faults["unknown_type"] == 1
    assert host.faults["malformed"] == 1
    assert host.faults["cobs"] + host.faults["crc"] + host.faults["short"] == 1


def test_ack_while_down_is_harmless() -> None:
    host = HostLink(0.0)
    host.ack(EventKey(1, 1))
    assert host.events() == []
