"""Edge agent configuration: typed pydantic models loaded from TOML.

Every field has a description (``shilian edge check-config`` and docs/edge.md rely on it);
unknown keys are errors (``extra="forbid"``) so a typo is never silently ignored.
"""

from __future__ import annotations

import difflib
import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import PlainValidator
from pydantic_core import PydanticCustomError

from edge.config_devices import (
    MAX_CAMERAS,
    MAX_TERMINALS,
    CameraConfig,
    CameraProbeConfig,
    InfoSystemConfig,
    MeetingsConfig,
    RemediationConfig,
    SnapshotConfig,
    TerminalConfig,
    TerminalProbeConfig,
)
from edge.texts import config_error, os_error_zh, toml_where_zh
from wire import valid_node_id
from wire.limits import DEFAULT_HEALTH_INTERVAL_S, MAX_HEALTH_INTERVAL_S, MIN_HEALTH_INTERVAL_S


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise PydanticCustomError("port", "must be an integer 1-65535")
    return value


Port = Annotated[int, PlainValidator(_port, json_schema_input_type=int)]


class _Section(BaseModel):
    # defer_build: built on first use. Loading a file builds EdgeConfig's validator, which
    # includes every section; a section's own validator is built only if it is used alone.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class TlsConfig(_Section):
    """Client certificate files written by ``shilian provision enrol`` (the key never leaves
    the box)."""

    ca_file: Path = Field(description="CA certificate that signed the broker's (PEM)")
    cert_file: Path = Field(description="this node's certificate, CN = node id (PEM)")
    key_file: Path = Field(description="this node's private key (PEM, mode 0600)")
    renew_before_days: int = Field(
        default=30,
        ge=1,
        le=300,
        description="renew the certificate over MQTT when fewer days than this are left",
    )
    renew_check_interval_s: float = Field(
        default=86400.0, ge=60, le=7 * 86400, description="how often the expiry is checked"
    )


class BrokerConfig(_Section):
    host: str = Field(default="127.0.0.1", min_length=1, description="MQTT broker host name or IP")
    port: Port = Field(default=1883, description="MQTT broker TCP port")
    keepalive_s: int = Field(
        default=30,
        ge=5,
        le=3600,
        description="MQTT keepalive; the broker publishes our will after ~1.5x this of silence",
    )
    username: str | None = Field(default=None, description="MQTT user name (usually the node id)")
    password: str | None = Field(default=None, description="MQTT password; never logged or shown")
    client_id: str | None = Field(default=None, description="MQTT client id; default the node id")
    tls: TlsConfig | None = Field(
        default=None, description="MQTT over TLS with a client certificate (none: plain TCP)"
    )


class OutboxConfig(_Section):
    path: Path = Field(
        default=Path("/var/lib/shilian/outbox.sqlite3"),
        description="SQLite file of the durable outbox (on persistent storage, not tmpfs)",
    )
    max_events: int = Field(
        default=100_000,
        ge=10,
        le=10_000_000,
        description="bound on stored events; beyond it the oldest low-priority events are evicted",
    )
    max_batch: int = Field(
        default=512,
        ge=1,
        le=100_000,
        description="most operations committed in one transaction (group commit)",
    )


class MetricsConfig(_Section):
    enabled: bool = Field(default=True, description="serve Prometheus /metrics")
    host: str = Field(default="127.0.0.1", description="address the metrics server listens on")
    port: Port = Field(default=9108, description="port of the metrics server")


class LocalSocketConfig(_Section):
    path: Path = Field(
        default=Path("/run/shilian/edge.sock"),
        description="Unix socket where local software hands the agent events (mode 0660)",
    )


#: Limits of the board's zones (mirrors firmware_bridge.zones, which an idle edge does not
#: import): inputs 1..64 (the link's bitmap), debounce up to 10 s (longer hides real alarms).
MAX_BOARD_INPUTS = 64
MAX_DEBOUNCE_MS = 10_000


