"""The board's firmware-update side, sans-I/O: two slots, resumable receive, verify, trial and
rollback.

What the board firmware (bootloader + application) must do, as the simulator does it:

- **Receive** (FW_BEGIN / FW_CHUNK / FW_END, docs/serial-protocol.md): the image being received
  is written to the inactive slot and survives a line cut, a host restart and a board reboot;
  FW_BEGIN of the same image id answers with the bytes already held (the resume point), another
  image id starts over. Chunks are written only in order (``offset == held``); an earlier one is
  a duplicate, a later one is answered with OUT_OF_ORDER so the host goes back.
- **Verify** on FW_END, with the public key held by the bootloader: image id (SHA-256 of the
  bytes), header, board model, payload SHA-256, Ed25519 signature. A refused image is erased and
  FW_STATUS REFUSED says why; the running image is untouched.
- **Trial:** a verified image becomes active in TRIAL state and the board reboots into it (new
  boot id; HELLO reports the new version and ``boot_state`` TRIAL). BOOT_CONFIRM naming this
  boot makes it permanent. If no BOOT_CONFIRM comes within ``trial_s`` (the watchdog), or the
  image reboots more than MAX_TRIAL_BOOTS times during its trial, the bootloader switches back
  to the previous slot and reports ``boot_state`` ROLLED_BACK with the reason in every HELLO
  until the next update is verified.

The state (slots, active slot, trial, the partial image) is kept in memory and, with
``flash_dir``, in ``bootloader.json`` + ``partial.bin`` there (the simulator's flash): a
restarted simulator resumes a transfer and remembers its slots.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from firmware_bridge import image as fw_image
from firmware_bridge.framing import (
    BOOT_NORMAL,
    BOOT_ROLLED_BACK,
    BOOT_TRIAL,
    ROLLBACK_CRASH,
    ROLLBACK_NONE,
    ROLLBACK_NOT_CONFIRMED,
)
from firmware_bridge.fw_frames import (
    BootConfirm,
    FwBegin,
    FwChunk,
    FwCode,
    FwEnd,
    FwMessage,
    FwState,
    FwStatus,
    tag_of,
)

#: Trial watchdog: a new image must be confirmed within this time after it boots. The host
#: confirms after a few seconds of handshake + heartbeats; 30 s leaves room for a link that
#: needs a re-handshake or two.
TRIAL_S = 30.0
#: Boots of a trial image (it reset itself: crash, watchdog) before the bootloader rolls back.
MAX_TRIAL_BOOTS = 3
#: Delay between answering VERIFIED and rebooting, so the answer leaves the UART first.
REBOOT_DELAY_S = 0.2
#: Largest transfer: header + the largest payload (one application slot).
MAX_TOTAL = fw_image.HEADER.size + fw_image.MAX_PAYLOAD
#: A simulated firmware that crashes does so this long after it boots.
CRASH_AFTER_S = 1.0


@dataclass(slots=True)
class Slot:
    version: str
    image_id: str  # hex; "" for the factory image
    behaviour: str = fw_image.SimBehaviour.OK.value


@dataclass(slots=True)
class _Partial:
    image_id: str  # hex
    total: int
    signature: str  # hex
    version: str


class Bootloader:
    """The board's update state (see the module docstring); one per board."""

    def __init__(
        self,
        *,
        public_key: bytes | None,
        board_model: str,
        factory_version: str,
        trial_s: float = TRIAL_S,
        flash_dir: Path | None = None,
    ) -> None:
        self.public_key = public_key
        self.board_model = board_model
        self.trial_s = trial_s
        self.flash_dir = flash_dir
        self.slots: dict[str, Slot | None] = {"A": Slot(factory_version, ""), "B": None}
        self.active = "A"
        self.trial = False
        self.trial_boots = 0
        self.boot_state = BOOT_NORMAL
        self.rollback = ROLLBACK_NONE
        self.partial: _Partial | None = None
        self.data = bytearray()
        self.refused = 0
        self._boot_id = 0
        self._reboot_at: float | None = None
        self._trial_deadline: float | None = None
        self._verified_tag: int | None = None
        self._load()

    # -- what runs --------------------------------------------------------------------------

    @property
    def running(self) -> Slot:
        slot = self.slots[self.active]
        assert slot is not None
        return slot

    @property
    def behaviour(self) -> fw_image.SimBehaviour:
        """How the running (simulated) image behaves; only a trial image can misbehave here:
        a confirmed image passed its trial."""
        return fw_image.SimBehaviour(self.running.behaviour)

    def on_boot(self, boot_id: int, now: float) -> None:
        """The board (re)booted: count trial boots, roll back if the new image keeps failing."""
        self._boot_id = boot_id
        self._reboot_at = None
        self._verified_tag = None
        self._trial_deadline = None
        if self.trial:
            self.trial_boots += 1
            if self.trial_boots > MAX_TRIAL_BOOTS:
                self._roll_back(ROLLBACK_CRASH)
            else:
                self.boot_state = BOOT_TRIAL
                self._trial_deadline = now + self.trial_s
        if self.trial and self.behaviour is fw_image.SimBehaviour.CRASH:
            self._reboot_at = now + CRASH_AFTER_S
        self._save()

    def reboot_due(self, now: float) -> bool:
        """True when the board must reboot now (into a verified image, after a simulated
        crash, or into the previous slot when the trial watchdog expired)."""
        if self._trial_deadline is not None and now >= self._trial_deadline:
            self._roll_back(ROLLBACK_NOT_CONFIRMED)
            self._save()
            return True
        return self._reboot_at is not None and now >= self._reboot_at

    def next_deadline(self) -> float:
        return min(
            self._reboot_at if self._reboot_at is not None else float("inf"),
            self._trial_deadline if self._trial_deadline is not None else float("inf"),
        )

    def _roll_back(self, reason: int) -> None:
        previous = "B" if self.active == "A" else "A"
        if self.slots[previous] is not None:
            self.active = previous
        self.trial = False
        self.trial_boots = 0
        self.boot_state = BOOT_ROLLED_BACK
        self.rollback = reason
        self._trial_deadline = None

    # -- frames from the host -----------------------------------------------------------------

    def on_message(self, msg: FwMessage, now: float) -> FwStatus | None:
        """Handle one host frame; the FW_STATUS to send back (None: nothing to say)."""
        if isinstance(msg, FwBegin):
            return self._begin(msg)
        if isinstance(msg, FwChunk):
            return self._chunk(msg)
        if isinstance(msg, FwEnd):
            return self._end(msg, now)
        if isinstance(msg, BootConfirm):
            return self._confirm(msg)
        return None  # FW_STATUS is board → host only

    def _status(self, state: FwState, code: FwCode = FwCode.NONE, tag: int = 0) -> FwStatus:
        p = self.partial
        if p is None:
            return FwStatus(tag, state, code, 0, 0)
        return FwStatus(tag_of(bytes.fromhex(p.image_id)), state, code, len(self.data), p.total)

    def _begin(self, msg: FwBegin) -> FwStatus:
        if self.trial:
            return FwStatus(msg.tag, FwState.REFUSED, FwCode.IN_TRIAL, 0, msg.total)
        if msg.total > MAX_TOTAL:
            return FwStatus(msg.tag, FwState.REFUSED, FwCode.TOO_LARGE, 0, msg.total)
        if msg.total <= fw_image.HEADER.size:
            return FwStatus(msg.tag, FwState.REFUSED, FwCode.MALFORMED, 0, msg.total)
        if self.partial is None or self.partial.image_id != msg.image_id.hex():
            self.partial = _Partial(msg.image_id.hex(), msg.total, msg.signature.hex(), msg.version)
            self.data = bytearray()
            self._save(truncate=True)
        return self._status(FwState.RECEIVING)

    def _chunk(self, msg: FwChunk) -> FwStatus:
        p = self.partial
        if p is None or tag_of(bytes.fromhex(p.image_id)) != msg.tag:
            return FwStatus(msg.tag, FwState.IDLE, FwCode.NONE, 0, 0)
        held = len(self.data)
        if msg.offset > held:
            return self._status(FwState.RECEIVING, FwCode.OUT_OF_ORDER)
        if msg.offset == held:
            if held + len(msg.data) > p.total:
                return self._refuse(FwCode.MALFORMED)
            self.data += msg.data
            self._append(msg.data)
        return self._status(FwState.RECEIVING)

    def _end(self, msg: FwEnd, now: float) -> FwStatus:
        if self._verified_tag == msg.tag:
            return FwStatus(msg.tag, FwState.VERIFIED, FwCode.NONE, 0, 0)  # our answer was lost
        p = self.partial
        if p is None or tag_of(bytes.fromhex(p.image_id)) != msg.tag:
            return FwStatus(msg.tag, FwState.IDLE, FwCode.NONE, 0, 0)
        if len(self.data) < p.total:
            return self._status(FwState.RECEIVING, FwCode.INCOMPLETE)
        data = bytes(self.data)
        if hashlib.sha256(data).hexdigest() != p.image_id:
            return self._refuse(FwCode.DIGEST)
        try:
            img = fw_image.parse_image(data + bytes.fromhex(p.signature))
            if self.public_key is None:
                raise fw_image.ImageError(fw_image.ImageFault.SIGNATURE, "no key in bootloader")
            fw_image.check_signature(img.signed, img.signature, self.public_key)
        except fw_image.ImageError as e:
            return self._refuse(
                {
                    fw_image.ImageFault.SIGNATURE: FwCode.BAD_SIGNATURE,
                    fw_image.ImageFault.DIGEST: FwCode.DIGEST,
                }.get(e.fault, FwCode.MALFORMED)
            )
        if img.board_model != self.board_model:
            return self._refuse(FwCode.WRONG_MODEL)
        target = "B" if self.active == "A" else "A"
        self.slots[target] = Slot(
            img.version, p.image_id, fw_image.sim_behaviour(img.payload).value
        )
        self.active = target
        self.trial = True
        self.trial_boots = 0
        self.boot_state = BOOT_NORMAL
        self.rollback = ROLLBACK_NONE
        self.partial = None
        self.data = bytearray()
        self._verified_tag = msg.tag
        self._reboot_at = now + REBOOT_DELAY_S
        self._save(truncate=True)
        return FwStatus(msg.tag, FwState.VERIFIED, FwCode.NONE, len(data), len(data))

    def _refuse(self, code: FwCode) -> FwStatus:
        """Erase the received image (it will never verify) and say why."""
        status = self._status(FwState.REFUSED, code)
        self.refused += 1
        self.partial = None
        self.data = bytearray()
        self._save(truncate=True)
        return status

    def _confirm(self, msg: BootConfirm) -> FwStatus | None:
        if msg.boot_id != self._boot_id:
            return None  # for an earlier boot: not proof that this one runs well
        if self.trial:
            self.trial = False
            self.trial_boots = 0
            self.boot_state = BOOT_NORMAL
            self._trial_deadline = None
            self._reboot_at = None
            self._save()
        running = self.running.image_id
        tag = tag_of(bytes.fromhex(running)) if running else 0
        return FwStatus(tag, FwState.CONFIRMED, FwCode.NONE, 0, 0)

    # -- the simulated flash ----------------------------------------------------------------

    def _state_file(self) -> Path | None:
        return None if self.flash_dir is None else self.flash_dir / "bootloader.json"

    def _save(self, truncate: bool = False) -> None:
        path = self._state_file()
        if path is None or self.flash_dir is None:
            return
        state = {
            "slots": {k: asdict(v) if v else None for k, v in self.slots.items()},
            "active": self.active,
            "trial": self.trial,
            "trial_boots": self.trial_boots,
            "boot_state": self.boot_state,
            "rollback": self.rollback,
            "partial": asdict(self.partial) if self.partial else None,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)
        if truncate:
            (self.flash_dir / "partial.bin").write_bytes(bytes(self.data))

    def _append(self, data: bytes) -> None:
        if self.flash_dir is not None:
            with (self.flash_dir / "partial.bin").open("ab") as f:
                f.write(data)

    def _load(self) -> None:
        path = self._state_file()
        if path is None or self.flash_dir is None:
            return
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            return
        state = json.loads(path.read_text())
        self.slots = {k: Slot(**v) if v else None for k, v in state["slots"].items()}
        self.active = state["active"]
        self.trial = state["trial"]
        self.trial_boots = state["trial_boots"]
        self.boot_state = state["boot_state"]
        self.rollback = state["rollback"]
        self.partial = _Partial(**state["partial"]) if state["partial"] else None
        if self.partial is not None:
            with contextlib.suppress(FileNotFoundError):
                self.data = bytearray((self.flash_dir / "partial.bin").read_bytes())
            del self.data[self.partial.total :]
