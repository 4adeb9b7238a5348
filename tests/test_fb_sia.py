"""SIA DC-09: golden frames, CRC/length/timestamp refusals, AES round trips and a published
encrypted vector, ACK/NAK/DUH, mapping, the pure receiver core, and the TCP receiver against a
real client (with an in-test sink, and with a real edge Agent and broker)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.agent import AgentNotRunning
from edge.sia_receiver import FrameSplitter, SiaReceiver, SiaReceiverConfig, SiaSession
from edge.sia_slots import MAX_CONNECTIONS, MAX_PER_ADDRESS, SlotLimits
from firmware_bridge import sia_dc09 as sia
from firmware_bridge.alarms import AlarmKind
from firmware_bridge.contact_id import PanelEvent
from firmware_bridge.link_metrics import LinkMetrics
from shilian.broker import Mosquitto
from tests.test_edge_agent import NODE, Running, make_config, wait_for
from wire import Event, Priority, Topics, decode

#: Published encrypted vector (pysiaalarm tests/test_sia_package_cases.py ``case_null``, key
#: "AAAAAAAAAAAAAAAA" from tests/test_utils.py): CRC and length are correct; it decrypts to
#: 11 pad characters, ``]`` and the timestamp 18:24:52 on 07-05-2020.
PYSIA_NULL = (
    b'\n76D80055"*NULL"0000R0L0#AAAB[B4BC8B40D0E6D959D6BEA78E88CC0B2155741A3C44FBB96D476A3E557'
    b"CAD64D9\r"
)
PYSIA_KEY = b"AAAAAAAAAAAAAAAA"
#: pysiaalarm ``case_cl``: CRC E5D5 is right, but its length field (0078) is not the body's
#: length (0x34): a golden "bad length". With 0034 it is a valid closing report.
PYSIA_CL = b'E5D50078"SIA-DCS"6002L0#AAA[|Nri1/CL501]_14:12:04,09-25-2019'
NOW = datetime(2026, 11, 25, 18, 0, 0, tzinfo=UTC).timestamp()
KEY128 = bytes(range(16))


def test_crc16_is_arc() -> None:
    assert sia.crc16(b"123456789") == 0xBB3D  # CRC-16/ARC check value
    assert sia.crc16(b"") == 0


def test_published_encrypted_null_frame_decrypts() -> None:
    f = sia.parse_frame(PYSIA_NULL, key=PYSIA_KEY)
    assert (f.token, f.encrypted, f.seq, f.receiver, f.prefix, f.account) == (
        "NULL",
        True,
        "0000",
        "0",
        "0",
        "AAAB",
    )
    assert f.data == "" and f.timestamp == datetime(2020, 7, 5, 18, 24, 52, tzinfo=UTC)
    assert sia.frame_events(f, "panel1") == []  # a link test, nothing to store


def test_published_frame_with_wrong_length_field_is_refused() -> None:
    with pytest.raises(sia.SiaLengthError):
        sia.parse_frame(PYSIA_CL)
    f = sia.parse_frame(PYSIA_CL.replace(b"0078", b"0034"))
    assert (f.account, f.seq, f.data) == ("AAA", "6002", "|Nri1/CL501")
    (ev,) = sia.frame_events(f, "panel1")
    assert isinstance(ev, PanelEvent) and ev.detail["code"] == "CL"  # closing: not an alarm


def test_sia_dcs_burglary_frame_golden() -> None:
    raw = sia.build_frame("SIA-DCS", 1, "1234", "#1234|Nri1/BA01", receiver="1", now=NOW)
    # CRC cross-checked with pysiaalarm's own crc_calc (an independent formulation of ARC)
    assert raw == b'\nAB76003B"SIA-DCS"0001R1L0#1234[#1234|Nri1/BA01]_18:00:00,11-25-2026\r'
    f = sia.parse_frame(raw)
    assert f.timestamp is not None and f.timestamp.timestamp() == NOW
    (ev,) = sia.frame_events(f, "panel1")
    assert not isinstance(ev, PanelEvent)
    assert (ev.kind, ev.zone, ev.priority) == (AlarmKind.INTRUSION, 1, Priority.ALARM)
    assert ev.detail == {
        "account": "1234",
        "seq": "0001",
        "format": "SIA-DCS",
        "code": "BA",
        "area": 1,
    }


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("#1234|Nri1/FA129", [(AlarmKind.FIRE, None, 129)]),
        ("#1234|Nri1/PA003", [(AlarmKind.PANIC, None, 3)]),
        ("#1234|Nri1/TA005", [(AlarmKind.TAMPER, None, 5)]),
        ("#1234|Nri1/BR01", [(AlarmKind.RESTORE, AlarmKind.INTRUSION, 1)]),
        ("#1234|Nri1/FR129", [(AlarmKind.RESTORE, AlarmKind.FIRE, 129)]),
        ("#1234|Nri1/PR003", [(AlarmKind.RESTORE, AlarmKind.PANIC, 3)]),
        ("#1234|Nri1/TR005", [(AlarmKind.RESTORE, AlarmKind.TAMPER, 5)]),
        ("#1234|NYT000", [(AlarmKind.TROUBLE, None, 0)]),
        ("#1234|NAT", [(AlarmKind.TROUBLE, None, 0)]),
        ("#1234|NAR", [(AlarmKind.RESTORE, AlarmKind.TROUBLE, 0)]),
        ("#1234|Nri1/BA01/BA02", [(AlarmKind.INTRUSION, None, 1), (AlarmKind.INTRUSION, None, 2)]),
        ("Nri1/WA000", [(AlarmKind.TROUBLE, None, 0)]),  # pysiaalarm case_wa: no #acct|
    ],
)
def test_sia_codes_map_to_alarms(
    data: str, expected: list[tuple[AlarmKind, AlarmKind | None, int]]
) -> None:
    f = sia.parse_frame(sia.build_frame("SIA-DCS", 7, "1234", data, now=NOW))
    evs = sia.frame_events(f, "panel1")
    got = [(e.kind, e.restores, e.zone) for e in evs if not isinstance(e, PanelEvent)]
    assert got == expected


def test_sia_text_and_modifiers() -> None:
    # pysiaalarm case_bug (a real panel's closing report with a ^text^ field)
    (e,) = sia.parse_sia_data("#123456|Nri1CL0^VX FRONTE ^")
    assert (e.code, e.area, e.zone, e.text) == ("CL", 1, 0, "VX FRONTE ")
    (e,) = sia.parse_sia_data("Nti10:30/id12/ri2/OP001")
    assert (e.code, e.user, e.area, e.modifiers["ti"]) == ("OP", 12, 2, "10:30")
    with pytest.raises(sia.SiaFormatError):
        sia.parse_sia_data("#1234|Nri1")


def test_adm_cid_frame_maps_through_contact_id() -> None:
    f = sia.parse_frame(sia.build_frame("ADM-CID", 3, "1234", "#1234|1130 01 015", now=NOW))
    (ev,) = sia.frame_events(f, "panel1")
    assert not isinstance(ev, PanelEvent)
    assert (ev.kind, ev.zone, ev.detail["code"], ev.detail["format"]) == (
        AlarmKind.INTRUSION,
        15,
        "130",
        "ADM-CID",
    )
    # pysiaalarm case_adm_cid payload "1110 00 129": fire, zone 129; restore "3110 00 129"
    f = sia.parse_frame(sia.build_frame("ADM-CID", 4, "12345A", "#12345A|3110 00 129"))
    (ev,) = sia.frame_events(f, "panel1")
    assert not isinstance(ev, PanelEvent)
    assert (ev.kind, ev.restores, ev.zone) == (AlarmKind.RESTORE, AlarmKind.FIRE, 129)
    bad = sia.parse_frame(sia.build_frame("ADM-CID", 5, "1234", "#1234|1130 01"))
    with pytest.raises(sia.SiaFormatError):
        sia.frame_events(bad, "panel1")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", sia.SiaFormatError),
        (b"\nXYZ\r", sia.SiaFormatError),
        (b'\nZZZZ0010"NULL"0001L0#1234[]\r', sia.SiaFormatError),  # crc not hex
        (b'\n0000 010"NULL"0001L0#1234[]\r', sia.SiaFormatError),
        (b"\n" + b"0" * 5000 + b"\r", sia.SiaLengthError),
    ],
)
def test_malformed_frames_raise_typed_errors(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        sia.parse_frame(raw)


def test_bad_crc_and_length_refused_with_nak() -> None:
    good = sia.build_frame("SIA-DCS", 1, "1234", "#1234|Nri1/BA01", now=NOW)
    with pytest.raises(sia.SiaCrcError) as e:
        sia.parse_frame(good.replace(b"BA01", b"BA02"))
    assert e.value.response == "NAK" and e.value.reason == "crc"
    with pytest.raises(sia.SiaLengthError):
        sia.parse_frame(good.replace(b"BA01", b"BA012"))


def test_unsupported_token_and_missing_key_are_duh() -> None:
    raw = sia.build_frame("SIA-DCX", 9, "1234", "#1234|Nri1/BA01")
    with pytest.raises(sia.SiaUnsupported) as e:
        sia.parse_frame(raw)
    assert e.value.response == "DUH" and e.value.frame is not None
    assert sia.duh(e.value.frame) == sia._envelope('"DUH"0009L0#1234[]')
    enc = sia.build_frame("SIA-DCS", 9, "1234", "#1234|Nri1/BA01", key=KEY128, now=NOW)
    with pytest.raises(sia.SiaUnsupported):
        sia.parse_frame(enc)


def test_timestamp_window() -> None:
    f = sia.parse_frame(sia.build_frame("SIA-DCS", 1, "1234", "#1234|Nri1/BA01", now=NOW))
    sia.check_timestamp(f, NOW + 40)
    sia.check_timestamp(f, NOW - 20)
    with pytest.raises(sia.SiaTimestampError):
        sia.check_timestamp(f, NOW + 41)  # frame too old
    with pytest.raises(sia.SiaTimestampError):
        sia.check_timestamp(f, NOW - 21)  # frame from the future
    sia.check_timestamp(f, NOW + 100, past_s=120)
    bad_ts = sia._envelope('"SIA-DCS"0001L0#1234[#1234|Nri1/BA01]_25:00:00,11-25-2026')
    with pytest.raises(sia.SiaFormatError):
        sia.parse_frame(bad_ts)


@pytest.mark.parametrize("key", [bytes(range(16)), bytes(range(24)), bytes(range(32))])
@pytest.mark.parametrize("token", ["SIA-DCS", "ADM-CID", "NULL"])
def test_encrypted_round_trip(key: bytes, token: str) -> None:
    data = {"SIA-DCS": "#1234|Nri1/BA01", "ADM-CID": "#1234|1130 01 015", "NULL": ""}[token]
    raw = sia.build_frame(token, 42, "1234", data, key=key, now=NOW, extended=("X114E123",))
    assert raw.startswith(b"\n") and f'"*{token}"'.encode() in raw
    assert b"Nri" not in raw and b"1130 01" not in raw  # (cannot occur in uppercase hex)
    f = sia.parse_frame(raw, key=key)
    assert (f.encrypted, f.data, f.extended, f.seq) == (True, data, ("X114E123",), "0042")
    assert f.timestamp is not None and f.timestamp.timestamp() == NOW
    with pytest.raises(sia.SiaDecryptError):
        sia.parse_frame(raw, key=bytes(len(key)))


def test_ack_nak_duh_formats() -> None:
    f = sia.parse_frame(sia.build_frame("SIA-DCS", 17, "1234", "#1234|Nri1/BA01", receiver="2A"))
    assert sia.ack(f, NOW) == sia._envelope('"ACK"0017R2AL0#1234[]')
    assert sia.nak(NOW) == sia._envelope('"NAK"0000R0L0A0[]_18:00:00,11-25-2026')
    raw = sia.nak(NOW)
    assert raw[5:9] == b"%04X" % (len(raw) - 10)  # 0LLL counts from the '"' to before CR


def test_encrypted_ack_decrypts_to_our_time() -> None:
    raw = sia.build_frame("SIA-DCS", 5, "1234", "#1234|Nri1/BA01", key=KEY128, now=NOW)
    f = sia.parse_frame(raw, key=KEY128)
    a = sia.ack(f, NOW + 1, KEY128)
    assert a.startswith(b"\n") and b'"*ACK"0005L0#1234[' in a
    _, _, hex_part = a[9:-1].decode().partition("[")
    assert sia.decrypt(hex_part, KEY128) == "]_18:00:01,11-25-2026"


@given(st.binary(max_size=300))
def test_fuzz_any_bytes_frame_or_typed_error(raw: bytes) -> None:
    try:
        f = sia.parse_frame(raw, key=KEY128)
    except sia.SiaError:
        return
    assert f.token in sia.TOKENS


@given(st.binary(max_size=200), st.sampled_from([b"BA01", b"1234", b"Nri", b"_"]))
def test_fuzz_corrupted_good_frame_never_accepted_wrongly(junk: bytes, what: bytes) -> None:
    good = sia.build_frame("SIA-DCS", 1, "1234", "#1234|Nri1/BA01", now=NOW)
    bad = good.replace(what, junk, 1)
    try:
        f = sia.parse_frame(bad)
    except sia.SiaError:
        return
    if bad != good:  # only a CRC collision could get here; the frame must still parse cleanly
        assert f.token == "SIA-DCS"


@given(st.lists(st.binary(max_size=80), max_size=8))
def test_fuzz_splitter_resyncs_after_garbage(chunks: list[bytes]) -> None:
    good = sia.build_frame("SIA-DCS", 1, "1234", "#1234|Nri1/BA01", now=NOW)
    sp = FrameSplitter(max_bytes=256)
    for c in chunks:
        for item in sp.feed(c):
            assert isinstance(item, (bytes, sia.SiaLengthError))
    out = list(sp.feed(b"\r" + good))  # a CR ends whatever garbage was pending
    assert out[-1] == good.strip(b"\n\r")


def test_splitter_caps_before_buffering() -> None:
    sp = FrameSplitter(max_bytes=64)
    assert list(sp.feed(b"\n" + b"A" * 100)) == []
    assert sp._buf == bytearray()  # nothing kept of the oversize frame
    out = list(sp.feed(b"A" * 10 + b"\r\nok\r"))
    assert isinstance(out[0], sia.SiaLengthError) and out[1] == b"ok"


# -- pure receiver core ---------------------------------------------------------------


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_session_dedup_window_and_restamped_retransmission() -> None:
    clock = Clock()
    s = SiaSession(SiaReceiverConfig(port=0, dedup_window_s=60), clock)
    first = sia.build_frame("SIA-DCS", 8, "1234", "#1234|Nri1/BA01", now=clock.t)
    d = s.decide(first)
    assert d.error is None and not d.duplicate and len(d.events) == 1 and d.frame is not None
    assert s.decide(first).duplicate is False  # not stored yet: not a duplicate
    s.commit(d.frame)
    clock.t += 20  # the panel retransmits with a new timestamp
    again = s.decide(sia.build_frame("SIA-DCS", 8, "1234", "#1234|Nri1/BA01", now=clock.t))
    assert again.duplicate and again.response.startswith(b"\n") and b'"ACK"0008' in again.response
    other = s.decide(sia.build_frame("SIA-DCS", 9, "1234", "#1234|Nri1/BA01", now=clock.t))
    assert not other.duplicate
    clock.t += 61  # window over: same seq and payload is a new report
    late = s.decide(sia.build_frame("SIA-DCS", 8, "1234", "#1234|Nri1/BA01", now=clock.t))
    assert not late.duplicate


def test_session_refusals() -> None:
    clock = Clock()
    s = SiaSession(SiaReceiverConfig(port=0, accounts=["1234"]), clock)
    stale = s.decide(sia.build_frame("SIA-DCS", 1, "1234", "#1234|Nri1/BA01", now=NOW - 3600))
    assert stale.error is not None and stale.error.reason == "timestamp"
    assert stale.response == sia.nak(NOW)
    stranger = s.decide(sia.build_frame("SIA-DCS", 1, "9999", "#9999|Nri1/BA01", now=NOW))
    assert stranger.error is not None and b'"DUH"' in stranger.response
    garbage = s.decide(b"\x00\xffhello")
    assert garbage.error is not None and garbage.response == sia.nak(NOW)


# -- TCP receiver ---------------------------------------------------------------------


class RecordingSink:
    """The EventSink contract, in memory; ``fail`` makes emit raise as a stopping agent does."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None, dict[str, Any]]] = []
        self.fail = False

    async def emit(
        self,
        priority: Priority | str,
        kind: str,
        device: str | None = None,
        data: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        key_ttl_s: float | None = None,
    ) -> Event:
        if self.fail:
            raise AgentNotRunning("agent is stopping")
        self.events.append((str(Priority(priority).value), kind, device, data or {}))
        return None  # type: ignore[return-value]  # the receiver does not use the Event

    async def set_device(self, *a: Any, **k: Any) -> None: ...

    async def remove_device(self, device_id: str) -> None: ...


