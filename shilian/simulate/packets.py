"""The few MQTT 5 packets a simulated node needs, encoded by hand: CONNECT (with will), CONNACK,
PUBLISH at QoS 1, PUBACK, DISCONNECT. A simulated node costs a socket and a coroutine; a full MQTT
client library per node would cost a thread or a callback machinery each, which ten thousand
nodes in one process cannot afford."""

from __future__ import annotations

import asyncio
import struct

#: MQTT 5 packet types (first byte, high nibble) and the CONNECT flags used here.
CONNECT, CONNACK, PUBLISH, PUBACK, DISCONNECT = 1, 2, 3, 4, 14
_CLEAN_START, _WILL, _WILL_QOS1, _WILL_RETAIN = 0x02, 0x04, 0x08, 0x20
#: Keepalive the nodes announce; health every interval keeps the connection busy anyway.
KEEPALIVE_S = 30
#: Largest packet a node accepts from the broker (it only gets CONNACK and PUBACK, a few bytes;
#: checked before reading the body so a confused peer cannot make it allocate).
MAX_INBOUND_BYTES = 64 * 1024


class PacketError(ConnectionError):
    """The broker sent something a node cannot take: the link is dropped and retried."""


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    return _bytes(s.encode())


def _bytes(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def connect_packet(client_id: str, will_topic: str, will_payload: bytes) -> bytes:
    flags = _CLEAN_START | _WILL | _WILL_QOS1 | _WILL_RETAIN
    head = _str("MQTT") + bytes([5, flags]) + struct.pack("!H", KEEPALIVE_S) + varint(0)
    payload = _str(client_id) + varint(0) + _str(will_topic) + _bytes(will_payload)
    return packet(CONNECT << 4, head + payload)


def publish_packet(topic: str, payload: bytes, mid: int, *, retain: bool) -> bytes:
    first = (PUBLISH << 4) | 0x02 | (0x01 if retain else 0)  # QoS 1
    return packet(first, _str(topic) + struct.pack("!H", mid) + varint(0) + payload)


def disconnect_packet() -> bytes:
    return packet(DISCONNECT << 4, b"")


def connack_refused(kind: int, body: bytes) -> str | None:
    """None for a CONNACK that accepts the connection, else the reason (hex) or what came."""
    if kind != CONNACK or len(body) < 2:
        return f"expected CONNACK, got type {kind}"
    return body[1:2].hex() if body[1] >= 0x80 else None


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        b = (await reader.readexactly(1))[0]
        length |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 21:
            raise PacketError("malformed remaining length")
    if length > MAX_INBOUND_BYTES:
        raise PacketError(f"packet of {length} bytes from the broker")
    return first >> 4, await reader.readexactly(length)
