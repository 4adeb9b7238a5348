"""Edge agent configuration: typed pydantic models loaded from TOML.

Every field has a description (``shilian edge check-config`` and docs/edge.md rely on it);
unknown keys are errors (``extra="forbid"``) so a typo is never silently ignored.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.functional_validators import PlainValidator
from pydantic_core import PydanticCustomError

from edge.texts import config_error
from wire import valid_node_id
from wire.limits import DEFAULT_HEALTH_INTERVAL_S, MAX_HEALTH_INTERVAL_S, MIN_HEALTH_INTERVAL_S


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise PydanticCustomError("port", "must be an integer 1-65535")
    return value


Port = Annotated[int, PlainValidator(_port, json_schema_input_type=int)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Section):
    """Client certificate files written by ``shilian provision enrol`` (the key never leaves
    the box)."""

    ca_file: Path = Field(description="CA certificate that signed the broker's (PEM)")
    cert_file: Path = Field(description="this node's certificate, CN = node id (PEM)")
    key_file: Path = Field(description="this node's private key (PEM, mode 0600)")


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
        description="a change counts once it has lasted this long on the board's clock",
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

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, v: str) -> str:
        if not valid_node_id(v):
            raise PydanticCustomError("node_id", "not a node id")
        return v

    @property
    def client_id(self) -> str:
        return self.broker.client_id or self.node_id

    def redacted(self) -> dict[str, Any]:
        """The config as JSON-able data with secrets replaced (``get-config``)."""
        data = self.model_dump(mode="json")
        if data["broker"].get("password") is not None:
            data["broker"]["password"] = "***"
        return data


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One error of a config file: dotted path and a zh-CN / English explanation."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The config file is unreadable or invalid; ``problems`` lists every error."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def explain(err: ValidationError) -> list[ConfigProblem]:
    out = []
    for e in err.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in e["loc"])
        out.append(ConfigProblem(path, config_error(e["type"], e.get("ctx"), e["msg"])))
    return out


def parse_config(data: dict[str, Any]) -> EdgeConfig:
    try:
        return EdgeConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(explain(e)) from None


def load_config(path: Path) -> EdgeConfig:
    """Read and validate a TOML file; :class:`ConfigError` explains every problem."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(
            [ConfigProblem("", config_error("file", {"detail": e}, str(e)))]
        ) from None
    try:
        data = tomllib.loads(raw.decode("utf-8", errors="replace"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(
            [ConfigProblem("", config_error("toml", {"detail": e}, str(e)))]
        ) from None
    return parse_config(data)
