"""Central's configuration: a TOML file validated by pydantic models (``extra="forbid"``).

``shilian central check-config FILE`` prints every error with its path, in Chinese and English.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from central.alerts import AlertsConfig
from wire.limits import RECONNECT_GRACE_S
from wire.meeting import turn_url_problem

#: MQTT session expiry central asks for: one week. Central's session is persistent so that QoS 1
#: events queue in the broker while central is down (an upgrade, a crash, a weekend outage).
DEFAULT_SESSION_EXPIRY_S = 7 * 24 * 3600


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Section):
    ca_file: Path = Field(description="CA certificate (PEM) / 签发代理证书的 CA 证书")
    cert_file: Path = Field(
        description="central's client certificate, CN shilian-central (PEM) / 中心客户端证书"
    )
    key_file: Path = Field(description="central's private key (PEM, 0600) / 中心私钥")
    alarm_cert_file: Path | None = Field(
        default=None,
        description="client certificate of central's alarm session, CN shilian-central-alarms "
        "(PEM); without it alarms share the main session and may queue behind history / "
        "中心告警会话的客户端证书；未配置时告警与历史共用主会话，可能排在积压之后",
    )
    alarm_key_file: Path | None = Field(
        default=None, description="private key of the alarm session (PEM, 0600) / 告警会话私钥"
    )

    @model_validator(mode="after")
    def _alarm_pair(self) -> TlsConfig:
        if (self.alarm_cert_file is None) != (self.alarm_key_file is None):
            raise ValueError(
                "alarm_cert_file 与 alarm_key_file 须同时设置 / "
                "alarm_cert_file and alarm_key_file go together"
            )
        return self

    @property
    def alarm_lane(self) -> bool:
        """Whether central's alarm session has an identity of its own."""
        return self.alarm_cert_file is not None


class BrokerConfig(_Section):
    host: str = Field(default="127.0.0.1", description="MQTT broker host / MQTT 代理地址")
    port: int = Field(default=1883, ge=1, le=65535, description="MQTT broker port / 端口")
    client_id: str = Field(
        default="shilian-central",
        min_length=1,
        max_length=64,
        description="MQTT client id; keeps central's persistent session / 客户端 ID（持久会话）",
    )
    username: str | None = Field(default=None, description="MQTT user name / 用户名")
    password: str | None = Field(default=None, description="MQTT password / 密码")
    keepalive_s: int = Field(
        default=30, ge=5, le=600, description="MQTT keepalive in seconds / 心跳间隔（秒）"
    )
    session_expiry_s: int = Field(
        default=DEFAULT_SESSION_EXPIRY_S,
        ge=0,
        le=0xFFFFFFFF,
        description="how long the broker keeps central's session and queued QoS 1 messages while "
        "central is away / 中心离线时代理保留会话与排队消息的时长（秒）",
    )
    tls: TlsConfig | None = Field(
        default=None, description="MQTT over TLS with a client certificate / TLS 客户端证书连接"
    )


class StoreConfig(_Section):
    path: Path = Field(
        default=Path("central.db"), description="SQLite database file (WAL) / SQLite 数据库文件"
    )
    url: str | None = Field(
        default=None,
        pattern=r"^postgres(ql)?://",
        description="PostgreSQL instead of the SQLite file, e.g. postgresql://shilian@db/shilian "
        "(docs/storage.md) / 使用 PostgreSQL 数据库（替代 SQLite 文件）",
    )


#: A browser or script sends its request head at once; 15 s covers a slow 4G uplink while
#: bounding how long a slowloris client trickling bytes holds a connection (aiohttp's own
#: default is an hour).
DEFAULT_HTTP_IDLE_TIMEOUT_S = 15.0


class HttpConfig(_Section):
    host: str = Field(default="127.0.0.1", description="HTTP API listen address / 监听地址")
    port: int = Field(
        default=8080, ge=0, le=65535, description="HTTP API and /metrics port (0: any free) / 端口"
    )
    idle_timeout_s: float = Field(
        default=DEFAULT_HTTP_IDLE_TIMEOUT_S,
        gt=0,
        le=3600,
        description="a connection without a complete request this long after it opened or after "
        "its last answer is closed (slow or idle clients) / 连接在此时间内未发完请求即断开",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="a request body not fully received this long after its head closes the "
        "connection (slow clients) / 请求体在此时间内未收完即断开",
    )


class RegistryConfig(_Section):
    default_scope: str = Field(
        default="4501",
        pattern=r"^(\d{2}|\d{4}|\d{6})?$",
        description='registry scope imported when the database has none ("": whole country; '
        "default 4501 Nanning) / 数据库无区划时导入的范围（默认南宁市 4501）",
    )


class CaConfig(_Section):
    """The enrolment CA central holds, so that a technician never handles the CA key."""

    dir: Path = Field(description="CA directory (shilian provision ca init) / CA 目录")
    broker_host: str = Field(
        min_length=1, description="broker address nodes are told to use / 告知节点的代理地址"
    )
    broker_port: int = Field(
        default=8883, ge=1, le=65535, description="broker TLS port for nodes / 节点 TLS 端口"
    )
    cert_days: int = Field(
        default=365, ge=1, le=365, description="node certificate validity / 节点证书有效期（天）"
    )
    broker_reload: list[str] = Field(
        default_factory=list,
        description="command run after the CRL changes so the broker rereads it, e.g. "
        '["systemctl", "reload", "mosquitto"] / CRL 变更后使代理重读的命令',
    )


