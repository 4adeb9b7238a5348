"""The SIA DC-09 receiver's pure core: its configuration, the cutting of a TCP byte stream
into frames, and the per-frame decision (parse, check account and key, timestamp, duplicate,
answer). No I/O: the time comes from the clock passed in. The asyncio shell is
:mod:`edge.sia_receiver`, the sharing of connection slots :mod:`edge.sia_slots`."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from firmware_bridge.alarms import Alarm
from firmware_bridge.contact_id import PanelEvent
from firmware_bridge.sia_dc09 import (
    DEFAULT_FUTURE_S,
    DEFAULT_PAST_S,
    MAX_FRAME_BYTES,
    SiaError,
    SiaFrame,
    SiaLengthError,
    SiaUnsupported,
    ack,
    check_timestamp,
    duh,
    frame_events,
    nak,
    parse_frame,
)

#: Panels retransmit an un-ACKed report after ~20-30 s and give up after a few tries; a report
#: seen again within this window is the same report (its ACK was lost), not a new event.
DEFAULT_DEDUP_WINDOW_S = 120.0
#: Reports remembered for duplicate suppression: a village has a handful of panels sending a
#: few reports a minute; the cap keeps a flooding peer from growing memory without bound.
MAX_DEDUP_ENTRIES = 4096
_HEX_KEY = r"^(?:[0-9A-Fa-f]{32}|[0-9A-Fa-f]{48}|[0-9A-Fa-f]{64})$"


class SiaReceiverConfig(BaseModel):
    """Configuration of the receiver (a section of the edge config)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="0.0.0.0", description="Address to listen on (the village LAN side)")
    port: int = Field(
        default=12128, ge=0, le=65535, description="TCP port panels report to (0: any)"
    )
    device: str = Field(
        default="panel1",
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
        description="Edge device id the panel's alarms are reported under",
    )
    key_hex: str | None = Field(
        default=None,
        pattern=_HEX_KEY,
        description="AES key (128/192/256-bit, hex) for encrypted (*SIA-DCS, *ADM-CID) frames",
    )
    keys: dict[str, str] = Field(
        default_factory=dict,
        description="Per-account AES keys (account hex → key hex); before key_hex",
    )
    accounts: list[str] = Field(
        default_factory=list, description="Accepted panel accounts (hex); empty accepts any"
    )
    timestamp_past_s: float = Field(
        default=DEFAULT_PAST_S,
        gt=0,
        description="Oldest accepted frame timestamp, seconds before now",
    )
    timestamp_future_s: float = Field(
        default=DEFAULT_FUTURE_S,
        gt=0,
        description="Newest accepted frame timestamp, seconds after now",
    )
    dedup_window_s: float = Field(
        default=DEFAULT_DEDUP_WINDOW_S,
        gt=0,
        description="Window in which a retransmission is a duplicate",
    )

    @property
    def key(self) -> bytes | None:
        return bytes.fromhex(self.key_hex) if self.key_hex else None

    def account_keys(self) -> dict[str, bytes]:
        return {a.upper(): bytes.fromhex(k) for a, k in self.keys.items()}

    @classmethod
    def from_edge(cls, cfg: Any) -> SiaReceiverConfig:
        """From ``edge.config.SiaConfig`` (typed loosely: edge.config stays importable without
        this package)."""
        return cls(
            host=cfg.host,
            port=cfg.port,
            device=cfg.device,
            accounts=[a.account for a in cfg.accounts],
            keys={a.account: a.key_hex for a in cfg.accounts if a.key_hex},
            timestamp_past_s=cfg.timestamp_past_s,
            timestamp_future_s=cfg.timestamp_future_s,
            dedup_window_s=cfg.dedup_window_s,
        )


