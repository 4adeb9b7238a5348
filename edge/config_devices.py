"""Configuration of the village's cameras, conference terminals and information-system link
(``[[cameras]]``, ``[camera_probe]``, ``[[terminals]]``, ``[terminal_probe]``,
``[info_system]``), part of :class:`edge.config.EdgeConfig`; docs/edge.md documents each."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from wire.meeting import turn_url_problem

#: A device id is a wire ``Name`` (it is the last topic level of its retained state).
DEVICE_ID = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
#: Cameras per node: a village has a handful to a few dozen; each costs a TCP session and a
#: sampled decode (bench/camera_probe.py measures 16).
MAX_CAMERAS = 64
MAX_TERMINALS = 16
#: Relay outputs an alarm board may have (the protocol carries the number in one byte; boards
#: have 1-8).
MAX_RELAYS = 16


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _url(v: str, schemes: tuple[str, ...]) -> str:
    try:
        u = urlsplit(v)
        port = u.port
    except ValueError:
        raise PydanticCustomError("url", "not a valid URL") from None
    if u.scheme not in schemes or not u.hostname:
        raise PydanticCustomError(
            "url_scheme", "must be a {schemes} URL with a host", {"schemes": "/".join(schemes)}
        )
    if u.username is not None or u.password is not None:
        raise PydanticCustomError("url_userinfo", "put the user name and password in their keys")
    del port
    return v


class CameraConfig(_Section):
    id: str = Field(pattern=DEVICE_ID, description="device id, e.g. cam-gate (unique per node)")
    name: str = Field(default="", max_length=128, description="name shown to operators")
    rtsp_url: str = Field(description="RTSP URL of the main or sub stream (no credentials)")
    username: str = Field(default="", max_length=128, description="RTSP/ONVIF user name")
    password: str = Field(
        default="", max_length=128, description="RTSP/ONVIF password; never logged or shown"
    )
    onvif_url: str | None = Field(
        default=None,
        description="ONVIF device service URL, e.g. http://10.0.0.21/onvif/device_service "
        "(model, firmware, clock drift); absent: not checked",
    )
    zones: list[int] = Field(
        default_factory=list,
        max_length=64,
        description="alarm zones this camera watches (board input or panel zone numbers): an "
        "alarm in one of them takes a snapshot from this camera",
    )
    relay: int | None = Field(
        default=None,
        ge=1,
        le=MAX_RELAYS,
        description="alarm-board relay output that switches this camera's power (power-cycle)",
    )

    @field_validator("rtsp_url")
    @classmethod
    def _rtsp(cls, v: str) -> str:
        return _url(v, ("rtsp",))

    @property
    def player_url(self) -> str:
        """The RTSP URL with the credentials in it, for FFmpeg (meetings); never logged."""
        if not self.username:
            return self.rtsp_url
        from urllib.parse import quote

        scheme, rest = self.rtsp_url.split("://", 1)
        user = quote(self.username, safe="")
        return f"{scheme}://{user}:{quote(self.password, safe='')}@{rest}"

    @field_validator("onvif_url")
    @classmethod
    def _onvif(cls, v: str | None) -> str | None:
        return None if v is None else _url(v, ("http", "https"))


class CameraProbeConfig(_Section):
    """How often and how strictly cameras are checked (the same for every camera)."""

    interval_s: float = Field(
        default=30.0, ge=0.5, le=3600, description="retry of a camera that failed a probe"
    )
    timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="TCP connect and each RTSP/ONVIF answer"
    )
    stall_s: float = Field(
        default=20.0,
        ge=1,
        le=600,
        description="no RTP or no key frame for this long: stalled (more than the camera's "
        "key-frame interval, GOP)",
    )
    picture_interval_s: float = Field(
        default=60.0, ge=0.5, le=3600, description="one key frame decoded per camera this often"
    )
    frozen_after_s: float = Field(
        default=300.0, ge=1, le=86400, description="an unchanged picture this long: frozen"
    )
    frozen_max_diff: float = Field(
        default=0.5,
        ge=0,
        le=255,
        description="mean luma difference (0-255) of two samples at most this: unchanged",
    )
    black_max_luma: int = Field(
        default=38, ge=0, le=255, description="a pixel this dark or darker counts as black"
    )
    black_ratio: float = Field(
        default=0.98, gt=0, le=1, description="share of black pixels that makes a black picture"
    )
    onvif_interval_s: float = Field(
        default=600.0, ge=1, le=86400, description="ONVIF model/firmware/clock check interval"
    )
    max_clock_drift_s: float = Field(
        default=10.0,
        gt=0,
        le=86400,
        description="camera clock off by more than this: clock_wrong (recorded times lie)",
    )


class SnapshotConfig(_Section):
    """Snapshots on alarm: one JPEG from each camera mapped to the alarm's zone."""

    enabled: bool = Field(default=True, description="take snapshots on alarm")
    timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=30,
        description="a camera's next key frame must arrive within this (more than its GOP), "
        "else no snapshot",
    )
    max_cameras: int = Field(
        default=4, ge=1, le=16, description="snapshots per alarm at most (first mapped cameras)"
    )


