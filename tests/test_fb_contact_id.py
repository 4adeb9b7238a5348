"""Ademco Contact ID (SIA DC-05): golden messages, checksum rules, mapping to typed alarms,
and a fuzz (any text → a message or a typed error)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge import contact_id as cid
from firmware_bridge.alarms import AlarmKind, AlarmSource
from wire import Priority

#: The DC-05 example "1234 18 1 131 01 015 8": account 1234, new perimeter burglary, partition
#: 1, zone 15 (SIA DC-05-1999.09 §3; also quoted verbatim in public decoders on GitHub).
DC05_EXAMPLE = "1234181131010158"

#: spandsp tests/ademco_contactid_tests.c ``reports[]`` (account, mt, q, xyz, gg, ccc); its
#: last entry (MT 56, qualifier 7, hex 'BC'/'DEF' fields) is not a valid Contact ID report.
SPANDSP_REPORTS = [
    ("1234", 1, "131", 1, 15),
    ("1234", 3, "131", 1, 15),
    ("1234", 1, "401", 2, 3),
    ("1234", 3, "401", 3, 5),
]


def test_dc05_example_decodes() -> None:
    m = cid.parse(DC05_EXAMPLE)
    assert m == cid.ContactIdMessage("1234", 1, "131", 1, 15, "18")
    assert m.family == 1
    assert cid.parse("1234 18 1131 01 015 8") == m  # as receivers print it
    assert cid.build("1234", 1, "131", 1, 15) == DC05_EXAMPLE


@pytest.mark.parametrize(("acct", "q", "code", "gg", "ccc"), SPANDSP_REPORTS)
def test_spandsp_reports_round_trip(acct: str, q: int, code: str, gg: int, ccc: int) -> None:
    msg = cid.build(acct, q, code, gg, ccc)
    assert len(msg) == 16
    assert sum(cid.DIGIT_VALUE[d] for d in msg) % 15 == 0
    assert cid.parse(msg) == cid.ContactIdMessage(acct, q, code, gg, ccc)


def test_spandsp_bad_report_is_refused() -> None:
    # "1234 56 7 890 BC DEF" with a correct checksum: the digits are fine, the fields are not.
    body = "123456789" + "0BCDEF"
    with pytest.raises(cid.BadField):
        cid.parse(body + cid.checksum_digit(body))


def test_zero_counts_as_ten_and_a_is_zero() -> None:
    # 0 is worth 10: "1234 18 1 131 01 015" sums to 52, so S = 8 (D if 0 counted as 0).
    assert cid.checksum_digit("123418113101015") == "8"
    # 'A' is the DTMF spelling of 0 (DC-05 digit table): same message, same checksum.
    assert cid.parse("1234181131A1A158") == cid.parse(DC05_EXAMPLE)


def test_checksum_is_f_when_sum_already_multiple_of_15() -> None:
    body = next(
        f"1234181130{gg:02d}{z:03d}"
        for gg in range(1, 99)
        for z in range(1, 999)
        if sum(cid.DIGIT_VALUE[d] for d in f"1234181130{gg:02d}{z:03d}") % 15 == 0
    )
    assert cid.checksum_digit(body) == "F"  # never 0: a 0 digit would be worth 10
    assert cid.parse(body + "F").code == "130"


def test_checksum_ten_is_written_zero() -> None:
    body = next(
        f"1234181130{gg:02d}{z:03d}"
        for gg in range(1, 99)
        for z in range(1, 999)
        if cid.checksum_digit(f"1234181130{gg:02d}{z:03d}") == "0"
    )
    assert cid.parse(body + "0").code == "130"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("1234181131010157", cid.BadChecksum),  # DC-05 example, last digit off by one
        ("1234181131010168", cid.BadChecksum),  # zone digit changed
        ("123418113101015", cid.BadLength),  # 15 digits
        ("12341811310101588", cid.BadLength),  # 17 digits
        ("", cid.BadLength),
        ("1" * 40, cid.BadLength),
        ("12341811310101G8", cid.BadDigit),
        ("1234-81131010158", cid.BadDigit),
        ("1234171131010159", cid.BadField),  # message type 17 (Ademco Express) is not CID
        ("1234182131010157", cid.BadField),  # qualifier 2
    ],
)
def test_malformed_messages_raise_typed_errors(message: str, error: type[Exception]) -> None:
    with pytest.raises(error) as exc:
        cid.parse(message)
    assert isinstance(exc.value, cid.ContactIdError)
    assert exc.value.reason in {"length", "digit", "checksum", "field"}


def test_non_ascii_bytes_are_a_digit_error() -> None:
    with pytest.raises(cid.BadDigit):
        cid.parse(b"1234181131010158\xff")
    assert cid.parse(DC05_EXAMPLE.encode()).zone == 15


@pytest.mark.parametrize(
    ("q", "code", "kind", "restores"),
    [
        (1, "110", AlarmKind.FIRE, None),
        (1, "111", AlarmKind.FIRE, None),
        (1, "120", AlarmKind.PANIC, None),
        (1, "121", AlarmKind.PANIC, None),  # duress
        (1, "130", AlarmKind.INTRUSION, None),
        (1, "134", AlarmKind.INTRUSION, None),
        (1, "137", AlarmKind.TAMPER, None),
        (1, "144", AlarmKind.TAMPER, None),
        (1, "301", AlarmKind.TROUBLE, None),
        (1, "384", AlarmKind.TROUBLE, None),
        (1, "383", AlarmKind.TAMPER, None),
        (3, "130", AlarmKind.RESTORE, AlarmKind.INTRUSION),
        (3, "110", AlarmKind.RESTORE, AlarmKind.FIRE),
        (3, "137", AlarmKind.RESTORE, AlarmKind.TAMPER),
        (3, "301", AlarmKind.RESTORE, AlarmKind.TROUBLE),
        (6, "130", AlarmKind.INTRUSION, None),  # status report: still in alarm
    ],
)
def test_codes_map_to_typed_alarms(
    q: int, code: str, kind: AlarmKind, restores: AlarmKind | None
) -> None:
    msg = cid.parse(cid.build("1234", q, code, 1, 7))
    ev = cid.to_event(msg, "panel1")
    assert not isinstance(ev, cid.PanelEvent)
    assert (ev.kind, ev.restores, ev.zone, ev.device) == (kind, restores, 7, "panel1")
    assert ev.source is AlarmSource.CONTACT_ID
    assert ev.detail["account"] == "1234" and ev.detail["code"] == code
    assert ev.detail["qualifier"] == q and ev.detail["partition"] == 1
    assert ev.detail.get("status_report", False) == (q == 6)


def test_alarm_event_data_carries_description() -> None:
    ev = cid.to_event(cid.parse(cid.build("1234", 1, "110", 0, 3)), "panel1")
    assert ev.priority is Priority.ALARM
    data = ev.event_data()
    assert data["zone"] == 3 and data["source"] == "contact_id"
    assert data["detail"]["description"] == {"zh": "火警", "en": "Fire"}


@pytest.mark.parametrize("code", ["401", "407", "570", "602", "999"])
def test_non_alarm_codes_become_info_panel_events(code: str) -> None:
    ev = cid.to_event(cid.parse(cid.build("1234", 3, code, 1, 12)), "panel1")
    assert isinstance(ev, cid.PanelEvent)
    assert ev.priority is Priority.INFO and ev.kind == cid.PANEL_EVENT_KIND
    assert ev.detail["zone_or_user"] == 12 and ev.detail["qualifier"] == 3


def test_adm_cid_payload_as_dc09_carries_it() -> None:
    m = cid.parse_event("1130 01 015", account="1234")
    assert m == cid.ContactIdMessage("1234", 1, "130", 1, 15)
    with pytest.raises(cid.BadLength):
        cid.parse_event("1130 01 01", account="1234")


def test_build_refuses_bad_fields() -> None:
    with pytest.raises(ValueError):
        cid.build("1234", 2, "130")
    with pytest.raises(ValueError):
        cid.build("12345", 1, "130")
    with pytest.raises(ValueError):
        cid.build("1234", 1, "130", zone=1000)


@given(st.text(alphabet="0123456789ABCDEF -", max_size=24) | st.text(max_size=40))
def test_fuzz_any_text_is_a_message_or_a_typed_error(text: str) -> None:
    try:
        m = cid.parse(text)
    except cid.ContactIdError:
        return
    # Accepted: 16 digits whose values sum to a multiple of 15.
    digits = text.replace(" ", "").upper()
    assert len(digits) == 16 and sum(cid.DIGIT_VALUE[d] for d in digits) % 15 == 0
    assert m.qualifier in cid.QUALIFIERS


@given(
    st.text(alphabet="123456789BCDEF", min_size=4, max_size=4),
    st.sampled_from(sorted(cid.QUALIFIERS)),
    st.integers(100, 999).map(str),
    st.integers(0, 99),
    st.integers(0, 999),
)
def test_fuzz_build_parse_round_trip(acct: str, q: int, code: str, gg: int, zone: int) -> None:
    m = cid.parse(cid.build(acct, q, code, gg, zone))
    assert (m.account, m.qualifier, m.code, m.partition, m.zone) == (acct, q, code, gg, zone)


@given(st.text(alphabet="0123456789BCDEF", min_size=16, max_size=16), st.integers(0, 15))
def test_fuzz_single_digit_change_is_caught(msg: str, pos: int) -> None:
    """The mod-15 checksum catches any single-digit substitution (values differ by < 15)."""
    body = msg[:15] + cid.checksum_digit(msg[:15])
    digits = "0123456789BCDEF"
    other = digits[(digits.index(body[pos]) + 1) % len(digits)]
    with pytest.raises(cid.ContactIdError):
        cid.parse(body[:pos] + other + body[pos + 1 :])
