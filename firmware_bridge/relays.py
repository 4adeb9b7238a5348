"""The board's relay outputs, sans-I/O: what the firmware does with a RELAY_PULSE.

A pulse switches relay ``n`` off (the camera's supply runs through its normally-closed contact)
for ``off_ms``, then back on. Every RELAY_PULSE is answered at once with a RELAY_STATUS of the
same command id; a command id seen before (the host repeats a pulse whose answer was lost) is
answered again with the first answer and does not pulse a second time. The board remembers
the last :data:`REMEMBERED_COMMANDS` ids.
"""

from __future__ import annotations

from collections import OrderedDict

from firmware_bridge.relay_frames import (
    MAX_OFF_MS,
    MIN_OFF_MS,
    RelayPulse,
    RelayResult,
    RelayStatus,
)

#: Command ids remembered for repeats: the host repeats a pulse at most a few times within
#: seconds, and has at most one pulse per relay in flight.
REMEMBERED_COMMANDS = 32


class BoardRelays:
    def __init__(self, n_relays: int) -> None:
        self.n_relays = n_relays
        #: Relay number → board time its power comes back (relays in a pulse).
        self.off_until: dict[int, float] = {}
        #: Pulses started, per relay (the simulator's ``status`` and tests read it).
        self.pulses: dict[int, int] = {}
        self._answers: OrderedDict[int, RelayStatus] = OrderedDict()

    def pulse(self, msg: RelayPulse, now: float) -> RelayStatus:
        """Apply a RELAY_PULSE; the RELAY_STATUS to send back."""
        seen = self._answers.get(msg.command_id)
        if seen is not None:
            return seen
        if not 1 <= msg.relay <= self.n_relays:
            result = RelayResult.NO_SUCH_RELAY
        elif not MIN_OFF_MS <= msg.off_ms <= MAX_OFF_MS:
            result = RelayResult.BAD_REQUEST
        elif msg.relay in self.off_until:
            result = RelayResult.BUSY
        else:
            result = RelayResult.PULSING
            self.off_until[msg.relay] = now + msg.off_ms / 1000
            self.pulses[msg.relay] = self.pulses.get(msg.relay, 0) + 1
        answer = RelayStatus(msg.command_id, msg.relay, result, msg.off_ms)
        self._answers[msg.command_id] = answer
        while len(self._answers) > REMEMBERED_COMMANDS:
            self._answers.popitem(last=False)
        return answer

    def powered(self, relay: int) -> bool:
        return relay not in self.off_until

    def next_deadline(self) -> float | None:
        return min(self.off_until.values(), default=None)

    def on_timer(self, now: float) -> None:
        for relay, until in list(self.off_until.items()):
            if now >= until:
                del self.off_until[relay]
