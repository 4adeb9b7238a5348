"""Local Unix-socket API: local software hands the agent events as JSON lines.

Requests (one JSON object per line) and replies (one per request, in order):

    {"op":"emit","priority":"alarm","kind":"panic","device":null,"data":{"zone":3}}
        -> {"ok":true,"seq":12,"boot_id":"..."}   after the event is on disk
    {"op":"device","device_id":"cam1","kind":"camera","state":"up","name":null,"detail":{}}
    {"op":"device","device_id":"cam1","remove":true}
    {"op":"status"}
    {"op":"firmware-update","path":"/abs/image.bin"}   -> {"ok":true,"started":true}
    {"op":"firmware-status"}   -> {"ok":true,"firmware_version":...,"update":{state,bytes,...}}
    bad input -> {"ok":false,"error":"..."}; the connection and the agent survive.
    outbox disk full -> {"ok":false,"error":"发件箱所在磁盘已满… / outbox disk full…",
        "code":"disk_full"}: the event was NOT stored; keep it and send it again later.

A connection may pipeline requests (up to ``PIPELINE`` outstanding): the outbox then commits
them together. A line longer than ``MAX_LINE_BYTES`` is refused before it is buffered, and the
connection closed (there is no way to find the next request boundary safely).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge.commands import FirmwareJob, FirmwareRefused, FirmwareTarget
from edge.outbox import OutboxDiskFull, OutboxError
from edge.sources import EventSink
from wire import WireError, bounded_json

#: Longest request line: an event is capped at 64 KiB by the contract; its JSON envelope fits.
MAX_LINE_BYTES = 80 * 1024
#: Outstanding pipelined requests per connection (bounds memory per client).
PIPELINE = 256
#: Socket file mode: the agent's group (local software) may write, nobody else.
SOCKET_MODE = 0o660

log = logging.getLogger("shilian.edge.local_api")

Reply = dict[str, Any]


class RequestError(Exception):
    """The local client sent something invalid (its fault; reply with the message)."""


def parse_request(line: bytes) -> dict[str, Any]:
    """Pure: one request line -> the request object, or :class:`RequestError`."""
    try:
        obj = bounded_json.loads(line)
    except bounded_json.JsonError as e:
        raise RequestError(f"invalid JSON: {e.reason}") from None
    if not isinstance(obj, dict):
        raise RequestError("request must be a JSON object")
    op = obj.get("op")
    if op not in ("emit", "device", "status", "firmware-update", "firmware-status"):
        raise RequestError(
            f"unknown op {op!r}; known: emit, device, status, firmware-update, firmware-status"
        )
    return obj


class LocalApi:
    def __init__(
        self,
        path: Path,
        sink: EventSink,
        status: Callable[[], dict[str, Any]],
        firmware: FirmwareTarget | None = None,
    ) -> None:
        self.path = path
        self.sink = sink
        self.status = status
        self.firmware = firmware

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve until cancelled; the socket file is removed at the end."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a previous run
        server = await asyncio.start_unix_server(self._client, self.path, limit=MAX_LINE_BYTES)
        os.chmod(self.path, SOCKET_MODE)
        try:
            async with server:
                if ready is not None:
                    ready.set()
                await server.serve_forever()
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[asyncio.Task[Reply] | None] = asyncio.Queue(PIPELINE)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._reply_in_order(queue, writer))
                try:
                    while True:
                        try:
                            line = await reader.readuntil(b"\n")
                        except asyncio.IncompleteReadError as e:
                            line = e.partial
                            if line.strip():
                                await queue.put(tg.create_task(self._handle(line)))
                            break
                        except asyncio.LimitOverrunError:
                            too_long = {"ok": False, "error": f"line over {MAX_LINE_BYTES} B"}
                            await queue.put(tg.create_task(_const(too_long)))
                            break
                        if line.strip():
                            await queue.put(tg.create_task(self._handle(line)))
                finally:
                    await queue.put(None)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _reply_in_order(
        self, queue: asyncio.Queue[asyncio.Task[Reply] | None], writer: asyncio.StreamWriter
    ) -> None:
        while (task := await queue.get()) is not None:
            reply = await task
            writer.write(json.dumps(reply, ensure_ascii=False).encode() + b"\n")
            await writer.drain()

    async def _handle(self, line: bytes) -> Reply:
        try:
            req = parse_request(line)
            return await self._dispatch(req)
        except RequestError as e:
            return {"ok": False, "error": str(e)}
        except ValidationError as e:
            first = e.errors(include_url=False, include_input=False)[0]
            loc = ".".join(str(p) for p in first["loc"])
            return {"ok": False, "error": f"invalid {loc}: {first['msg']}"}
        except OutboxDiskFull as e:  # not stored: the client keeps the event and retries later
            return {"ok": False, "error": str(e), "code": "disk_full"}
        except (WireError, OutboxError, ValueError, TypeError) as e:
            return {"ok": False, "error": str(e)}

    async def _dispatch(self, req: dict[str, Any]) -> Reply:
        op = req["op"]
        if op == "status":
            return {"ok": True, **self.status()}
        if op in ("firmware-update", "firmware-status"):
            return self._firmware(op, req)
        if op == "emit":
            data = req.get("data")
            if data is not None and not isinstance(data, dict):
                raise RequestError("data must be a JSON object")
            ev = await self.sink.emit(
                _str(req, "priority"), _str(req, "kind"), _opt_str(req, "device"), data
            )
            return {"ok": True, "seq": ev.seq, "boot_id": ev.boot_id}
        device_id = _str(req, "device_id")
        if req.get("remove") is True:
            await self.sink.remove_device(device_id)
            return {"ok": True}
        detail = req.get("detail")
        if detail is not None and not isinstance(detail, dict):
            raise RequestError("detail must be a JSON object")
        await self.sink.set_device(
            device_id, _str(req, "kind"), _str(req, "state"), _opt_str(req, "name"), detail
        )
        return {"ok": True}

    def _firmware(self, op: str, req: dict[str, Any]) -> Reply:
        if self.firmware is None:
            return {"ok": False, "error": "本节点没有报警板 / no alarm board here"}
        if op == "firmware-status":
            return {"ok": True, **self.firmware.firmware_status()}
        path = _str(req, "path")
        if not Path(path).is_absolute():
            raise RequestError("path must be absolute")
        try:
            self.firmware.firmware_start(FirmwareJob(path=path))
        except FirmwareRefused as e:
            return {"ok": False, "error": str(e), "code": e.code}
        return {"ok": True, "started": True}


async def _const(reply: Reply) -> Reply:
    return reply


def _str(req: dict[str, Any], key: str) -> str:
    v = req.get(key)
    if not isinstance(v, str):
        raise RequestError(f"{key} must be a string")
    return v


def _opt_str(req: dict[str, Any], key: str) -> str | None:
    v = req.get(key)
    if v is not None and not isinstance(v, str):
        raise RequestError(f"{key} must be a string or null")
    return v


Handler = Callable[[bytes], Awaitable[Reply]]
