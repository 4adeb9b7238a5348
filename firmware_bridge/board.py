"""The board end of the link, sans-I/O: what the alarm board's firmware must do.

The simulator runs this core over a pty; a firmware engineer can read it next to
docs/serial-protocol.md as the reference behaviour:

- On boot pick a random 32-bit boot id, restart event seqs at 1, send HELLO every
  HELLO_INTERVAL_S until a HELLO_ACK echoing the boot id arrives; then the link is up.
- While up, send HEARTBEAT every HEARTBEAT_S with the full input state. No valid frame from
  the host for LINK_TIMEOUT_S (the host sends HOST_HEARTBEAT every second): back to HELLO.
  HOST_HELLO from the host: send HELLO at once and wait for HELLO_ACK.
- Every input change and relayed panel message is queued with ``(origin boot id, seq)`` and
  kept until the host ACKs exactly that key. At most WINDOW events are in flight, all from
  the same origin boot as the oldest queued event (so order survives a reboot); each is
  retransmitted after RETRANSMIT_S, doubling up to RETRANSMIT_CAP_S, or at once on a NAK
  from the host or an ACK of a later event (the line keeps order: the earlier one was lost).
  After MAX_TRIES sends of one event without an ACK the board re-handshakes (back to HELLO)
  and, once up again, starts over: an event is never dropped while it is queued.
- The queue holds QUEUE_MAX events. When it is full a new event is dropped and counted in
  the heartbeat's ``dropped`` (the host raises a trouble); with CAP_FLASH_QUEUE the queue
  survives a reboot (the simulator keeps it by default, ``reboot(keep_queue=False)`` models a
  board without flash).
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from firmware_bridge import fw_frames, relay_frames
from firmware_bridge.bootloader import Bootloader
from firmware_bridge.framing import (
    CAP_FLASH_QUEUE,
    CAP_FW_UPDATE,
    CAP_INPUTS,
    CAP_PANEL,
    CAP_RELAY,
    MAX_INPUTS,
    MAX_PANEL_RAW,
    PROTOCOL_VERSION,
    EventKey,
    Frame,
    FrameDecoder,
    FrameType,
    HeartbeatMsg,
    HelloMsg,
    InputEventMsg,
    MessageError,
    PanelMessageMsg,
    decode_host_frame,
    encode_frame,
)
from firmware_bridge.image import SimBehaviour
from firmware_bridge.link import HEARTBEAT_S, LINK_TIMEOUT_S, bitmap
from firmware_bridge.relays import BoardRelays

#: HELLO repeat while waiting for HELLO_ACK.
HELLO_INTERVAL_S = 1.0
#: Events in flight (sent, not acknowledged). 16 frames of ~25 bytes is ~35 ms of line time:
#: enough to keep the line busy while the host commits events to its outbox.
WINDOW = 16
#: First retransmit timeout: a round trip on the line is ~5 ms, an outbox commit on a Pi SD
#: card tens of ms; 300 ms avoids retransmitting events the host is still storing.
RETRANSMIT_S = 0.3
#: Retransmit timeout cap (backoff doubles up to here).
RETRANSMIT_CAP_S = 2.0
#: Sends of one event before the board re-handshakes (~4.7 s of retries at the timeouts above).
MAX_TRIES = 5
#: Queued unacknowledged events: 1024 x 32-byte records is one 32 KB flash sector on the
#: reference MCU; at one alarm a second that is 17 minutes without an edge box.
QUEUE_MAX = 1024

#: Default bytes per data_to_send call: the whole window (16 x ~25 bytes) at once.
MAX_BURST = 512

CAPABILITIES = CAP_INPUTS | CAP_PANEL | CAP_FLASH_QUEUE


@dataclass(slots=True)
class _Queued:
    msg: InputEventMsg | PanelMessageMsg
    tries: int = 0  # sends since the link came up
    due: float = 0.0  # next retransmit
    sent_no: int = 0  # order of the last send among all sends (the line keeps this order)


class BoardCore:
    """The board's link state machine (see the module docstring)."""

    def __init__(
        self,
        now: float,
        *,
        board_id: str = "SIM-0001",
        fw_version: str = "1.0.0",
        n_inputs: int = 8,
        queue_max: int = QUEUE_MAX,
        rng: Callable[[], int] | None = None,
        bootloader: Bootloader | None = None,
        n_relays: int = 0,
    ) -> None:
        if not 0 < n_inputs <= MAX_INPUTS:
            raise ValueError(f"n_inputs must be in 1..{MAX_INPUTS}")
        self.board_id = board_id
        self.fw_version = fw_version
        self.n_inputs = n_inputs
        self.queue_max = queue_max
        self._rng = rng or (lambda: random.getrandbits(32))
        self.inputs = [False] * n_inputs
        self.decoder = FrameDecoder()
        self.faults: Counter[str] = Counter()
        self.queue: OrderedDict[EventKey, _Queued] = OrderedDict()
        self.dropped = 0
        self.sent_events = 0
        self.retransmits = 0
        self._sends = 0
        self.rehandshakes = 0
        self._tx = bytearray()
        #: Firmware update (two slots, trial, rollback); None: a board without CAP_FW_UPDATE.
        self.bootloader = bootloader
        #: Relay outputs (RELAY_PULSE); none: a board without CAP_RELAY.
        self.relays = BoardRelays(n_relays)
        self._boot(now)

    def _boot(self, now: float) -> None:
        self.boot_id = self._rng() & 0xFFFFFFFF
        self.boot_at = now
        self.seq = 0
        self.state: Literal["hello", "up"] = "hello"
        self._last_rx = now
        self._next_hello = now
        self._next_heartbeat = now
        if self.bootloader is not None:
            self.bootloader.on_boot(self.boot_id, now)
            self.fw_version = self.bootloader.running.version

    def reboot(self, now: float, keep_queue: bool = True) -> None:
        """A new boot: new boot id, seqs from 1, handshake again. Queued events keep their
        original key (they are in flash) unless ``keep_queue`` is False (RAM only: lost)."""
        if not keep_queue:
            self.queue.clear()
        self.decoder.reset()
        self._tx.clear()
        self.dropped = 0
        self._boot(now)

    def board_ms(self, now: float) -> int:
        return int((now - self.boot_at) * 1000) & 0xFFFFFFFF

    # -- inputs -----------------------------------------------------------------------------

    def set_input(self, input_no: int, active: bool, now: float) -> EventKey | None:
        """Input ``input_no`` (1-based) is now ``active``; queues an event if it changed."""
        if not 1 <= input_no <= self.n_inputs:
            raise ValueError(f"input {input_no} not in 1..{self.n_inputs}")
        if self.inputs[input_no - 1] == active:
            return None
        self.inputs[input_no - 1] = active
        return self._queue(
            lambda seq, base: InputEventMsg(
                seq, self.boot_id, base, self.board_ms(now), input_no, active, bitmap(self.inputs)
            ),
            now,
        )

    def panel_message(self, raw: str, now: float) -> EventKey | None:
        """Relay a message of the local alarm panel (e.g. 16 Contact ID digits) unparsed."""
        if not raw or len(raw) > MAX_PANEL_RAW or not raw.isascii():
            raise ValueError(f"panel message must be 1..{MAX_PANEL_RAW} ASCII characters")
        return self._queue(
            lambda seq, base: PanelMessageMsg(seq, self.boot_id, base, self.board_ms(now), raw),
            now,
        )

    def _queue(
        self, make: Callable[[int, int], InputEventMsg | PanelMessageMsg], now: float
    ) -> EventKey | None:
        if len(self.queue) >= self.queue_max:
            self.dropped += 1
            return None
        self.seq += 1
        key = EventKey(self.boot_id, self.seq)
        base = self._base(self.boot_id, default=self.seq)
        self.queue[key] = _Queued(make(self.seq, base))
        return key

    def _base(self, origin: int, default: int) -> int:
        """Oldest queued seq of ``origin`` (the host may forget everything below it)."""
        for key in self.queue:
            if key.boot_id == origin:
                return key.seq
        return default

    # -- bytes ------------------------------------------------------------------------------

    def data_to_send(self, now: float, limit: int = MAX_BURST) -> bytes:
        """Bytes for the UART, control frames first, then due event frames up to about
        ``limit`` bytes (at least one whole frame). Call it when the UART can take more: an
        event counts as sent, and its retransmit timer starts, only when it is taken here, so
        bytes waiting behind a slow line never cause spurious retransmits."""
        out = bytearray(self._tx)
        self._tx.clear()
        if self.state == "up":
            self._pump(now, out, limit)
        return bytes(out)

    def receive_data(self, data: bytes, now: float) -> None:
        for item in self.decoder.feed(data):
            if not isinstance(item, Frame):
                self.faults[item.fault.value] += 1
                continue
            if item.type in fw_frames.FW_TYPES:
                self._firmware(item, now)
                continue
            if item.type == FrameType.RELAY_PULSE:
                self._relay(item, now)
                continue
            try:
                msg = decode_host_frame(item)
            except MessageError as e:
                self.faults[e.fault] += 1
                continue
            if msg.type == FrameType.HELLO_ACK:
                if msg.boot_id != self.boot_id or msg.version != PROTOCOL_VERSION:
                    self.faults["stale_hello_ack"] += 1
                    continue
                self._last_rx = now
                if self.state == "hello":
                    self.state = "up"
                    self._next_heartbeat = now
                    for q in self.queue.values():
                        q.tries = 0
            elif msg.type == FrameType.HOST_HELLO:
                self._rehandshake(now)
            elif self.state == "up":
                self._last_rx = now
                key = EventKey(msg.boot_id, msg.seq)
                if msg.type == FrameType.ACK and (acked := self.queue.pop(key, None)):
                    # The line keeps order and the host acks in order: an earlier event sent
                    # before this one and still unacknowledged lost its frame or its ACK.
                    # Resend it now rather than after the retransmit timeout.
                    for k, q in self.queue.items():
                        if k.boot_id != key.boot_id or k.seq > key.seq:
                            break
                        if q.tries and q.sent_no < acked.sent_no:
                            q.due = min(q.due, now)
                elif (
                    msg.type == FrameType.NAK
                    and (lost := self.queue.get(key))
                    and (later := self.queue.get(EventKey(msg.boot_id, msg.trigger)))
                    and lost.tries
                    and later.sent_no > lost.sent_no
                ):
                    # Sent after the last send of the missing one: that send was lost.
                    lost.due = min(lost.due, now)
        self.on_timer(now)

    # -- time -------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When to call :meth:`on_timer` and :meth:`data_to_send` next (events never sent
        are due at once: their deadline is 0)."""
        if self.state == "hello":
            return self._next_hello
        due = [q.due for q in self._window()]
        if self.bootloader is not None:
            due.append(self.bootloader.next_deadline())
        if (relay_due := self.relays.next_deadline()) is not None:
            due.append(relay_due)
        return min([self._last_rx + LINK_TIMEOUT_S, self._next_heartbeat, *due])

    def on_timer(self, now: float) -> None:
        if self.bootloader is not None and self.bootloader.reboot_due(now):
            self.reboot(now)
        self.relays.on_timer(now)
        if self.state == "up" and now >= self._last_rx + LINK_TIMEOUT_S:
            self._rehandshake(now)
        if self.state == "hello":
            if now >= self._next_hello:
                self._send_hello(now)
            return
        if now >= self._next_heartbeat and self._heartbeats_on():
            hb = HeartbeatMsg(
                self.boot_id,
                self.board_ms(now),
                min(len(self.queue), 0xFFFF),
                min(self.dropped, 0xFFFF),
                bitmap(self.inputs),
            )
            self._tx += encode_frame(hb.to_frame())
            self._next_heartbeat = now + HEARTBEAT_S

    def _heartbeats_on(self) -> bool:
        """False while a (simulated) firmware that fails its trial runs: it never gets to its
        main loop, so it handshakes but sends no heartbeat."""
        b = self.bootloader
        return b is None or not b.trial or b.behaviour is not SimBehaviour.NO_HEARTBEAT

    def _relay(self, frame: Frame, now: float) -> None:
        """RELAY_PULSE (firmware_bridge.relays): answered at once, ahead of queued events."""
        if self.state != "up" or not self.relays.n_relays:
            self.faults["unknown_type" if not self.relays.n_relays else "relay_while_down"] += 1
            return
        try:
            msg = relay_frames.decode(frame)
        except MessageError as e:
            self.faults[e.fault] += 1
            return
        assert isinstance(msg, relay_frames.RelayPulse)  # the type was checked by the caller
        self._last_rx = now
        self._tx += encode_frame(self.relays.pulse(msg, now).to_frame())

    def _firmware(self, frame: Frame, now: float) -> None:
        """FW_* frames go to the bootloader; its FW_STATUS answers go out with the control
        frames, ahead of queued events."""
        if self.bootloader is None:
            self.faults["unknown_type"] += 1
            return
        try:
            msg = fw_frames.decode(frame)
        except MessageError as e:
            self.faults[e.fault] += 1
            return
        if self.state == "up":
            self._last_rx = now
        status = self.bootloader.on_message(msg, now)
        if status is not None:
            self._tx += fw_frames.encode(status)
            if status.state is fw_frames.FwState.CONFIRMED and self.state == "up":
                self._send_hello(now)  # same boot id: the host sees boot_state NORMAL

    def _window(self) -> list[_Queued]:
        if not self.queue:
            return []
        head = next(iter(self.queue)).boot_id
        out: list[_Queued] = []
        for key, q in self.queue.items():
            if key.boot_id != head or len(out) == WINDOW:
                break
            out.append(q)
        return out

    def _pump(self, now: float, out: bytearray, limit: int) -> None:
        for q in self._window():
            if len(out) >= limit:
                return
            if q.tries and now < q.due:
                continue
            if q.tries >= MAX_TRIES:
                self._rehandshake(now)
                out += self._tx
                self._tx.clear()
                return
            if q.sent_no:
                self.retransmits += 1
            else:
                self.sent_events += 1
            q.tries += 1
            self._sends += 1
            q.sent_no = self._sends
            q.due = now + min(RETRANSMIT_S * 2 ** (q.tries - 1), RETRANSMIT_CAP_S)
            # The base may have moved since the event was queued (older ones were acked).
            msg = q.msg
            base = self._base(msg.origin, default=msg.seq)
            if base != msg.base:
                msg = q.msg = _with_base(msg, base)
            out += encode_frame(msg.to_frame())

    def _rehandshake(self, now: float) -> None:
        self.rehandshakes += 1
        self.state = "hello"
        self._send_hello(now)

    def _send_hello(self, now: float) -> None:
        b = self.bootloader
        hello = HelloMsg(
            PROTOCOL_VERSION,
            self.boot_id,
            CAPABILITIES
            | (CAP_FW_UPDATE if b is not None else 0)
            | (CAP_RELAY if self.relays.n_relays else 0),
            self.n_inputs,
            self.board_id,
            self.fw_version,
            b.boot_state if b is not None else 0,
            b.rollback if b is not None else 0,
        )
        self._tx += encode_frame(hello.to_frame())
        self._next_hello = now + HELLO_INTERVAL_S


def _with_base(msg: InputEventMsg | PanelMessageMsg, base: int) -> InputEventMsg | PanelMessageMsg:
    if isinstance(msg, InputEventMsg):
        return InputEventMsg(
            msg.seq, msg.origin, base, msg.board_ms, msg.input_no, msg.active, msg.inputs
        )
    return PanelMessageMsg(msg.seq, msg.origin, base, msg.board_ms, msg.raw)