class ZoneConfig(_Section):
    input: int = Field(ge=1, le=MAX_BOARD_INPUTS, description="board input number (1-based)")
    kind: Literal["panic", "intrusion", "fire", "tamper"] = Field(
        description="alarm kind: panic 紧急求助, intrusion 入侵, fire 火警, tamper 防拆"
    )
    name: str = Field(default="", max_length=64, description="zone name shown to operators")
    normally_closed: bool = Field(
        default=False,
        description="true: the contact is closed when normal and opening it is the alarm (NC)",
    )
    debounce_ms: int = Field(
        default=50,
        ge=0,
        le=MAX_DEBOUNCE_MS,
        description="stability time on the board's clock: before a restore (leading) or before "
        "any change (trailing) counts",
    )
    debounce: Literal["leading", "trailing"] = Field(
        default="leading",
        description="leading: alarm at the first transition, chatter suppressed, restore once "
        "stable; trailing: the alarm too waits for debounce_ms (glitch filter, adds latency)",
    )
    always_armed: bool = Field(
        default=True, description="24-hour zone (24 小时防区): alarms even when disarmed"
    )


class AlarmBoardConfig(_Section):
    device: str = Field(min_length=1, description="serial device of the board, e.g. /dev/ttyS1")
    baudrate: int = Field(default=115200, ge=1200, le=4_000_000, description="serial speed (8N1)")
    device_id: str = Field(
        default="alarm_board",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
        description="device id of the board in device states and alarm events",
    )
    zones: list[ZoneConfig] = Field(
        default_factory=list, max_length=MAX_BOARD_INPUTS, description="one entry per input"
    )
    firmware_public_key: Path | None = Field(
        default=None,
        description="Ed25519 public key (hex file) firmware images must be signed with "
        "(shilian firmware keygen); none: firmware updates are refused",
    )

    @field_validator("zones")
    @classmethod
    def _unique_inputs(cls, v: list[ZoneConfig]) -> list[ZoneConfig]:
        seen: set[int] = set()
        for z in v:
            if z.input in seen:
                raise PydanticCustomError(
                    "zone_input_twice",
                    "输入 {input} 配置了两次 / input {input} is configured twice",
                    {"input": z.input},
                )
            seen.add(z.input)
        return v


#: SIA DC-09 defaults (mirrors firmware_bridge.sia_dc09 / sia_receiver, not imported here):
#: the standard's timestamp window (+20 s / -40 s) and the panels' retransmission span.
SIA_DEFAULT_PORT = 12128
SIA_PAST_S = 40.0
SIA_FUTURE_S = 20.0
SIA_DEDUP_WINDOW_S = 120.0


class SiaAccountConfig(_Section):
    account: str = Field(
        description="panel account number (3-16 hex digits, as programmed in the panel)"
    )
    key_hex: str | None = Field(
        default=None,
        description="AES-128/192/256 key in hex for this account's encrypted (*SIA-DCS, "
        "*ADM-CID) reports; absent: the account reports unencrypted",
    )

    @field_validator("account")
    @classmethod
    def _account(cls, v: str) -> str:
        if not (3 <= len(v) <= 16 and all(c in "0123456789abcdefABCDEF" for c in v)):
            raise PydanticCustomError("sia_account", "the account must be 3-16 hex digits")
        return v

    @field_validator("key_hex")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None and not (
            len(v) in (32, 48, 64) and all(c in "0123456789abcdefABCDEF" for c in v)
        ):
            raise PydanticCustomError(
                "sia_key", "the key must be 32, 48 or 64 hex digits (AES-128/192/256)"
            )
        return v


