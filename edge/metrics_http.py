"""Prometheus ``/metrics`` from a tiny asyncio HTTP/1.0 handler (no web framework on the edge:
an idle node must stay small). One request per connection, then close."""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

#: Longest request head we read; a scraper sends a few hundred bytes.
MAX_HEAD_BYTES = 8 * 1024
#: A client that does not send its request within this time is dropped.
READ_TIMEOUT_S = 5.0


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port

    async def run(self, ready: asyncio.Event | None = None) -> None:
        server = await asyncio.start_server(
            self._client, self.host, self.port, limit=MAX_HEAD_BYTES
        )
        self.port = server.sockets[0].getsockname()[1]  # when configured with port 0
        async with server:
            if ready is not None:
                ready.set()
            await server.serve_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            parts = head.split(b" ", 2)
            method = parts[0]
            path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
            if method != b"GET":
                status, body, ctype = b"405 Method Not Allowed", b"GET only\n", b"text/plain"
            elif path in (b"/metrics", b"/"):
                status, ctype = b"200 OK", CONTENT_TYPE_LATEST.encode()
                body = generate_latest(self.registry)
            else:
                status, body, ctype = b"404 Not Found", b"try /metrics\n", b"text/plain"
            writer.write(
                b"HTTP/1.0 " + status + b"\r\nContent-Type: " + ctype
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n" + body
            )  # fmt: skip
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
