"""Commands from central (MQTT 5 request/response), pure: a request in, a reply or a refusal out.

A reply goes to the request's response topic with its correlation data, but only when that
topic is inside this node's subtree and is not one of the node's own data topics (a reply must
never overwrite our state, health, events or devices): a node never publishes outside its
subtree, whatever a request asks. A request whose message expiry has passed is not answered
(the caller has given up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


class CommandHandler:
    def __init__(
        self,
        topics: Topics,
        boot_id: str,
        config_json: Callable[[], dict[str, Any]],
        clock: Callable[[], float],
    ) -> None:
        self.topics = topics
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
        return self._reply(
            rt,
            msg.correlation,
            req.cmd,
            error=("unknown_command", f"unknown command {req.cmd!r}; known: ping, get-config"),
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