class RemediationConfig(_Section):
    """Power-cycling a stalled camera through its relay (``relay`` on the camera)."""

    enabled: bool = Field(default=True, description="the rule below runs (commands always do)")
    stalled_for_min: float = Field(
        default=10.0, gt=0, le=1440, description="a camera stalled this many minutes is cycled"
    )
    min_interval_min: float = Field(
        default=60.0,
        gt=0,
        le=10080,
        description="at most one power-cycle per camera per this many minutes (by the rule)",
    )
    off_ms: int = Field(
        default=5000, ge=100, le=60000, description="how long the relay cuts the power"
    )


class TerminalConfig(_Section):
    id: str = Field(pattern=DEVICE_ID, description="device id, e.g. terminal (unique per node)")
    name: str = Field(default="", max_length=128, description="name shown to operators")
    host: str = Field(min_length=1, max_length=253, description="terminal IP or host name")
    protocol: Literal["sip", "h323"] = Field(
        default="sip", description="sip: SIP OPTIONS; h323: TCP to the H.225 port (older ones)"
    )
    transport: Literal["udp", "tcp"] = Field(default="udp", description="SIP transport")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="port; default 5060 (SIP) or 1720 (H.323)"
    )

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 5060 if self.protocol == "sip" else 1720


class TerminalProbeConfig(_Section):
    interval_s: float = Field(default=30.0, ge=0.5, le=3600, description="probe interval")
    timeout_s: float = Field(
        default=4.0, gt=0, le=32, description="no SIP answer / no TCP connect within this: down"
    )


class InfoSystemConfig(_Section):
    """The 综治信息系统 link: an HTTP(S) URL whose answer must be 2xx/3xx, or a TCP host:port."""

    id: str = Field(default="info_system", pattern=DEVICE_ID, description="device id")
    name: str = Field(default="综治信息系统", max_length=128, description="name shown")
    url: str | None = Field(default=None, description="HTTP(S) health URL (GET)")
    host: str | None = Field(default=None, description="TCP check: host (with port)")
    port: int | None = Field(default=None, ge=1, le=65535, description="TCP check: port")
    interval_s: float = Field(default=60.0, ge=0.5, le=3600, description="check interval")
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="answer within this or down")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        return None if v is None else _url(v, ("http", "https"))

    @model_validator(mode="after")
    def _one_target(self) -> InfoSystemConfig:
        if (self.url is None) == (self.host is None or self.port is None):
            raise PydanticCustomError("info_system_target", "set either url, or host and port")
        return self


class MeetingsConfig(_Section):
    """Remote meetings (docs/meetings.md): which camera a call sends by default, a TURN server
    for a village behind NAT, and the box's sound devices and screen. Without ``turn_url`` only
    host candidates are offered (the government network or VPN is flat); no public STUN server
    is ever used. Without ``audio_in`` / ``audio_out`` / ``video_out`` a call is video from the
    village only."""

    enabled: bool = Field(default=True, description="answer operators' calls")
    camera: str | None = Field(
        default=None,
        pattern=DEVICE_ID,
        description="the conference camera: id of a [[cameras]] entry (absent: the first one)",
    )
    turn_url: str | None = Field(
        default=None,
        description="TURN server for NAT-ed villages, e.g. turn:10.8.0.1:3478?transport=udp",
    )
    turn_username: str = Field(default="", max_length=128, description="TURN user name")
    turn_password: str = Field(
        default="", max_length=128, description="TURN password; never logged or shown"
    )
    turn_secret: str = Field(
        default="",
        max_length=256,
        description="coturn's static-auth-secret (use-auth-secret): short-lived credentials are "
        "derived from it for each call instead of turn_username/turn_password; never shown",
    )
    relay_only: bool = Field(
        default=False, description="offer only TURN relay candidates (needs turn_url)"
    )
    audio_in: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="ALSA capture device sent to the operator (e.g. plughw:1,0); absent: none",
    )
    audio_out: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="ALSA playback device the operator is heard on (e.g. default); absent: none",
    )
    video_out: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="framebuffer device the operator's picture is shown on (e.g. /dev/fb0); "
        "absent: the operator's video is not asked for",
    )
    video_out_size: str | None = Field(
        default=None,
        pattern=r"^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}$",
        description="WIDTHxHEIGHT of video_out (absent: read from /sys/class/graphics)",
    )
    keep_warm: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="cameras ([[cameras]] ids) kept open between calls, so a call to one "
        "starts at once; each costs a camera stream and a little CPU (docs/meetings.md)",
    )
    prepare_linger_s: float = Field(
        default=60.0,
        ge=0,
        le=600,
        description="how long a camera opened because an operator opened the meeting page "
        "(prepare) stays open without a call; 0: prepares are ignored (docs/meetings.md)",
    )
    prepare_max: int = Field(
        default=2,
        ge=0,
        le=8,
        description="cameras opened by prepares at once; a prepare beyond is ignored",
    )

    @field_validator("turn_url")
    @classmethod
    def _turn(cls, v: str | None) -> str | None:
        problem = None if v is None else turn_url_problem(v)
        if problem is not None:
            raise PydanticCustomError("turn_url", problem)
        return v

    @model_validator(mode="after")
    def _relay_needs_turn(self) -> MeetingsConfig:
        if self.relay_only and self.turn_url is None:
            raise PydanticCustomError("relay_without_turn", "relay_only needs turn_url")
        return self