class AuthConfig(_Section):
    """Operator login (central.auth; docs/api.md "Authentication")."""

    session_idle_minutes: float = Field(
        default=60,
        gt=0,
        le=7 * 24 * 60,
        description="a session unused this long ends / 会话闲置多久后失效（分钟）",
    )
    session_max_hours: float = Field(
        default=12,
        gt=0,
        le=30 * 24,
        description="a session ends this long after login, used or not (one shift) / "
        "会话自登录起的最长有效期（小时）",
    )
    metrics_public: bool = Field(
        default=True,
        description="serve /metrics without login (Prometheus scrapes it; bind http.host to a "
        "private address or set false behind a proxy) / /metrics 无需登录",
    )


class FirmwareConfig(_Section):
    """Signed alarm-board firmware images (central.firmware; docs/edge.md "Firmware")."""

    dir: Path = Field(description="where uploaded images are kept / 固件镜像存放目录")
    public_key: Path = Field(
        description="Ed25519 public key (hex file) images must be signed with / 固件签名公钥"
    )


class MeetingsConfig(_Section):
    """The TURN server the meeting pages use (docs/meetings.md "TURN"); none: host candidates
    only."""

    turn_urls: list[str] = Field(
        default_factory=list,
        max_length=4,
        description="TURN URLs given to the pages, e.g. turn:203.0.113.5:3478?transport=udp / "
        "会议页面使用的 TURN 地址",
    )
    turn_secret: str = Field(
        default="",
        max_length=256,
        description="coturn's static-auth-secret: each page gets credentials derived from it "
        "that expire after turn_ttl_s / coturn 的 static-auth-secret，不会显示",
    )
    turn_ttl_s: int = Field(
        default=12 * 3600,
        ge=60,
        le=7 * 24 * 3600,
        description="how long a page's TURN credentials last (an operator's shift) / 凭据有效期",
    )
    relay_only: bool = Field(
        default=False, description="pages use only TURN relay candidates / 只用中继地址"
    )

    @model_validator(mode="after")
    def _turn(self) -> MeetingsConfig:
        for url in self.turn_urls:
            problem = turn_url_problem(url)
            if problem is not None:
                raise ValueError(f"TURN 地址无效 / bad TURN URL {url!r}: {problem}")
        if self.turn_urls and not self.turn_secret:
            raise ValueError("turn_urls 需要 turn_secret / turn_urls need turn_secret")
        if self.relay_only and not self.turn_urls:
            raise ValueError("relay_only 需要 turn_urls / relay_only needs turn_urls")
        return self


#: Member sessions of one shared group. Each is a persistent session at the broker; 64 is far
#: beyond the two cores per ingest process a county's PostgreSQL can keep busy.
MAX_INGEST_MEMBERS = 64


class IngestConfig(_Section):
    shared_group: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="MQTT 5 shared-subscription group of the ingest processes "
        "(`central run --role ingest`, PostgreSQL only; docs/scale.md) / "
        "多个接入进程共享订阅的组名（仅 PostgreSQL）",
    )
    members: int = Field(
        default=2,
        ge=1,
        le=MAX_INGEST_MEMBERS,
        description="member sessions of the group (client ids <client_id>-m1 … -mN): at least "
        "the number of ingest processes / 共享组成员会话数（不少于接入进程数）",
    )
    reconnect_grace_s: float = Field(
        default=RECONNECT_GRACE_S,
        gt=0,
        le=3600,
        description="how long the leader holds every online node after its broker connection "
        "comes up (the nodes' reconnect window; shorten only with shortened node timings) / "
        "主进程连上代理后保持节点在线的时长（秒）",
    )


class CentralConfig(_Section):
    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="MQTT broker / 代理")
    store: StoreConfig = Field(default_factory=StoreConfig, description="storage / 存储")
    http: HttpConfig = Field(default_factory=HttpConfig, description="HTTP API / 接口")
    registry: RegistryConfig = Field(
        default_factory=RegistryConfig, description="village registry / 行政区划"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="log level / 日志级别"
    )
    ca: CaConfig | None = Field(
        default=None, description="enrolment CA (none: no /api/v1/enrol) / 入网证书签发"
    )
    auth: AuthConfig = Field(default_factory=AuthConfig, description="operator login / 登录")
    firmware: FirmwareConfig | None = Field(
        default=None, description="firmware images (none: no /api/v1/firmware) / 固件镜像"
    )
    alerts: AlertsConfig = Field(
        default_factory=AlertsConfig, description="alert rules and webhooks / 告警规则与推送"
    )
    meetings: MeetingsConfig = Field(
        default_factory=MeetingsConfig, description="meetings: TURN for the pages / 会议"
    )
    ingest: IngestConfig = Field(
        default_factory=IngestConfig,
        description="several ingest processes on one PostgreSQL / 多接入进程",
    )


class ConfigError(Exception):
    """The configuration file is unreadable or invalid; ``lines`` explain each problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


_ZH = {
    "extra_forbidden": "未知字段",
    "missing": "缺少必填字段",
    "int_parsing": "应为整数",
    "int_type": "应为整数",
    "string_type": "应为字符串",
    "string_pattern_mismatch": "格式不符",
    "greater_than_equal": "数值过小",
    "less_than_equal": "数值过大",
    "literal_error": "取值不在允许范围内",
    "string_too_short": "字符串过短",
    "string_too_long": "字符串过长",
}


def explain(error: ValidationError) -> list[str]:
    """One line per error: ``path: 中文说明 / English message``."""
    lines = []
    for e in error.errors(include_url=False):
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        zh = _ZH.get(e["type"], "无效的值")
        lines.append(f"{path}: {zh} / {e['msg']}")
    return lines


def load_config(path: Path) -> CentralConfig:
    """Read and validate ``path``; :class:`ConfigError` explains what is wrong."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError([f"{path}: 无法读取配置文件 / cannot read config file: {e}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: TOML 语法错误 / TOML syntax error: {e}"]) from None
    try:
        return CentralConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(explain(e)) from None
