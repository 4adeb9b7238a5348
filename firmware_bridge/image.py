"""Signed firmware images of the village alarm board (pure; Ed25519 via ``cryptography``).

Layout (all integers big-endian)::

    header  (74 bytes)
      magic          4  b"SLFW"
      format         u8 IMAGE_FORMAT (1)
      flags          u8 0 (reserved)
      board_model   16  ASCII, NUL-padded (the board refuses another model's image)
      version       16  ASCII, NUL-padded (what HELLO reports once it runs)
      payload_size  u32
      payload_sha256 32
    payload (payload_size bytes)
    signature (64 bytes): Ed25519 over header ‖ payload

The **image id** is SHA-256(header ‖ payload): the content address at central, the ``sha256``
of the ``firmware-update`` command and the resume key of a transfer to the board. Header and
payload are what travels on the serial line; the signature goes in FW_BEGIN.

``cryptography`` is imported only inside the functions that sign or verify: the edge agent
imports this module when an update starts, never at start-up (idle RSS target 40 MB).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

MAGIC = b"SLFW"
IMAGE_FORMAT = 1
HEADER = struct.Struct(">4sBB16s16sI32s")
SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32
#: Largest payload: the reference MCU has two 512 KiB application slots.
MAX_PAYLOAD = 512 * 1024
#: Board model and version strings (fixed 16-byte fields in the header).
MAX_FIELD = 16

#: Simulated firmware: the simulator reads this marker at the start of the payload to decide
#: how the "running" image behaves (a real board simply runs the code).
SIM_MARKER = b"SHILIAN-SIM-FW "


class SimBehaviour(StrEnum):
    OK = "ok"  # handshakes and heartbeats: the host confirms it
    NO_HEARTBEAT = "no-heartbeat"  # handshakes, then stays silent: never confirmed
    CRASH = "crash"  # reboots itself a second after boot, again and again


class ImageFault(StrEnum):
    """Why an image was refused (metric label and the ``result`` of a failed update)."""

    MALFORMED = "malformed"  # too short, bad magic, sizes that do not add up
    FORMAT = "format"  # a format version we do not read
    DIGEST = "digest"  # payload SHA-256 differs from the header's
    SIGNATURE = "bad_signature"  # Ed25519 signature does not verify with our key
    MODEL = "wrong_model"  # built for another board model
    ID = "id_mismatch"  # not the image that was asked for (download sha256)


_TEXTS = {
    ImageFault.MALFORMED: ("固件镜像格式错误", "malformed firmware image"),
    ImageFault.FORMAT: ("不支持的镜像格式版本", "unsupported image format version"),
    ImageFault.DIGEST: ("镜像内容校验失败（已损坏）", "payload digest mismatch (corrupted)"),
    ImageFault.SIGNATURE: (
        "签名无效：镜像被篡改或不是用可信密钥签名",
        "bad signature: tampered or not signed with the trusted key",
    ),
    ImageFault.MODEL: ("镜像不适用于此板卡型号", "image is for another board model"),
    ImageFault.ID: ("镜像与要求的 sha256 不符", "image does not match the requested sha256"),
}


class ImageError(ValueError):
    """The image is refused (the image's fault, never ours). ``str()`` is zh / en."""

    def __init__(self, fault: ImageFault, detail: str = "") -> None:
        zh, en = _TEXTS[fault]
        super().__init__(f"{zh} / {en}" + (f": {detail}" if detail else ""))
        self.fault = fault


@dataclass(frozen=True, slots=True)
class Image:
    board_model: str
    version: str
    payload: bytes
    signature: bytes
    header: bytes

    @property
    def signed(self) -> bytes:
        """Header ‖ payload: what the signature covers and what is sent to the board."""
        return self.header + self.payload

    @property
    def image_id(self) -> str:
        return hashlib.sha256(self.signed).hexdigest()

    def to_bytes(self) -> bytes:
        return self.signed + self.signature


def _field(s: str, what: str) -> bytes:
    b = s.encode("ascii")
    if not 0 < len(b) <= MAX_FIELD or b"\x00" in b:
        raise ValueError(f"{what} must be 1..{MAX_FIELD} ASCII characters")
    return b.ljust(MAX_FIELD, b"\x00")


def build_header(board_model: str, version: str, payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes > {MAX_PAYLOAD}")
    return HEADER.pack(
        MAGIC,
        IMAGE_FORMAT,
        0,
        _field(board_model, "board model"),
        _field(version, "version"),
        len(payload),
        hashlib.sha256(payload).digest(),
    )


def parse_header(header: bytes) -> tuple[str, str, int, bytes]:
    """``(board_model, version, payload_size, payload_sha256)``; :class:`ImageError` if bad."""
    if len(header) < HEADER.size:
        raise ImageError(ImageFault.MALFORMED, f"{len(header)} bytes < header {HEADER.size}")
    magic, fmt, _flags, model, version, size, digest = HEADER.unpack_from(header)
    if magic != MAGIC:
        raise ImageError(ImageFault.MALFORMED, "bad magic")
    if fmt != IMAGE_FORMAT:
        raise ImageError(ImageFault.FORMAT, f"format {fmt}")
    if size > MAX_PAYLOAD:
        raise ImageError(ImageFault.MALFORMED, f"payload size {size}")
    try:
        return (
            model.rstrip(b"\x00").decode("ascii"),
            version.rstrip(b"\x00").decode("ascii"),
            size,
            digest,
        )
    except UnicodeDecodeError:
        raise ImageError(ImageFault.MALFORMED, "model/version not ASCII") from None


def parse_image(data: bytes) -> Image:
    """Split and check the structure and payload digest (NOT the signature: see
    :func:`verify`)."""
    model, version, size, digest = parse_header(data)
    if len(data) != HEADER.size + size + SIGNATURE_SIZE:
        raise ImageError(
            ImageFault.MALFORMED,
            f"{len(data)} bytes, expected {HEADER.size + size + SIGNATURE_SIZE}",
        )
    payload = data[HEADER.size : HEADER.size + size]
    if hashlib.sha256(payload).digest() != digest:
        raise ImageError(ImageFault.DIGEST)
    return Image(model, version, payload, data[-SIGNATURE_SIZE:], data[: HEADER.size])


def check_signature(signed: bytes, signature: bytes, public_key: bytes) -> None:
    """Ed25519 check of ``signature`` over ``signed``; :class:`ImageError` if it fails."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, signed)
    except (InvalidSignature, ValueError):
        raise ImageError(ImageFault.SIGNATURE) from None


def verify(
    data: bytes,
    public_key: bytes,
    *,
    board_model: str | None = None,
    image_id: str | None = None,
) -> Image:
    """Parse and verify: structure, digest, signature, and optionally model and id."""
    img = parse_image(data)
    if image_id is not None and img.image_id != image_id.lower():
        raise ImageError(ImageFault.ID, f"{img.image_id[:16]}… ≠ {image_id[:16]}…")
    check_signature(img.signed, img.signature, public_key)
    if board_model is not None and img.board_model != board_model:
        raise ImageError(ImageFault.MODEL, f"{img.board_model!r} ≠ {board_model!r}")
    return img


def sign(payload: bytes, *, board_model: str, version: str, private_key: bytes) -> Image:
    """A signed image of ``payload`` (``private_key``: 32-byte Ed25519 seed)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    header = build_header(board_model, version, payload)
    sig = Ed25519PrivateKey.from_private_bytes(private_key).sign(header + payload)
    return Image(board_model, version, payload, sig, header)


def keygen() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as raw bytes ``(private 32, public 32)``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    private = key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return private, key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)


def load_key(path: Path, size: int) -> bytes:
    """A raw key stored as hex text (what ``shilian firmware keygen`` writes)."""
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise ValueError(f"{path}: 不是十六进制密钥 / not a hex key") from None
    if len(key) != size:
        raise ValueError(f"{path}: 密钥长度应为 {size} 字节 / key must be {size} bytes")
    return key


def sim_payload(version: str, size: int, behaviour: SimBehaviour = SimBehaviour.OK) -> bytes:
    """A payload for the simulator: marker, behaviour, then deterministic filler."""
    head = SIM_MARKER + behaviour.value.encode() + b" " + version.encode() + b"\n"
    if size < len(head):
        raise ValueError(f"size must be at least {len(head)}")
    filler = bytearray()
    block = hashlib.sha256(version.encode()).digest()
    while len(filler) < size - len(head):
        block = hashlib.sha256(block).digest()
        filler += block
    return head + bytes(filler[: size - len(head)])


def sim_behaviour(payload: bytes) -> SimBehaviour:
    """How the simulator runs ``payload`` (an image not built for it just works)."""
    if not payload.startswith(SIM_MARKER):
        return SimBehaviour.OK
    word = payload[len(SIM_MARKER) :].split(b" ", 1)[0].decode("ascii", "replace")
    try:
        return SimBehaviour(word)
    except ValueError:
        return SimBehaviour.OK
