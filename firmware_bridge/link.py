"""The host (edge box) end of the board link: a sans-I/O state machine.

Bytes from the serial port go in (:meth:`HostLink.receive_data`), :class:`LinkEvent` values come
out (:meth:`HostLink.events`), bytes to write come out of :meth:`HostLink.data_to_send`; time is
passed in and :meth:`HostLink.next_deadline` says when to call :meth:`HostLink.on_timer`.

Guarantees (docs/serial-protocol.md):
- every board event (input change, panel message) is delivered once per host process, in board
  order, identified by an :class:`EventKey` ``(boot_id, seq)`` that stays the same across
  retransmits and board reboots; the board retransmits until :meth:`HostLink.ack` is called, so
  call it only once the event is durable (in the edge outbox). After a crash of the edge process
  an event delivered but not acknowledged is delivered again with the same key: the key is the
  idempotency key for the outbox.
- the link is declared down after LINK_TIMEOUT_S without a valid frame and comes back by itself
  when the board answers the handshake again.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from firmware_bridge import fw_frames, relay_frames
from firmware_bridge.framing import (
    BOOT_NORMAL,
    PROTOCOL_VERSION,
    ROLLBACK_REASONS,
    EventKey,
    Frame,
    FrameDecoder,
    FrameType,
    HeartbeatMsg,
    HelloMsg,
    InputEventMsg,
    MessageError,
    PanelMessageMsg,
    ack_frame,
    decode_board_frame,
    encode_frame,
    hello_ack_frame,
    nak_frame,
)

#: The board sends a heartbeat every second; the host answers with its own at the same pace.
HEARTBEAT_S = 1.0
#: Silence after which the link is down: 3 s, three missed heartbeats (docs/serial-protocol.md).
LINK_TIMEOUT_S = 3.0
#: While down, how often the host asks the board for a HELLO (a HELLO is also sent on open).
HOST_HELLO_INTERVAL_S = 1.0
#: Events held back to restore board order after a lost frame (>= the board's window of 16).
REORDER_MAX = 64
#: Board boots whose next expected seq is remembered (dedupe across reboots): a board keeps
#: unacknowledged events of older boots in flash, far fewer than this many boots' worth.
ORIGINS_MAX = 64
#: Delivered, not yet acknowledged events remembered (the board has at most 16 in flight).
PENDING_MAX = 4096

__all__ = [
    "HEARTBEAT_S",
    "LINK_TIMEOUT_S",
    "BoardInfo",
    "EventKey",
    "FirmwareStatus",
    "Heartbeat",
    "HostLink",
    "InputChanged",
    "LinkDown",
    "LinkEvent",
    "LinkFault",
    "LinkUp",
    "PanelMessage",
    "RelayAnswer",
]


class LinkFault(StrEnum):
    """Protocol faults of the board, counted in ``HostLink.faults`` with the framing faults."""

    MALFORMED = "malformed"  # payload does not parse for its type
    UNKNOWN_TYPE = "unknown_type"  # a frame type the host does not handle
    VERSION = "version"  # HELLO with a protocol version we do not speak
    BAD_INPUT = "bad_input"  # input number outside 1..n_inputs
    OUT_OF_WINDOW = "out_of_window"  # event seq too far ahead of the next expected one
    BOOT_MISMATCH = "boot_mismatch"  # heartbeat from a boot we did not handshake with


@dataclass(frozen=True, slots=True)
class BoardInfo:
    board_id: str
    fw_version: str
    boot_id: int
    protocol_version: int
    capabilities: int
    n_inputs: int
    boot_state: int = BOOT_NORMAL  # framing.BOOT_*: normal, trial (new image), rolled back
    rollback: int = 0  # framing.ROLLBACK_*: why the last new image was rolled back

    @property
    def rollback_reason(self) -> str:
        return ROLLBACK_REASONS.get(self.rollback, f"code_{self.rollback}")


@dataclass(frozen=True, slots=True)
class LinkUp:
    board: BoardInfo


@dataclass(frozen=True, slots=True)
class LinkDown:
    reason: str  # "timeout", "board_rebooted", "port_closed", "port_error"


@dataclass(frozen=True, slots=True)
class InputChanged:
    key: EventKey
    input_no: int  # 1-based
    active: bool
    board_ms: int  # board uptime (ms, wraps at 2**32) in the boot the event happened in
    inputs: tuple[bool, ...]  # all inputs after the change; inputs[0] is input 1


@dataclass(frozen=True, slots=True)
class PanelMessage:
    key: EventKey
    raw: str  # e.g. a 16-digit Contact ID message, unparsed
    board_ms: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    inputs: tuple[bool, ...]
    board_ms: int
    queued: int  # events the board holds unacknowledged
    dropped: int  # events the board lost because its queue was full (since boot)


@dataclass(frozen=True, slots=True)
class FirmwareStatus:
    """FW_STATUS from the board (progress or outcome of a firmware transfer)."""

    status: fw_frames.FwStatus


@dataclass(frozen=True, slots=True)
class RelayAnswer:
    """RELAY_STATUS from the board: the answer to a RELAY_PULSE (firmware_bridge.relay_frames)."""

    status: relay_frames.RelayStatus


LinkEvent = (
    LinkUp | LinkDown | InputChanged | PanelMessage | Heartbeat | FirmwareStatus | RelayAnswer
)


class HostLink:
    """The host end of one board link (see the module docstring)."""

    def __init__(self, now: float) -> None:
        self.state: Literal["up", "down"] = "down"
        self.board: BoardInfo | None = None
        self.decoder = FrameDecoder()
        #: Faults by reason (framing faults and :class:`LinkFault`), for metrics.
        self.faults: Counter[str] = Counter()
        self.duplicates = 0
        self.naks_sent = 0  # gaps asked to be resent (metrics)
        self._events: list[LinkEvent] = []
        self._tx = bytearray()
        self._tx_fw = bytearray()  # firmware frames: sent after the control frames (ACKs)
        self._last_rx = now
        self._last_tx_heartbeat = now
        self._last_host_hello = now
        self._next: OrderedDict[int, int] = OrderedDict()  # origin boot -> next expected seq
        self._held: dict[EventKey, InputChanged | PanelMessage] = {}
        self._pending: dict[EventKey, None] = {}  # delivered, not acknowledged (ordered)
        self.open(now)

    # -- the user's side ------------------------------------------------------------------

    def events(self) -> list[LinkEvent]:
        out, self._events = self._events, []
        return out

    def data_to_send(self) -> bytes:
        """Control frames (ACK, NAK, heartbeats) first, then firmware frames: an alarm's ACK
        never waits behind more than the update's window."""
        out = bytes(self._tx + self._tx_fw)
        self._tx.clear()
        self._tx_fw.clear()
        return out

    def send_firmware(self, data: bytes) -> None:
        """Queue encoded FW_* frames (the update core bounds how many are in flight)."""
        if self.state == "up":
            self._tx_fw += data

    def send_relay(self, pulse: relay_frames.RelayPulse) -> bool:
        """Queue a RELAY_PULSE with the control frames; False (nothing sent) while down."""
        if self.state != "up":
            return False
        self._tx += pulse.encode()
        return True

    def ack(self, key: EventKey) -> None:
        """The event ``key`` is durable: the board may forget it. Acknowledging while the link
        is down is fine: the board retransmits after the next handshake and is acked then."""
        self._pending.pop(key, None)
        if self.state == "up":
            self._tx += ack_frame(key)

    def open(self, now: float) -> None:
        """The port was (re)opened: ask the board for a HELLO."""
        self.decoder.reset()
        self._send_host_hello(now)

    def close(self, now: float, reason: str = "port_closed") -> None:
        """The port is gone: the link is down until :meth:`open` and a new handshake."""
        self._down(reason)
        self._tx.clear()
        self._tx_fw.clear()

    def next_deadline(self) -> float:
        if self.state == "up":
            return min(self._last_rx + LINK_TIMEOUT_S, self._last_tx_heartbeat + HEARTBEAT_S)
        return self._last_host_hello + HOST_HELLO_INTERVAL_S

    def on_timer(self, now: float) -> None:
        if self.state == "up" and now >= self._last_rx + LINK_TIMEOUT_S:
            self._down("timeout")
        if self.state == "up":
            if now >= self._last_tx_heartbeat + HEARTBEAT_S:
                self._tx += encode_frame(Frame(FrameType.HOST_HEARTBEAT, 0))
                self._last_tx_heartbeat = now
        elif now >= self._last_host_hello + HOST_HELLO_INTERVAL_S:
            self._send_host_hello(now)

    # -- bytes in ---------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        for item in self.decoder.feed(data):
            if isinstance(item, Frame):
                self._frame(item, now)
            else:
                self.faults[item.fault.value] += 1

    def _frame(self, frame: Frame, now: float) -> None:
        if frame.type == FrameType.FW_STATUS:
            self._fw_status(frame, now)
            return
        if frame.type == FrameType.RELAY_STATUS:
            self._relay_status(frame, now)
            return
        try:
            msg = decode_board_frame(frame)
        except MessageError as e:
            self.faults[e.fault] += 1
            return
        if isinstance(msg, HelloMsg):
            self._hello(msg, now)
            return
        if self.state != "up" or self.board is None:
            # A board that did not handshake with us (we restarted): ask for a HELLO.
            if now >= self._last_host_hello + HOST_HELLO_INTERVAL_S / 4:
                self._send_host_hello(now)
            return
        self._last_rx = now
        if isinstance(msg, HeartbeatMsg):
            if msg.boot_id != self.board.boot_id:
                self.faults[LinkFault.BOOT_MISMATCH] += 1
                self._send_host_hello(now)
                return
            self._events.append(
                Heartbeat(
                    _bits(msg.inputs, self.board.n_inputs), msg.board_ms, msg.queued, msg.dropped
                )
            )
        else:
            self._board_event(msg, self.board)

    def _fw_status(self, frame: Frame, now: float) -> None:
        try:
            msg = fw_frames.decode(frame)
        except MessageError as e:
            self.faults[e.fault] += 1
            return
        if self.state == "up" and isinstance(msg, fw_frames.FwStatus):
            self._last_rx = now
            self._events.append(FirmwareStatus(msg))

    def _relay_status(self, frame: Frame, now: float) -> None:
        try:
            msg = relay_frames.decode(frame)
        except MessageError as e:
            self.faults[e.fault] += 1
            return
        if self.state == "up" and isinstance(msg, relay_frames.RelayStatus):
            self._last_rx = now
            self._events.append(RelayAnswer(msg))

    def _hello(self, msg: HelloMsg, now: float) -> None:
        if msg.version != PROTOCOL_VERSION:
            self.faults[LinkFault.VERSION] += 1
            return
        info = BoardInfo(
            msg.board_id,
            msg.fw_version,
            msg.boot_id,
            msg.version,
            msg.capabilities,
            msg.n_inputs,
            msg.boot_state,
            msg.rollback,
        )
        self._tx += hello_ack_frame(msg.boot_id)
        self._last_rx = now
        if self.state == "up" and self.board is not None:
            if self.board.boot_id == info.boot_id:
                # Re-handshake of the same boot (our HELLO_ACK or ACKs were lost, or the board
                # reports a new boot state after BOOT_CONFIRM): no state change.
                self.board = info
                return
            self._down("board_rebooted")
        self.state = "up"
        self.board = info
        self._last_tx_heartbeat = now
        self._events.append(LinkUp(info))

    def _board_event(self, msg: InputEventMsg | PanelMessageMsg, board: BoardInfo) -> None:
        ev: InputChanged | PanelMessage
        key = EventKey(msg.origin, msg.seq)
        if isinstance(msg, InputEventMsg):
            if not 1 <= msg.input_no <= board.n_inputs:
                self.faults[LinkFault.BAD_INPUT] += 1
                return
            bits = _bits(msg.inputs, board.n_inputs)
            ev = InputChanged(key, msg.input_no, msg.active, msg.board_ms, bits)
        else:
            ev = PanelMessage(key, msg.raw, msg.board_ms)
        nxt = max(self._next.get(msg.origin, msg.base), msg.base)
        if msg.seq < nxt:
            self.duplicates += 1
            if key not in self._pending:
                self._tx += ack_frame(key)  # acked before, the board missed our ACK
            return
        if msg.seq >= nxt + REORDER_MAX:
            self.faults[LinkFault.OUT_OF_WINDOW] += 1
            return
        if msg.seq > nxt and key not in self._held:
            # Serial lines keep order: nxt was lost. The board resends it if its last send
            # went out before this event's (else the resend is already on its way).
            self._tx += nak_frame(EventKey(msg.origin, nxt), msg.seq)
            self.naks_sent += 1
        self._held[key] = ev
        while (k := EventKey(msg.origin, nxt)) in self._held:
            self._deliver(self._held.pop(k))
            nxt += 1
        self._next[msg.origin] = nxt
        self._next.move_to_end(msg.origin)
        while len(self._next) > ORIGINS_MAX:
            old, _ = self._next.popitem(last=False)
            for k in [k for k in self._held if k.boot_id == old]:
                del self._held[k]

    def _deliver(self, ev: InputChanged | PanelMessage) -> None:
        self._pending[ev.key] = None
        while len(self._pending) > PENDING_MAX:
            del self._pending[next(iter(self._pending))]
        self._events.append(ev)

    def _down(self, reason: str) -> None:
        if self.state == "up":
            self.state = "down"
            self._events.append(LinkDown(reason))
        # Held-back events are retransmitted by the board after the next handshake.
        self._held.clear()
        self._tx_fw.clear()  # the update core resends from the board's resume point

    def _send_host_hello(self, now: float) -> None:
        self._tx += encode_frame(Frame(FrameType.HOST_HELLO, 0))
        self._last_host_hello = now


def _bits(bitmap: bytes, n: int) -> tuple[bool, ...]:
    return tuple(
        bool(bitmap[i // 8] >> (i % 8) & 1) if i // 8 < len(bitmap) else False for i in range(n)
    )


def bitmap(inputs: Sequence[bool]) -> bytes:
    """Inputs as the wire bitmap: input 1 is bit 0 of byte 0 (LSB first)."""
    out = bytearray((len(inputs) + 7) // 8)
    for i, on in enumerate(inputs):
        if on:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)
