"""Commands from central (MQTT 5 request/response), pure: a request in, a reply or a refusal out.

A reply goes to the request's response topic with its correlation data, but only when that
topic is inside this node's subtree and is not one of the node's own data topics (a reply must
never overwrite our state, health, events or devices): a node never publishes outside its
subtree, whatever a request asks. A request whose message expiry has passed is not answered
(the caller has given up).

Long-running commands (``firmware-update``) are not run here: :meth:`CommandHandler.handle`
stays synchronous and only hands the job to its owner (a :class:`FirmwareTarget`, the alarm
board source, which runs it in its own task group); the reply says ``started`` or why not.
Progress and the outcome are in the target's retained device state and a final event.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from edge.mqtt_link import Incoming
from wire import CommandRequest, CommandResponse, RemoteWireError, Topics, decode, encode
from wire.messages import CommandError


@dataclass(frozen=True, slots=True)
class Reply:
    topic: str
    payload: bytes
    correlation: bytes | None
    cmd: str
    ok: bool


@dataclass(frozen=True, slots=True)
class Refused:
    """Not answered; ``reason`` is the metric label."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class FirmwareJob:
    """A firmware update to run: from ``url`` (central's download) or a local ``path`` (the
    ``shilian firmware flash`` CLI); ``sha256`` is the image id it must have."""

    url: str | None = None
    path: str | None = None
    sha256: str | None = None
    size: int | None = None


class FirmwareRefused(Exception):
    """The update cannot start (``code``: busy, no_board, no_key, bad_request); str is zh/en."""

    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(f"{zh} / {en}")
        self.code = code


@runtime_checkable
class FirmwareTarget(Protocol):
    """What runs firmware updates (edge.board_source.BoardSource)."""

    def firmware_start(self, job: FirmwareJob) -> None:
        """Queue ``job`` (returns at once) or raise :class:`FirmwareRefused`."""
        ...

    def firmware_status(self) -> dict[str, Any]:
        """Running version and the current/last update (as in the device state)."""
        ...


class PowerCycleRefused(Exception):
    """A power-cycle cannot be queued (``code``: no_cameras, unknown_camera, no_relay, busy,
    bad_request); str is zh/en."""

    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(f"{zh} / {en}")
        self.code = code


@runtime_checkable
class PowerCycleTarget(Protocol):
    """What power-cycles cameras through the board's relays (edge.remediation.PowerCycler)."""

    def power_cycle_start(self, camera: str) -> dict[str, Any]:
        """Queue a power-cycle (returns at once) or raise :class:`PowerCycleRefused`."""
        ...


#: Largest image the edge downloads (header + 512 KiB payload + signature, with margin).
MAX_FIRMWARE_BYTES = 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def firmware_job(args: dict[str, Any]) -> FirmwareJob:
    """``firmware-update`` args -> a job; :class:`FirmwareRefused` ``bad_request`` if invalid."""
    url, sha, size = args.get("url"), args.get("sha256"), args.get("size")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise FirmwareRefused("bad_request", "url 应为 http(s) 地址", "url must be http(s)")
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise FirmwareRefused("bad_request", "sha256 应为 64 位十六进制", "sha256: 64 hex digits")
    if not isinstance(size, int) or not 0 < size <= MAX_FIRMWARE_BYTES:
        raise FirmwareRefused(
            "bad_request", f"size 应为 1..{MAX_FIRMWARE_BYTES}", f"size: 1..{MAX_FIRMWARE_BYTES}"
        )
    return FirmwareJob(url=url, sha256=sha, size=size)


class CommandHandler:
    def __init__(
        self,
        topics: Topics,
        boot_id: str,
        config_json: Callable[[], dict[str, Any]],
        clock: Callable[[], float],
        firmware: FirmwareTarget | None = None,
        power: PowerCycleTarget | None = None,
    ) -> None:
        self.topics = topics
        self.firmware = firmware
        self.power = power
        self.boot_id = boot_id
        self._config_json = config_json
        self._clock = clock
        t = topics
        self._forbidden = {t.state, t.health, t.event, t.cmd_req}
        self._device_prefix = t.base + "/device/"

    def reply_topic_ok(self, topic: str) -> bool:
        return (
            self.topics.owns(topic)
            and topic not in self._forbidden
            and not topic.startswith(self._device_prefix)
            and "+" not in topic
            and "#" not in topic
        )

    def handle(self, msg: Incoming, received_at: float) -> Reply | Refused:
        if msg.expiry_s is not None and self._clock() > received_at + msg.expiry_s:
            return Refused("expired", "message expiry passed before handling")
        rt = msg.response_topic
        if not rt:
            return Refused("no_response_topic", "request without response topic")
        if not self.reply_topic_ok(rt):
            return Refused("response_topic_outside", f"response topic {rt[:200]!r} refused")
        try:
            req = decode(CommandRequest, msg.payload)
        except RemoteWireError as e:
            return self._reply(rt, msg.correlation, "?", error=("bad_request", str(e)[:1000]))
        if req.cmd == "ping":
            return self._reply(
                rt,
                msg.correlation,
                req.cmd,
                result={"pong": self._clock(), "boot_id": self.boot_id},
            )
        if req.cmd == "get-config":
            return self._reply(rt, msg.correlation, req.cmd, result=self._config_json())
        if req.cmd == "firmware-update":
            try:
                if self.firmware is None:
                    raise FirmwareRefused("no_board", "本节点没有报警板", "no alarm board here")
                job = firmware_job(req.args)
                self.firmware.firmware_start(job)
            except FirmwareRefused as e:
                return self._reply(rt, msg.correlation, req.cmd, error=(e.code, str(e)))
            return self._reply(
                rt, msg.correlation, req.cmd, result={"started": True, "sha256": job.sha256}
            )
        if req.cmd == "power-cycle":
            camera = req.args.get("camera")
            try:
                if self.power is None:
                    raise PowerCycleRefused("no_cameras", "本节点没有摄像机", "no cameras here")
                if not isinstance(camera, str):
                    raise PowerCycleRefused("bad_request", "缺少 camera", "args.camera missing")
                result = self.power.power_cycle_start(camera)
            except PowerCycleRefused as e:
                return self._reply(rt, msg.correlation, req.cmd, error=(e.code, str(e)))
            return self._reply(rt, msg.correlation, req.cmd, result=result)
        return self._reply(
            rt,
            msg.correlation,
            req.cmd,
            error=(
                "unknown_command",
                f"unknown command {req.cmd!r}; known: ping, get-config, firmware-update,"
                " power-cycle",
            ),
        )

    def _reply(
        self,
        topic: str,
        correlation: bytes | None,
        cmd: str,
        *,
        result: dict[str, Any] | None = None,
        error: tuple[str, str] | None = None,
    ) -> Reply:
        resp = CommandResponse(
            node=self.topics.node_id,
            ok=error is None,
            result=result,
            error=CommandError(code=error[0], message=error[1]) if error else None,
        )
        return Reply(topic, encode(resp), correlation, cmd, error is None)
