"""SIA DC-09 receiver on the edge box: alarm panels on the village LAN connect over TCP and
report; each report becomes typed events in the edge outbox, and only then is it ACKed.

Pure core (:class:`FrameSplitter`, :class:`SiaSession`) and a thin asyncio shell
(:class:`SiaReceiver`, an edge ``EventSource``). What survives which fault: an ACKed report is in
the outbox on disk (``sink.emit`` returned for each of its events before the ACK was written);
if the agent cannot take it, no ACK is sent and the connection is closed, so the panel
retransmits. A retransmission of a report whose ACK was lost is recognised within
``dedup_window_s`` by (account, seq, payload) and ACKed again without a second event; across a
restart of the agent (stored, then the agent died before the ACK) by the outbox's idempotency
key ``sia:<account>:<receiver>:<line>:<seq>:<payload digest>:<n>``, kept for
:data:`IDEMPOTENCY_TTL_S`.

Keys: each account may have its own AES key (``keys``), else ``key_hex`` applies; the account
is read from the frame's clear header before decrypting. ``cryptography`` is imported only when
a key is configured (an idle edge without encrypted panels stays small).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from edge.outbox import OutboxError
from edge.sia_session import (
    DEFAULT_DEDUP_WINDOW_S,
    MAX_DEDUP_ENTRIES,
    Decision,
    FrameSplitter,
    SiaReceiverConfig,
    SiaSession,
)
from edge.sia_slots import Slot, SlotLimits, SlotTable
from edge.sources import EventSink
from firmware_bridge.alarms import Alarm
from firmware_bridge.contact_id import PanelEvent
from firmware_bridge.sia_dc09 import SiaError, nak

__all__ = [
    "DEFAULT_DEDUP_WINDOW_S",
    "MAX_DEDUP_ENTRIES",
    "Decision",
    "FrameSplitter",
    "SiaReceiver",
    "SiaReceiverConfig",
    "SiaSession",
    "emit",
]

log = logging.getLogger("shilian.firmware_bridge.sia")

#: Bytes read per call; a frame is at most MAX_FRAME_BYTES, usually under 128.
READ_CHUNK = 4096
#: A peer's faults are logged at most once per peer and reason in this many seconds.
LOG_EVERY_S = 60.0
#: Life of a report's idempotency key in the outbox: covers an agent restart and the panel's
#: retries (minutes), far shorter than the wrap of the 4-digit seq at a few reports a day.
IDEMPOTENCY_TTL_S = 86400.0


async def emit(sink: EventSink, ev: Alarm | PanelEvent, key: str | None = None) -> None:
    """Durably hand one event to the edge agent (returns once it is in the outbox)."""
    kind = ev.kind if isinstance(ev.kind, str) else ev.kind.value
    if key is None:
        await sink.emit(ev.priority, kind, ev.device, ev.event_data())
    else:
        await sink.emit(
            ev.priority, kind, ev.device, ev.event_data(), key=key, key_ttl_s=IDEMPOTENCY_TTL_S
        )


class SiaReceiver:
    """An edge ``EventSource``: ``await receiver.run(sink)`` serves until cancelled.

    ``ready`` is set once listening (``port`` then holds the bound port, useful with port 0).
    Counters by outcome are in ``counts``, of the answers sent (ACK/NAK/DUH) in ``responses``
    and of connections (accepted, refused at a cap, evicted, timed out) in ``connections``;
    the edge agent exports them as ``shilian_edge_sia_frames_total``,
    ``shilian_edge_sia_responses_total`` and ``shilian_edge_sia_connections_total``, with
    ``shilian_edge_sia_open_connections`` (:mod:`firmware_bridge.link_metrics`). Connection
    slots are shared out by :mod:`edge.sia_slots`."""

    name = "sia_receiver"

    def __init__(
        self,
        config: SiaReceiverConfig,
        *,
        clock: Callable[[], float] = time.time,
        limits: SlotLimits | None = None,
    ) -> None:
        self.config = config
        self.slots = SlotTable(limits or SlotLimits())
        self.connections: dict[str, int] = {}
        self.session = SiaSession(config, clock)
        self.clock = clock
        self.ready = asyncio.Event()
        self.port: int | None = None
        self.counts: dict[str, int] = {}
        self.responses: dict[str, int] = {"ack": 0, "nak": 0, "duh": 0}
        if config.key is not None or config.keys:
            # Load the AES implementation now: a broken install fails at start, not at the
            # first encrypted alarm.
            import cryptography.hazmat.primitives.ciphers  # noqa: F401
        self._logged: dict[tuple[str, str], float] = {}
        self._conns: dict[Slot, asyncio.StreamWriter] = {}

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def _count_conn(self, outcome: str) -> None:
        self.connections[outcome] = self.connections.get(outcome, 0) + 1

    def _admit(self, writer: asyncio.StreamWriter) -> Slot | None:
        peer = str(writer.get_extra_info("peername", ("?",))[0])
        adm = self.slots.admit(peer, self.clock())
        if adm.first_of_spell:
            log.warning(
                "SIA 接收机连接已满（%s）：%s / receiver connection cap hit (%s): %s; "
                "device=%s peer=%s open=%d",
                "单个地址上限" if adm.cap == "address" else "总数上限",
                "拒绝新连接" if adm.slot is None else "断开占用连接最多的地址上最早的未确认连接",
                adm.cap,
                "new connection refused"
                if adm.slot is None
                else "evicting the oldest connection never ACKed of the address holding the most",
                self.config.device,
                peer,
                len(self.slots),
            )
        if adm.evict is not None:
            self._count_conn("evicted")
            victim = self._conns.pop(adm.evict, None)
            if victim is not None:
                victim.close()
        if adm.slot is None:
            self._count_conn(f"refused_{adm.cap}_cap")
            writer.close()
            return None
        self._count_conn("accepted")
        self._conns[adm.slot] = writer
        return adm.slot

    def _log_peer_fault(self, peer: str, err: SiaError) -> None:
        now = self.clock()
        key = (peer, err.reason)
        if now - self._logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[key] = now
            log.warning(
                "SIA 报文被拒绝 / frame refused: device=%s peer=%s reason=%s: %s",
                self.config.device,
                peer,
                err.reason,
                err,
            )

    async def run(self, sink: EventSink) -> None:
        async with asyncio.TaskGroup() as tg:

            def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                slot = self._admit(writer)
                if slot is None:
                    return
                try:
                    tg.create_task(self._serve(reader, writer, sink, slot), name="sia_conn")
                except RuntimeError:  # the receiver is shutting down: refuse the connection
                    self._release(slot, writer)
                    return

            server = await asyncio.start_server(accept, self.config.host, self.config.port)
            try:
                self.port = server.sockets[0].getsockname()[1]
                log.info(
                    "SIA 接收机已启动 / receiver listening: device=%s %s:%s",
                    self.config.device,
                    self.config.host,
                    self.port,
                )
                self.ready.set()
                await asyncio.Future()  # serve until cancelled
            finally:
                server.close()
                for w in list(self._conns.values()):
                    w.close()

    def _release(self, slot: Slot, writer: asyncio.StreamWriter) -> None:
        self.slots.release(slot)
        self._conns.pop(slot, None)
        writer.close()

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sink: EventSink,
        slot: Slot,
    ) -> None:
        peer = slot.peer
        splitter = FrameSplitter()
        try:
            while True:
                try:
                    async with asyncio.timeout(max(0.0, self.slots.deadline(slot) - self.clock())):
                        data = await reader.read(READ_CHUNK)
                except TimeoutError:
                    self._count_conn("idle_timeout" if slot.proven else "guest_timeout")
                    return
                if not data:
                    return
                self.slots.heard(slot, self.clock(), acked=False)
                for item in splitter.feed(data):
                    if isinstance(item, SiaError):
                        self._count(item.reason)
                        self._log_peer_fault(peer, item)
                        self._respond(writer, nak(self.clock()))
                        continue
                    self.slots.handling(slot, True)
                    try:
                        acked = await self._handle(item, writer, sink, peer)
                    finally:
                        self.slots.handling(slot, False)
                    if acked is None:
                        return
                    self.slots.heard(slot, self.clock(), acked)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            self._release(slot, writer)
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _handle(
        self, raw: bytes, writer: asyncio.StreamWriter, sink: EventSink, peer: str
    ) -> bool | None:
        """Answer one frame: True if ACKed (a panel's frame), False if refused, None when the
        connection must close (events not stored)."""
        d = self.session.decide(raw)
        if d.error is not None:
            self._count(d.error.reason)
            self._log_peer_fault(peer, d.error)
        elif d.duplicate:
            self._count("duplicate")
            self._respond(writer, d.response)
            return True
        else:
            assert d.frame is not None
            try:
                for n, ev in enumerate(d.events):
                    await emit(sink, ev, SiaSession.idempotency_key(d.frame, n))
            except OutboxError:
                # Not stored, so not ACKed: the panel retransmits (to us once we can store).
                self._count("not_stored")
                log.exception(
                    "SIA 报警未能写入发件箱 / report not stored, not ACKed: device=%s peer=%s",
                    self.config.device,
                    peer,
                )
                return None
            self.session.commit(d.frame)
            self._count("ack")
            self._respond(writer, d.response)
            return True
        self._respond(writer, d.response)
        return False

    def _respond(self, writer: asyncio.StreamWriter, response: bytes) -> None:
        body = response[9:]  # after LF, crc and 0LLL: '"ACK"', '"*ACK"', '"NAK"' or '"DUH"'
        name = "nak" if body.startswith(b'"NAK"') else "duh" if body.startswith(b'"DUH"') else "ack"
        self.responses[name] += 1
        writer.write(response)