class SiaConfig(_Section):
    """SIA DC-09 receiver: alarm panels on the village LAN report to the edge box over TCP."""

    host: str = Field(
        default="0.0.0.0", min_length=1, description="address to listen on (the LAN side)"
    )
    port: int = Field(
        default=SIA_DEFAULT_PORT, ge=0, le=65535, description="TCP port panels report to"
    )
    device: str = Field(
        default="panel1",
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
        description="device id the panels' alarms are reported under",
    )
    accounts: list[SiaAccountConfig] = Field(
        default_factory=list,
        max_length=256,
        description="accepted accounts (others get DUH); empty: any unencrypted account",
    )
    timestamp_past_s: float = Field(
        default=SIA_PAST_S, gt=0, le=86400, description="oldest report timestamp accepted (s)"
    )
    timestamp_future_s: float = Field(
        default=SIA_FUTURE_S, gt=0, le=86400, description="newest report timestamp accepted (s)"
    )
    dedup_window_s: float = Field(
        default=SIA_DEDUP_WINDOW_S,
        gt=0,
        le=86400,
        description="a report seen again within this time is a retransmission (ACK lost)",
    )

    @field_validator("accounts")
    @classmethod
    def _unique_accounts(cls, v: list[SiaAccountConfig]) -> list[SiaAccountConfig]:
        seen: set[str] = set()
        for a in v:
            if a.account.upper() in seen:
                raise PydanticCustomError(
                    "sia_account_twice",
                    "account {account} is configured twice",
                    {"account": a.account},
                )
            seen.add(a.account.upper())
        return v


class EdgeConfig(_Section):
    node_id: str = Field(
        description="<12-digit village code>-<name>, e.g. 450102001001-a; the MQTT identity"
    )
    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="MQTT broker")
    health_interval_s: float = Field(
        default=DEFAULT_HEALTH_INTERVAL_S,
        ge=MIN_HEALTH_INTERVAL_S,
        le=MAX_HEALTH_INTERVAL_S,
        description="seconds between health reports (central: offline after 1.5x of silence)",
    )
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="durable outbox")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus")
    local_socket: LocalSocketConfig = Field(
        default_factory=LocalSocketConfig, description="local event socket"
    )
    shutdown_flush_s: float = Field(
        default=5.0, ge=0, le=300, description="on SIGTERM, seconds to keep sending the outbox"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="log level"
    )
    alarm_board: AlarmBoardConfig | None = Field(
        default=None, description="the village alarm board on a serial line (absent: none)"
    )
    sia: SiaConfig | None = Field(
        default=None, description="SIA DC-09 receiver for LAN alarm panels (absent: none)"
    )
    cameras: list[CameraConfig] = Field(
        default_factory=list, max_length=MAX_CAMERAS, description="cameras whose health is watched"
    )
    camera_probe: CameraProbeConfig = Field(
        default_factory=CameraProbeConfig, description="camera probe intervals and thresholds"
    )
    snapshots: SnapshotConfig = Field(
        default_factory=SnapshotConfig, description="snapshots from cameras on alarm"
    )
    remediation: RemediationConfig = Field(
        default_factory=RemediationConfig, description="power-cycling stalled cameras"
    )
    terminals: list[TerminalConfig] = Field(
        default_factory=list, max_length=MAX_TERMINALS, description="conference terminals"
    )
    terminal_probe: TerminalProbeConfig = Field(
        default_factory=TerminalProbeConfig, description="conference terminal probe settings"
    )
    info_system: InfoSystemConfig | None = Field(
        default=None, description="the information-system link check (absent: none)"
    )
    meetings: MeetingsConfig = Field(
        default_factory=MeetingsConfig, description="remote meetings (WebRTC) with central"
    )

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, v: str) -> str:
        if not valid_node_id(v):
            raise PydanticCustomError("node_id", "not a node id")
        return v

    @model_validator(mode="after")
    def _unique_devices(self) -> EdgeConfig:
        seen: set[str] = set()
        ids = [c.id for c in self.cameras] + [t.id for t in self.terminals]
        if self.info_system is not None:
            ids.append(self.info_system.id)
        for i in ids:
            if i in seen:
                raise PydanticCustomError("device_twice", "device id {id} is used twice", {"id": i})
            seen.add(i)
        cam = self.meetings.camera
        if cam is not None and cam not in {c.id for c in self.cameras}:
            raise PydanticCustomError(
                "meeting_camera", "meetings.camera {id} is not a [[cameras]] id", {"id": cam}
            )
        for cam in self.meetings.keep_warm:
            if cam not in {c.id for c in self.cameras}:
                raise PydanticCustomError(
                    "meeting_camera", "meetings.keep_warm {id} is not a [[cameras]] id",
                    {"id": cam},
                )  # fmt: skip
        for camera in self.cameras:
            if camera.relay is not None and self.alarm_board is None:
                raise PydanticCustomError(
                    "relay_without_board",
                    "camera {id} has a relay but there is no [alarm_board]",
                    {"id": camera.id},
                )
        return self

    @property
    def conference_camera(self) -> str | None:
        """The camera a call sends unless the operator chooses another."""
        if self.meetings.camera is not None:
            return self.meetings.camera
        return self.cameras[0].id if self.cameras else None

    @property
    def client_id(self) -> str:
        return self.broker.client_id or self.node_id

    def redacted(self) -> dict[str, Any]:
        """The config as JSON-able data with secrets replaced (``get-config``)."""
        data = self.model_dump(mode="json")
        if data["broker"].get("password") is not None:
            data["broker"]["password"] = "***"
        for cam in data.get("cameras", []):
            if cam.get("password"):
                cam["password"] = "***"
        for secret in ("turn_password", "turn_secret"):
            if data["meetings"].get(secret):
                data["meetings"][secret] = "***"
        for acct in (data.get("sia") or {}).get("accounts", []):
            if acct.get("key_hex") is not None:
                acct["key_hex"] = "***"
        return data


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One error of a config file: dotted path and a zh-CN / English explanation."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def said(self, lang: str) -> str:
        """The problem in one language (``zh`` or ``en``): a table in Chinese is not to carry
        the parser's English, nor an English one the Chinese."""
        zh, _, en = self.message.partition(" / ")
        text = (zh if lang == "zh" else en) or self.message
        return f"{self.path}: {text}" if self.path else text


