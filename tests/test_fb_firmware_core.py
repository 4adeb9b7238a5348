"""Firmware images, the FW_* frame codecs and the doc examples (pure; no I/O).

Transfers over a real pty are in tests/test_fb_firmware.py."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge import fw_frames
from firmware_bridge import image as fi
from firmware_bridge.bootloader import Bootloader
from firmware_bridge.framing import (
    BOOT_TRIAL,
    CAP_FW_UPDATE,
    Frame,
    FrameDecoder,
    FrameType,
    HelloMsg,
    MessageError,
    decode_board_frame,
    encode_frame,
)
from firmware_bridge.fw_frames import (
    CHUNK_SIZE,
    BootConfirm,
    FwBegin,
    FwChunk,
    FwCode,
    FwEnd,
    FwState,
    FwStatus,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "serial-protocol.md"
FW_BLOCK = re.compile(r"```hex-fw ([A-Z_]+)\n(.*?)```", re.S)
#: A fixed Ed25519 seed: the doc examples are reproducible.
SEED = bytes(range(32))


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return fi.keygen()


def signed(keys: tuple[bytes, bytes], version: str = "2.0.0", size: int = 4096) -> fi.Image:
    return fi.sign(
        fi.sim_payload(version, size), board_model="SIM-BOARD", version=version, private_key=keys[0]
    )


def test_image_round_trip_and_verify(keys: tuple[bytes, bytes]) -> None:
    img = signed(keys)
    data = img.to_bytes()
    back = fi.verify(data, keys[1], board_model="SIM-BOARD", image_id=img.image_id)
    assert (back.version, back.board_model, back.payload) == ("2.0.0", "SIM-BOARD", img.payload)
    assert len(data) == fi.HEADER.size + 4096 + fi.SIGNATURE_SIZE


@pytest.mark.parametrize(
    ("where", "fault"),
    [
        (fi.HEADER.size + 100, fi.ImageFault.DIGEST),  # a payload byte
        (30, fi.ImageFault.SIGNATURE),  # the version field (digest still matches)
        (-1, fi.ImageFault.SIGNATURE),  # the signature
        (0, fi.ImageFault.MALFORMED),  # the magic
    ],
)
def test_tampered_image_refused(
    keys: tuple[bytes, bytes], where: int, fault: fi.ImageFault
) -> None:
    data = bytearray(signed(keys).to_bytes())
    data[where] ^= 0x01
    with pytest.raises(fi.ImageError) as e:
        fi.verify(bytes(data), keys[1])
    assert e.value.fault is fault
    assert " / " in str(e.value)  # zh / en


def test_other_key_and_model_refused(keys: tuple[bytes, bytes]) -> None:
    img = signed(keys).to_bytes()
    _, other_pub = fi.keygen()
    with pytest.raises(fi.ImageError, match="bad signature"):
        fi.verify(img, other_pub)
    with pytest.raises(fi.ImageError, match="another board model"):
        fi.verify(img, keys[1], board_model="VB-2")
    with pytest.raises(fi.ImageError, match="sha256"):
        fi.verify(img, keys[1], image_id="00" * 32)


@given(st.binary(max_size=400))
def test_any_bytes_are_an_image_or_a_typed_error(data: bytes) -> None:
    with contextlib.suppress(fi.ImageError):  # anything else fails the test
        fi.parse_image(data)


@given(
    st.sampled_from(sorted(fw_frames.FW_TYPES)), st.integers(0, 2**32 - 1), st.binary(max_size=240)
)
def test_fw_decode_is_total(ftype: int, seq: int, payload: bytes) -> None:
    with contextlib.suppress(MessageError):  # anything else fails the test
        fw_frames.decode(Frame(ftype, seq, payload))


def test_fw_messages_round_trip() -> None:
    msgs: list[fw_frames.FwMessage] = [
        FwBegin(bytes(range(32)), 65610, bytes(64), "2.0.0"),
        FwChunk(0x00010203, 232, b"\x5a" * CHUNK_SIZE),
        FwEnd(0x00010203),
        FwStatus(0x00010203, FwState.RECEIVING, FwCode.NONE, 464, 65610),
        BootConfirm(0x2265B1F5),
    ]
    for msg in msgs:
        (frame,) = FrameDecoder().feed(fw_frames.encode(msg))
        assert isinstance(frame, Frame)
        assert fw_frames.decode(frame) == msg
    assert CHUNK_SIZE == 232  # fills the 240-byte payload cap with the tag


def test_hello_carries_boot_state_with_the_capability() -> None:
    hello = HelloMsg(1, 0x2265B1F5, 0x000F, 8, "VB-0107", "2.0.0", BOOT_TRIAL, 0)
    (frame,) = FrameDecoder().feed(encode_frame(hello.to_frame()))
    assert isinstance(frame, Frame)
    assert decode_board_frame(frame) == hello
    assert hello.capabilities & CAP_FW_UPDATE


def doc_examples() -> dict[str, bytes]:
    """The wire bytes of each example in the doc's firmware section."""
    image_id = bytes.fromhex("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
    tag = fw_frames.tag_of(image_id)
    sig = bytes.fromhex("11" * 64)
    return {
        "FW_BEGIN": fw_frames.encode(FwBegin(image_id, 65610, sig, "2.0.0")),
        "FW_CHUNK": fw_frames.encode(FwChunk(tag, 464, b"\x01\x02\x03\x04")),
        "FW_END": fw_frames.encode(FwEnd(tag)),
        "FW_STATUS": fw_frames.encode(FwStatus(tag, FwState.RECEIVING, FwCode.NONE, 464, 65610)),
        "BOOT_CONFIRM": fw_frames.encode(BootConfirm(0x2265B1F5)),
    }


def test_doc_firmware_examples_match_the_code() -> None:
    blocks = dict(FW_BLOCK.findall(DOC.read_text(encoding="utf-8")))
    expected = doc_examples()
    assert set(blocks) == set(expected)
    for name, body in blocks.items():
        wire = bytes.fromhex(" ".join(body.split()))
        assert wire == expected[name], (
            f"{name}: doc {wire.hex(' ')} != code {expected[name].hex(' ')}"
        )
        (frame,) = FrameDecoder().feed(wire)
        assert isinstance(frame, Frame) and frame.type == FrameType[name]
        fw_frames.decode(frame)


def test_bootloader_resume_verify_trial_confirm(keys: tuple[bytes, bytes], tmp_path: Path) -> None:
    """Sans-I/O: half an image, a simulated power cycle (state from the flash dir), resume,
    verify, trial boot, confirm."""
    img = signed(keys, size=3000)
    data = img.signed
    iid = bytes.fromhex(img.image_id)
    tag = fw_frames.tag_of(iid)
    begin = FwBegin(iid, len(data), img.signature, img.version)

    def boot() -> Bootloader:
        return Bootloader(
            public_key=keys[1], board_model="SIM-BOARD", factory_version="1.0.0", flash_dir=tmp_path
        )

    b = boot()
    b.on_boot(1, 0.0)
    assert b.on_message(begin, 0.0) == FwStatus(tag, FwState.RECEIVING, FwCode.NONE, 0, len(data))
    for off in range(0, 1000, CHUNK_SIZE):
        b.on_message(FwChunk(tag, off, data[off : off + CHUNK_SIZE]), 0.0)
    held = len(b.data)
    assert held >= 1000
    # a chunk beyond the resume point is ignored and says so
    st_ooo = b.on_message(FwChunk(tag, held + CHUNK_SIZE, b"x"), 0.0)
    assert st_ooo is not None and st_ooo.code is FwCode.OUT_OF_ORDER and st_ooo.held == held

    b = boot()  # power cycle: the partial image is in flash
    b.on_boot(2, 1.0)
    st_resume = b.on_message(begin, 1.0)
    assert st_resume is not None and st_resume.held == held
    for off in range(held, len(data), CHUNK_SIZE):
        b.on_message(FwChunk(tag, off, data[off : off + CHUNK_SIZE]), 1.0)
    done = b.on_message(FwEnd(tag), 1.0)
    assert done is not None and done.state is FwState.VERIFIED
    assert b.reboot_due(2.0)
    b.on_boot(3, 2.0)
    assert (b.running.version, b.trial, b.boot_state) == ("2.0.0", True, BOOT_TRIAL)
    assert b.on_message(BootConfirm(2), 2.0) is None  # another boot: no proof
    ok = b.on_message(BootConfirm(3), 2.5)
    assert ok is not None and ok.state is FwState.CONFIRMED
    assert boot().running.version == "2.0.0" and not boot().trial


def test_update_core_against_board_core_in_memory_with_lost_chunks(
    keys: tuple[bytes, bytes],
) -> None:
    """Sans-I/O end to end: HostLink + FirmwareUpdate against BoardCore + Bootloader, bytes
    passed by hand on a stepped clock, a fifth of the host's write batches lost (go-back-N and
    timeouts recover), then trial and confirm."""
    import random

    from firmware_bridge.board import BoardCore
    from firmware_bridge.link import FirmwareStatus, Heartbeat, HostLink, LinkDown, LinkUp
    from firmware_bridge.update import FirmwareUpdate, Result

    rng = random.Random(5)
    img = signed(keys, size=20_000)
    boot = Bootloader(public_key=keys[1], board_model="SIM-BOARD", factory_version="1.0.0")
    now = 0.0
    board = BoardCore(now, rng=lambda: rng.getrandbits(32), bootloader=boot)
    host = HostLink(now)
    upd = FirmwareUpdate(img, now, confirm_after_s=2.0)
    lost = 0
    while not upd.done and now < 300:
        now += 0.005
        board.on_timer(now)
        host.on_timer(now)
        host.receive_data(board.data_to_send(now), now)
        for ev in host.events():
            if isinstance(ev, LinkUp):
                upd.on_link_up(ev.board, now)
            elif isinstance(ev, LinkDown):
                upd.on_link_down(now)
            elif isinstance(ev, Heartbeat):
                upd.on_heartbeat(now)
            elif isinstance(ev, FirmwareStatus):
                upd.on_status(ev.status, now)
        if now >= upd.next_deadline():
            upd.on_timer(now)
        host.send_firmware(upd.data_to_send())
        out = host.data_to_send()
        if len(out) > 100 and rng.random() < 0.2:
            lost += 1  # the line ate this batch of chunks
            continue
        board.receive_data(out, now)
    assert upd.result is Result.SUCCESS, upd.progress()
    assert lost > 0 and upd.retransmits > 0
    assert board.fw_version == img.version and not boot.trial
