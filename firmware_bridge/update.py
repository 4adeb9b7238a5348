"""Host side of a firmware update, sans-I/O: link events and time in, FW_* frames out.

One :class:`FirmwareUpdate` per attempt. The driver (:mod:`firmware_bridge.flasher`) feeds it
what the link reports (:meth:`~FirmwareUpdate.on_link_up`, ``on_link_down``, ``on_heartbeat``,
``on_status``) and the time (``on_timer`` at ``next_deadline()``), and writes what
:meth:`~FirmwareUpdate.data_to_send` returns. The image must be verified with the host's public
key BEFORE it is handed here (:func:`firmware_bridge.image.verify`); the board verifies again.

Sequence (docs/serial-protocol.md, "Firmware update"):

1. FW_BEGIN when the link is up; the board answers with the bytes it already holds for this
   image id (resume point after a line cut, an edge restart or a board reboot).
2. FW_CHUNKs from there, at most WINDOW_CHUNKS beyond the last acknowledged byte. No progress
   for CHUNK_TIMEOUT_S: go back to the acknowledged byte (go-back-N); an OUT_OF_ORDER status
   does the same at once. After MAX_STALLS timeouts in a row, FW_BEGIN again (re-sync).
3. FW_END; the board verifies, answers VERIFIED (or REFUSED with a code) and reboots.
4. The board comes back with the new version in TRIAL. After CONFIRM_AFTER_S of link up with
   heartbeats (no link down in between) the host sends BOOT_CONFIRM until CONFIRMED.
   A HELLO reporting ROLLED_BACK ends the update as ``rolled_back`` with the board's reason.

A link that stays down longer than ``give_up_s``, or no progress at all for as long, ends the
update as ``stalled``; the board keeps what it holds and a later update resumes there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from firmware_bridge import fw_frames
from firmware_bridge.framing import BOOT_ROLLED_BACK, BOOT_TRIAL, CAP_FW_UPDATE
from firmware_bridge.fw_frames import (
    CHUNK_SIZE,
    BootConfirm,
    FwBegin,
    FwChunk,
    FwEnd,
    FwState,
    FwStatus,
)
from firmware_bridge.image import Image
from firmware_bridge.link import BoardInfo

#: Chunks in flight beyond the board's acknowledged byte: 6 x ~245 bytes is ~130 ms of line at
#: 115200, more than a round trip (the line stays busy) and less than the board's 300 ms event
#: retransmit timeout (an alarm's ACK queued behind the window is never late enough to cause
#: a retransmit).
WINDOW_CHUNKS = 6
#: No progress for this long: resend from the acknowledged byte.
CHUNK_TIMEOUT_S = 1.0
#: Timeouts in a row before FW_BEGIN again (the board may have lost our transfer state).
MAX_STALLS = 5
#: Repeat of FW_BEGIN / FW_END / BOOT_CONFIRM while their answer is missing.
CONTROL_RETRY_S = 1.0
#: The new image must handshake and heartbeat this long before the host confirms it
#: (the board boots the new image in a trial state and confirms it: docs/serial-protocol.md).
CONFIRM_AFTER_S = 3.0
#: Give up after this long without progress (link down, board silent): the board keeps what
#: it holds; the next attempt resumes.
GIVE_UP_S = 300.0


class Phase(StrEnum):
    WAITING_LINK = "waiting_link"
    BEGIN = "begin"
    SENDING = "sending"
    VERIFYING = "verifying"
    REBOOTING = "rebooting"
    TRIAL = "trial"
    CONFIRMING = "confirming"
    DONE = "done"


class Result(StrEnum):
    SUCCESS = "success"  # the new image runs and is confirmed
    ALREADY = "already_running"  # the board already runs this version (nothing sent)
    REFUSED = "refused"  # the board refused the image (``detail``: why)
    ROLLED_BACK = "rolled_back"  # the new image failed its trial (``detail``: why)
    UNSUPPORTED = "unsupported"  # the board has no CAP_FW_UPDATE
    STALLED = "stalled"  # no progress for give_up_s


@dataclass(frozen=True, slots=True)
class Progress:
    phase: Phase
    sent: int  # bytes the board holds
    total: int
    result: Result | None
    detail: str  # refusal code, rollback reason, running version
    resumed_from: int  # bytes the board already held at the first FW_BEGIN answer
    resume_points: tuple[int, ...]  # bytes held at each FW_BEGIN answer (cuts, reboots)


class FirmwareUpdate:
    """One update attempt (see the module docstring)."""

    def __init__(
        self,
        image: Image,
        now: float,
        *,
        confirm_after_s: float = CONFIRM_AFTER_S,
        give_up_s: float = GIVE_UP_S,
    ) -> None:
        self.image = image
        self.image_id = bytes.fromhex(image.image_id)
        self.tag = fw_frames.tag_of(self.image_id)
        self.data = image.signed
        self.total = len(self.data)
        self.confirm_after_s = confirm_after_s
        self.give_up_s = give_up_s
        self.phase = Phase.WAITING_LINK
        self.result: Result | None = None
        self.detail = ""
        self.acked = 0
        self.next = 0
        self.resumed_from: int | None = None
        self.resume_points: list[int] = []
        self.retransmits = 0
        self.resyncs = 0
        self._out: list[bytes] = []
        self._progress_at = now
        self._retry_at = float("inf")
        self._stalls = 0
        self._rewound_at = -1
        self._high = 0  # highest byte ever sent (for the retransmit count)
        self._trial_boot = 0
        self._trial_heartbeats = 0
        self._trial_since: float | None = None

    # -- outputs ------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    def progress(self) -> Progress:
        return Progress(
            self.phase,
            self.acked,
            self.total,
            self.result,
            self.detail,
            self.resumed_from or 0,
            tuple(self.resume_points),
        )

    def next_deadline(self) -> float:
        if self.done:
            return float("inf")
        return min(self._progress_at + self.give_up_s, self._retry_at)

    # -- inputs -------------------------------------------------------------------------------

    def on_link_up(self, board: BoardInfo, now: float) -> None:
        if self.done:
            return
        if not board.capabilities & CAP_FW_UPDATE:
            self._finish(Result.UNSUPPORTED, "board has no firmware update capability")
            return
        after_end = self.phase in (Phase.VERIFYING, Phase.REBOOTING, Phase.TRIAL, Phase.CONFIRMING)
        if after_end:
            if board.boot_state == BOOT_ROLLED_BACK:
                self._finish(Result.ROLLED_BACK, board.rollback_reason or "rolled_back")
                return
            if board.fw_version == self.image.version and board.boot_state == BOOT_TRIAL:
                self._progress(now)
                self.phase = Phase.TRIAL
                self._trial_boot = board.boot_id
                self._trial_since = now
                self._trial_heartbeats = 0
                self._retry_at = float("inf")
                return
            if board.fw_version == self.image.version:
                self._finish(Result.SUCCESS, board.fw_version)  # confirmed; its answer was lost
                return
            if self.phase is not Phase.VERIFYING:
                # Rebooted into the old image without reporting a rollback: not ours to judge
                # further; the verify step will be repeated from the board's state.
                self.phase = Phase.VERIFYING
        elif (
            self.phase is Phase.WAITING_LINK
            and self.resumed_from is None
            and board.fw_version == self.image.version
        ):
            if board.boot_state == BOOT_TRIAL:
                # An earlier attempt (a host that died) got this far: judge the trial here.
                self.phase = Phase.TRIAL
                self._trial_boot = board.boot_id
                self._trial_since = now
                self._trial_heartbeats = 0
            else:
                self._finish(Result.ALREADY, board.fw_version)
            return
        self._begin(now)

    def on_link_down(self, now: float) -> None:
        if self.done:
            return
        self._trial_since = None
        if self.phase in (Phase.BEGIN, Phase.SENDING):
            self.phase = Phase.WAITING_LINK
            self._retry_at = float("inf")
        elif self.phase is Phase.VERIFYING:
            self._retry_at = float("inf")

    def on_heartbeat(self, now: float) -> None:
        """The new image runs well when it has handshaken and then sent heartbeats for
        ``confirm_after_s`` without the link going down in between."""
        if self.phase is not Phase.TRIAL or self._trial_since is None:
            return
        self._trial_heartbeats += 1
        if self._trial_heartbeats >= 2 and now >= self._trial_since + self.confirm_after_s:
            self._progress(now)
            self._confirm(now)

    def on_status(self, st: FwStatus, now: float) -> None:
        if self.done:
            return
        if st.state is FwState.CONFIRMED:
            if self.phase is Phase.CONFIRMING:
                self._finish(Result.SUCCESS, self.image.version)
            return
        if st.tag != self.tag:
            return  # about another (older) transfer
        if st.state is FwState.REFUSED:
            self._finish(Result.REFUSED, fw_frames.CODE_NAMES[st.code])
        elif st.state is FwState.VERIFIED:
            if self.phase in (Phase.SENDING, Phase.VERIFYING, Phase.BEGIN):
                self.acked = self.total
                self.phase = Phase.REBOOTING
                self._retry_at = float("inf")
                self._progress(now)
        elif st.state is FwState.RECEIVING:
            self._receiving(st, now)
        elif st.state is FwState.IDLE and self.phase in (Phase.SENDING, Phase.VERIFYING):
            self._begin(now)  # the board forgot the transfer (erased): begin again

    def on_timer(self, now: float) -> None:
        if self.done:
            return
        if now >= self._progress_at + self.give_up_s:
            self._finish(Result.STALLED, f"no progress for {self.give_up_s:.0f} s")
            return
        if now < self._retry_at:
            return
        if self.phase is Phase.BEGIN:
            self._begin(now)
        elif self.phase is Phase.SENDING:
            self._stalls += 1
            if self._stalls > MAX_STALLS:
                self.resyncs += 1
                self._begin(now)
            else:
                self.next = self.acked
                self._rewound_at = self.acked
                self._pump(now)
        elif self.phase is Phase.VERIFYING:
            self._end(now)
        elif self.phase is Phase.CONFIRMING:
            self._confirm(now)

    # -- internals ----------------------------------------------------------------------------

    def _receiving(self, st: FwStatus, now: float) -> None:
        if st.total != self.total:
            return
        if self.resumed_from is None:
            self.resumed_from = st.held
        if self.phase is Phase.BEGIN or (self.phase is Phase.VERIFYING and st.held < self.total):
            if self.phase is Phase.BEGIN:
                self.resume_points.append(st.held)
            self.phase = Phase.SENDING
            self.acked = self.next = st.held
        if self.phase is not Phase.SENDING:
            return
        if st.held > self.acked:
            self.acked = st.held
            self._stalls = 0
            self._progress(now)
            self.next = max(self.next, self.acked)
        lost = st.code is fw_frames.FwCode.OUT_OF_ORDER or st.held < self.acked
        if lost and self._rewound_at != st.held:
            # A chunk was lost on the line: resend from the board's byte (once per loss).
            self._rewound_at = st.held
            self.acked = min(self.acked, st.held)
            self.next = st.held
        if st.code is fw_frames.FwCode.INCOMPLETE:
            self.next = st.held
        self._pump(now)

    def _pump(self, now: float) -> None:
        if self.acked >= self.total:
            self._end(now)
            return
        limit = min(self.total, self.acked + WINDOW_CHUNKS * CHUNK_SIZE)
        while self.next < limit:
            end = min(self.next + CHUNK_SIZE, self.total)
            if self.next < self._high:
                self.retransmits += 1
            self._out.append(
                fw_frames.encode(FwChunk(self.tag, self.next, self.data[self.next : end]))
            )
            self.next = end
            self._high = max(self._high, end)
        self._retry_at = now + CHUNK_TIMEOUT_S

    def _begin(self, now: float) -> None:
        self.phase = Phase.BEGIN
        self._stalls = 0
        self._rewound_at = -1
        msg = FwBegin(self.image_id, self.total, self.image.signature, self.image.version)
        self._out.append(fw_frames.encode(msg))
        self._retry_at = now + CONTROL_RETRY_S

    def _end(self, now: float) -> None:
        self.phase = Phase.VERIFYING
        self._out.append(fw_frames.encode(FwEnd(self.tag)))
        self._retry_at = now + CONTROL_RETRY_S

    def _confirm(self, now: float) -> None:
        self.phase = Phase.CONFIRMING
        self._out.append(fw_frames.encode(BootConfirm(self._trial_boot)))
        self._retry_at = now + CONTROL_RETRY_S

    def _progress(self, now: float) -> None:
        self._progress_at = now

    def _finish(self, result: Result, detail: str) -> None:
        self.phase = Phase.DONE
        self.result = result
        self.detail = detail
        self._retry_at = float("inf")
