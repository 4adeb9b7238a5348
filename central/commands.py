"""Commands from central to a node: MQTT 5 request/response (docs/protocol.md).

The request goes to ``Topics(node).cmd_req`` at QoS 1 with the response topic
``Topics(node).cmd_res`` (inside the node's own subtree, so the node's ACL lets it answer), a
random correlation data, and a message expiry equal to the timeout (a node that reconnects later
does not execute a request its caller gave up on). The reply arrives through ingest.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import wire

#: Bytes of random correlation data: enough that concurrent requests never collide.
CORRELATION_BYTES = 16
#: Longest timeout a caller may ask for (the HTTP API passes user input through).
MAX_TIMEOUT_S = 300.0
#: Requests waiting at once; beyond this central refuses rather than grow without bound.
MAX_PENDING = 10_000


class CommandError(Exception):
    """A command did not produce a result. ``code``: ``timeout``, ``offline``, ``unavailable``,
    ``busy``, ``bad_request`` or the node's own error code (e.g. ``unknown_command``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


#: publish(topic, payload, response_topic, correlation_data, expiry_s); raises ConnectionError
#: when central is not connected to the broker.
Publish = Callable[[str, bytes, str, bytes, int], None]


class CommandClient:
    """Sends requests and matches replies by correlation data."""

    def __init__(
        self, publish: Publish, node_online: Callable[[str], bool | None] = lambda _: None
    ) -> None:
        self._publish = publish
        self._node_online = node_online
        self._pending: dict[bytes, tuple[str, asyncio.Future[wire.CommandResponse]]] = {}

    async def request(
        self, node_id: str, cmd: str, args: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        """The node's ``result``; :class:`CommandError` otherwise."""
        if not wire.valid_node_id(node_id):
            raise CommandError("bad_request", f"not a node id: {node_id!r}")
        if not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise CommandError("bad_request", f"timeout must be in (0, {MAX_TIMEOUT_S}] s")
        if self._node_online(node_id) is False:
            raise CommandError("offline", f"节点离线 / node {node_id} is offline")
        if len(self._pending) >= MAX_PENDING:
            raise CommandError("busy", "too many commands in flight / 待处理命令过多")
        try:
            payload = wire.encode(wire.CommandRequest(cmd=cmd, args=args))
        except (wire.WireError, ValueError) as e:
            raise CommandError("bad_request", str(e)) from None
        topics = wire.Topics(node_id)
        corr = os.urandom(CORRELATION_BYTES)
        fut: asyncio.Future[wire.CommandResponse] = asyncio.get_running_loop().create_future()
        self._pending[corr] = (node_id, fut)
        try:
            try:
                self._publish(topics.cmd_req, payload, topics.cmd_res, corr, int(timeout_s) + 1)
            except ConnectionError as e:  # link down: nothing was sent
                raise CommandError(
                    "unavailable", f"MQTT 代理不可用 / broker unavailable: {e}"
                ) from None
            try:
                async with asyncio.timeout(timeout_s):
                    resp = await fut
            except TimeoutError:
                raise CommandError(
                    "timeout", f"节点未在 {timeout_s:g} 秒内响应 / no reply in {timeout_s:g} s"
                ) from None
        finally:
            self._pending.pop(corr, None)
        if resp.ok:
            return resp.result or {}
        err = resp.error
        if err is None:
            raise CommandError("node_error", "node reported failure without an error")
        raise CommandError(err.code, err.message)

    def on_response(
        self, node_id: str, correlation: bytes | None, resp: wire.CommandResponse
    ) -> bool:
        """A reply arrived on ``node_id``'s cmd/res topic. False if nobody waits for it (late,
        unknown correlation, or from another node than the request's)."""
        if correlation is None:
            return False
        entry = self._pending.get(correlation)
        if entry is None or entry[0] != node_id or entry[1].done():
            return False
        entry[1].set_result(resp)
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)