@contextlib.asynccontextmanager
async def running(
    sink: Any, cfg: SiaReceiverConfig | None = None, limits: SlotLimits | None = None
) -> AsyncIterator[SiaReceiver]:
    rx = SiaReceiver(cfg or SiaReceiverConfig(host="127.0.0.1", port=0), limits=limits)
    task = asyncio.create_task(rx.run(sink))
    await asyncio.wait_for(rx.ready.wait(), 30)
    try:
        yield rx
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def reply(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r"), 30)


async def test_receiver_stores_then_acks_dedups_and_survives_bad_frames() -> None:
    sink = RecordingSink()
    async with running(sink) as rx:
        assert rx.port is not None
        r, w = await asyncio.open_connection("127.0.0.1", rx.port)
        frame = sia.build_frame("SIA-DCS", 1, "1234", "#1234|Nri1/BA03")
        w.write(frame)
        assert b'"ACK"0001L0#1234[]' in await reply(r)
        assert sink.events == [  # stored before the ACK was written
            (
                "alarm",
                "intrusion",
                "panel1",
                {
                    "zone": 3,
                    "source": "sia_dc09",
                    "detail": {
                        "account": "1234",
                        "seq": "0001",
                        "format": "SIA-DCS",
                        "code": "BA",
                        "area": 1,
                    },
                },
            )
        ]
        w.write(frame)  # ACK lost, panel retransmits
        assert b'"ACK"0001' in await reply(r)
        w.write(frame.replace(b"BA03", b"BA04"))  # damaged in transit
        assert b'"NAK"0000R0L0A0[]_' in await reply(r)
        w.write(b"\n" + b"9" * 5000 + b"\r")  # oversize line
        assert b'"NAK"' in await reply(r)
        w.write(sia.build_frame("SIA-DCX", 2, "1234", "#1234|Nri1/BA01"))
        assert b'"DUH"0002L0#1234[]' in await reply(r)
        w.write(b"noise\r" + sia.build_frame("SIA-DCS", 2, "1234", "#1234|Nri1/BR03"))
        assert b'"NAK"' in await reply(r)  # the noise line
        assert b'"ACK"0002' in await reply(r)  # the connection survived
        assert [e[1] for e in sink.events] == ["intrusion", "restore"]
        assert rx.counts == {
            "ack": 2,
            "duplicate": 1,
            "crc": 1,
            "length": 1,
            "unsupported": 1,
            "format": 1,
        }
        w.close()


async def test_receiver_encrypted_and_timestamp_nak() -> None:
    sink = RecordingSink()
    cfg = SiaReceiverConfig(host="127.0.0.1", port=0, key_hex=KEY128.hex(), device="panel2")
    async with running(sink, cfg) as rx:
        assert rx.port is not None
        r, w = await asyncio.open_connection("127.0.0.1", rx.port)
        now = rx.clock()
        w.write(sia.build_frame("ADM-CID", 11, "5678", "#5678|1120 00 009", key=KEY128, now=now))
        a = await reply(r)
        assert b'"*ACK"0011L0#5678[' in a
        assert sink.events[0][:3] == ("alarm", "panic", "panel2")
        w.write(sia.build_frame("SIA-DCS", 12, "5678", "#5678|Nri1/FA1", key=KEY128, now=now - 600))
        assert b'"NAK"' in await reply(r)
        assert len(sink.events) == 1
        w.close()


async def test_receiver_does_not_ack_what_it_could_not_store() -> None:
    sink = RecordingSink()
    sink.fail = True
    async with running(sink) as rx:
        assert rx.port is not None
        frame = sia.build_frame("SIA-DCS", 3, "1234", "#1234|Nri1/PA01")
        r, w = await asyncio.open_connection("127.0.0.1", rx.port)
        w.write(frame)
        assert await asyncio.wait_for(r.read(), 30) == b""  # closed, no ACK
        assert rx.counts == {"not_stored": 1}
        sink.fail = False
        r, w = await asyncio.open_connection("127.0.0.1", rx.port)
        w.write(frame)  # the panel retransmits
        assert b'"ACK"0003' in await reply(r)
        assert [e[1] for e in sink.events] == ["panic"]
        w.close()


async def test_receiver_with_real_agent_alarm_reaches_broker(
    broker: Mosquitto, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, broker.port)
    rx = SiaReceiver(SiaReceiverConfig(host="127.0.0.1", port=0))
    seen: list[Event] = []

    async def observe() -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.subscribe(Topics(NODE).event, qos=1)
            await c.subscribe(Topics(NODE).event_alarm, qos=1)
            async for m in c.messages:
                if isinstance(m.payload, bytes):
                    seen.append(decode(Event, m.payload))

    obs = asyncio.create_task(observe())
    try:
        async with Running(cfg, serve_metrics=False, serve_local_socket=False, sources=[rx]):
            await asyncio.wait_for(rx.ready.wait(), 30)
            assert rx.port is not None
            r, w = await asyncio.open_connection("127.0.0.1", rx.port)
            w.write(sia.build_frame("SIA-DCS", 21, "1234", "#1234|Nri1/FA07"))
            assert b'"ACK"0021' in await reply(r)
            await wait_for(lambda: any(e.kind == "fire" for e in seen), "fire event at broker")
            w.close()
    finally:
        obs.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await obs
    (ev,) = [e for e in seen if e.kind == "fire"]
    assert (ev.priority, ev.device, ev.data["zone"]) == (Priority.ALARM, "panel1", 7)
    assert ev.data["detail"]["code"] == "FA"


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect_from(port: int, source: str) -> Conn:
    """A TCP client from a loopback source address (all of 127/8 is local on Linux)."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_by_receiver(r: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(r.read(), 30) == b""
    except ConnectionError:
        return True


def sia_samples(rx: SiaReceiver) -> dict[tuple[str, str], float]:
    out = {}
    for fam in LinkMetrics([rx], lambda: None).collect():
        for smp in fam.samples:
            if smp.name.startswith("shilian_edge_sia_open") or "outcome" in smp.labels:
                out[(smp.name, smp.labels.get("outcome", ""))] = smp.value
    return out


async def test_idle_clients_cannot_lock_a_real_panel_out(caplog: pytest.LogCaptureFixture) -> None:
    """Idle clients fill every slot (four per address, the per-address cap, from eight
    addresses); a real panel still connects and gets its ACK: the oldest connection that never
    had a frame ACKed makes room. Each cap is logged once per spell."""
    sink = RecordingSink()
    held: list[Conn] = []
    async with running(sink) as rx:
        assert rx.port is not None
        port = rx.port
        caplog.set_level("WARNING", logger="shilian.firmware_bridge.sia")
        for _ in range(MAX_PER_ADDRESS):
            held.append(await connect_from(port, "127.0.0.2"))
        await wait_for(lambda: len(rx.slots) == MAX_PER_ADDRESS, "first address held")
        for _ in range(2):  # one address cannot take more
            r, _w = await connect_from(port, "127.0.0.2")
            assert await closed_by_receiver(r)
        n = MAX_PER_ADDRESS
        for i in range(3, 3 + (MAX_CONNECTIONS - MAX_PER_ADDRESS) // MAX_PER_ADDRESS):
            for _ in range(MAX_PER_ADDRESS):
                held.append(await connect_from(port, f"127.0.0.{i}"))
            n += MAX_PER_ADDRESS
            await wait_for(functools.partial(lambda k: len(rx.slots) == k, n), "slots held")
        assert len(rx.slots) == MAX_CONNECTIONS

        r, w = await connect_from(port, "127.0.0.1")
        w.write(sia.build_frame("SIA-DCS", 7, "1234", "#1234|Nri1/FA02"))
        assert b'"ACK"0007' in await reply(r)
        assert [e[1] for e in sink.events] == ["fire"]
        # the evicted one is among the oldest (the first address's)
        assert rx.slots.open_from("127.0.0.2") == MAX_PER_ADDRESS - 1
        assert rx.slots.open_from("127.0.0.3") == MAX_PER_ADDRESS
        assert rx.connections == {
            "accepted": MAX_CONNECTIONS + 1,
            "refused_address_cap": 2,
            "evicted": 1,
        }
        lines = [m.getMessage() for m in caplog.records if "cap hit" in m.getMessage()]
        assert len(lines) == 2, lines  # once for the address's spell, once for the total's
        assert "(address)" in lines[0] and "127.0.0.2" in lines[0]
        assert "(total)" in lines[1] and "evicting" in lines[1]
        m = sia_samples(rx)
        assert m[("shilian_edge_sia_connections_total", "evicted")] == 1
        assert m[("shilian_edge_sia_connections_total", "refused_address_cap")] == 2
        assert m[("shilian_edge_sia_open_connections", "")] == MAX_CONNECTIONS
        w.close()
        for _, hw in held:
            hw.close()


async def test_every_slot_held_by_panels_refuses_the_newcomer() -> None:
    sink = RecordingSink()
    limits = SlotLimits(max_connections=2)
    async with running(sink, limits=limits) as rx:
        assert rx.port is not None
        panels = []
        for seq in (1, 2):
            r, w = await connect_from(rx.port, f"127.0.0.{seq + 1}")
            w.write(sia.build_frame("SIA-DCS", seq, "1234", "#1234|Nri1/BA01"))
            assert b'"ACK"' in await reply(r)
            panels.append((r, w))
        r, _w = await connect_from(rx.port, "127.0.0.9")
        assert await closed_by_receiver(r)
        assert rx.connections == {"accepted": 2, "refused_total_cap": 1}
        for _, w in panels:
            w.close()


async def test_a_guest_that_sends_no_good_frame_is_closed_a_panel_stays() -> None:
    """A connection with no ACKed frame is closed at the guest timeout, garbage or not; a
    panel's connection (a frame ACKed) outlives it."""
    sink = RecordingSink()
    async with running(sink, limits=SlotLimits(guest_timeout_s=1.0)) as rx:
        assert rx.port is not None
        pr, pw = await connect_from(rx.port, "127.0.0.2")
        pw.write(sia.build_frame("SIA-DCS", 1, "1234", "#1234|Nri1/BA01"))
        assert b'"ACK"0001' in await reply(pr)
        gr, gw = await connect_from(rx.port, "127.0.0.3")
        gw.write(b"noise\r")  # a NAK, and no extension of its time
        assert b'"NAK"' in await reply(gr)
        assert await closed_by_receiver(gr)
        assert rx.connections.get("guest_timeout") == 1
        pw.write(sia.build_frame("SIA-DCS", 2, "1234", "#1234|Nri1/BR01"))
        assert b'"ACK"0002' in await reply(pr)  # the panel, connected before, is still in
        pw.close()