class FrameSplitter:
    """Cuts a byte stream into frames ending in CR; leading LF and garbage before a frame are
    dropped. A frame longer than ``max_bytes`` is never buffered: its bytes are discarded up
    to the next CR and one :class:`SiaLengthError` is reported in its place."""

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self._max = max_bytes
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> Iterator[bytes | SiaLengthError]:
        while data:
            cr = data.find(b"\r")
            part, data = (data, b"") if cr < 0 else (data[:cr], data[cr + 1 :])
            if not self._discarding and len(self._buf) + len(part) > self._max:
                self._buf.clear()
                self._discarding = True
            if not self._discarding:
                self._buf += part
            if cr < 0:
                return
            if self._discarding:
                self._discarding = False
                yield SiaLengthError(f"frame longer than {self._max} bytes")
                continue
            frame = bytes(self._buf)
            self._buf.clear()
            lf = frame.rfind(b"\n")
            frame = frame[lf + 1 :] if lf >= 0 else frame
            if frame.strip():
                yield frame


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one frame: emit ``events`` then send ``response`` (``commit`` the frame
    after emitting), or just send ``response`` (a duplicate, a refusal)."""

    response: bytes
    frame: SiaFrame | None = None
    events: list[Alarm | PanelEvent] = field(default_factory=list)
    duplicate: bool = False
    error: SiaError | None = None


class SiaSession:
    """Pure receiver logic shared by all connections: parse, check, deduplicate, answer."""

    def __init__(self, config: SiaReceiverConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self._key = config.key
        self._keys = config.account_keys()
        self._accounts = {a.upper() for a in config.accounts}
        self._seen: OrderedDict[tuple[str, str, str, str], float] = OrderedDict()

    @staticmethod
    def _dedup_key(f: SiaFrame) -> tuple[str, str, str, str]:
        # The timestamp and the encryption pad change on a retransmission; the payload doesn't.
        return (f.account, f.seq, f.token, f.data + "".join(f.extended))

    def _expire(self, now: float) -> None:
        horizon = now - self.config.dedup_window_s
        while self._seen and (
            next(iter(self._seen.values())) < horizon or len(self._seen) > MAX_DEDUP_ENTRIES
        ):
            self._seen.popitem(last=False)

    def decide(self, raw: bytes) -> Decision:
        """Never raises for peer input: every refusal is a Decision with ``error`` set."""
        now = self.clock()
        cfg = self.config
        key = self._key
        try:
            try:
                frame = parse_frame(raw, key=None if self._keys else key)
            except SiaUnsupported as e:  # encrypted: decrypt with the account's key
                f = e.frame
                key = self._keys.get(f.account.upper(), self._key) if f is not None else None
                if f is None or not f.encrypted or key is None:
                    raise
                frame = parse_frame(raw, key=key)
            if not frame.encrypted and frame.account.upper() in self._keys:
                # An account with a key reports encrypted: a clear frame under its number is
                # a misconfigured panel or a spoof on the LAN; never an alarm.
                return Decision(
                    duh(frame), frame, error=SiaUnsupported("account requires encryption", frame)
                )
            if self._accounts and frame.account.upper() not in self._accounts:
                return Decision(duh(frame), frame, error=SiaError("unknown account", frame))
            check_timestamp(frame, now, cfg.timestamp_past_s, cfg.timestamp_future_s)
            self._expire(now)
            if self._dedup_key(frame) in self._seen:
                return Decision(ack(frame, now, key), frame, duplicate=True)
            events = frame_events(frame, cfg.device)
        except SiaError as e:
            resp = duh(e.frame) if e.response == "DUH" else nak(now)
            return Decision(resp, e.frame, error=e)
        return Decision(ack(frame, now, key), frame, events)

    @staticmethod
    def idempotency_key(frame: SiaFrame, n: int) -> str:
        """The outbox key of the ``n``-th event of ``frame``: the same on a retransmission
        (timestamp and pad excluded), different for a new report reusing the seq."""
        digest = hashlib.sha256(
            (frame.token + "|" + frame.data + "".join(frame.extended)).encode()
        ).hexdigest()[:16]
        where = f"{frame.receiver or ''}:{frame.prefix}"
        return f"sia:{frame.account.upper()}:{where}:{frame.seq}:{digest}:{n}"

    def commit(self, frame: SiaFrame) -> None:
        """Remember a frame whose events are stored, so a retransmission is not stored twice."""
        key = self._dedup_key(frame)
        self._seen.pop(key, None)
        self._seen[key] = self.clock()
        self._expire(self.clock())