class ConfigError(Exception):
    """The config file is unreadable or invalid; ``problems`` lists every error."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@functools.cache
def _keys(model: type[BaseModel]) -> frozenset[str]:
    """Every key of ``model`` and of the sections within it (for guessing a misspelt key)."""
    keys: set[str] = set()
    seen: set[type[BaseModel]] = set()
    todo = [model]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for name, f in m.model_fields.items():
            keys.add(f.alias or name)
            types = [f.annotation]
            while types:
                t = types.pop()
                if isinstance(t, type) and issubclass(t, BaseModel):
                    todo.append(t)
                types.extend(get_args(t))
    return frozenset(keys)


def _meant(key: object) -> str | None:
    """The known key a misspelt ``key`` most likely was (``cert_fle`` → ``cert_file``)."""
    if not isinstance(key, str):
        return None
    close = difflib.get_close_matches(key, _keys(EdgeConfig), n=1, cutoff=0.75)
    return close[0] if close else None


def explain(err: ValidationError) -> list[ConfigProblem]:
    out = []
    for e in err.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in e["loc"])
        kind, ctx = e["type"], e.get("ctx")
        if kind == "extra_forbidden" and e["loc"] and (meant := _meant(e["loc"][-1])):
            kind, ctx = "extra_forbidden_meant", {"key": meant}
        out.append(ConfigProblem(path, config_error(kind, ctx, e["msg"])))
    return out


def parse_config(data: dict[str, Any]) -> EdgeConfig:
    try:
        return EdgeConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(explain(e)) from None


def missing_files(cfg: EdgeConfig) -> list[ConfigProblem]:
    """Files the config names that are not there (the TLS certificate and key): a valid config
    that cannot connect. Paths are as the agent opens them (relative to its working directory)."""
    tls = cfg.broker.tls
    if tls is None:
        return []
    out = []
    for name in ("ca_file", "cert_file", "key_file"):
        path: Path = getattr(tls, name)
        if not path.is_file():
            msg = config_error("missing_file", {"path": path}, f"file not found: {path}")
            out.append(ConfigProblem(f"broker.tls.{name}", msg))
    return out


def load_config(path: Path) -> EdgeConfig:
    """Read and validate a TOML file; :class:`ConfigError` explains every problem."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        ctx = {"detail": e, "path": path, "why_zh": os_error_zh(e)}
        raise ConfigError([ConfigProblem("", config_error("file", ctx, str(e)))]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8", errors="replace"))
    except tomllib.TOMLDecodeError as e:
        ctx = {"detail": e, "where_zh": toml_where_zh(e)}
        raise ConfigError([ConfigProblem("", config_error("toml", ctx, str(e)))]) from None
    return parse_config(data)
