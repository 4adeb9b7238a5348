"""Firmware images for the village alarm boards: upload, list, download (content-addressed).

- ``POST /api/v1/firmware`` (admin): the body is a signed image (``shilian firmware sign``),
  ``application/octet-stream``. It is verified with ``[firmware] public_key`` (structure,
  payload digest, Ed25519 signature) before it is stored as ``<dir>/<sha256>.img`` — the image
  id (SHA-256 of header ‖ payload). Uploading the same image again is idempotent (200).
- ``GET /api/v1/firmware``: the stored images (id, model, version, size).
- ``GET /api/v1/firmware/{sha256}``: the image bytes, for nodes (public: images are signed,
  and every node verifies before flashing).

Starting an update is a node command: ``POST /api/v1/nodes/{id}/commands`` with
``{"cmd": "firmware-update", "args": {"url": ..., "sha256": ..., "size": ...}}``; the list
gives each image's ``args`` for a given base URL. A file is written to a temporary name and
renamed, so a power cut leaves either the whole image or none.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from central import auth
from central.http import ApiError, ok
from firmware_bridge import image as fw_image

#: Largest upload: the header, the largest payload and the signature.
MAX_IMAGE_BYTES = fw_image.HEADER.size + fw_image.MAX_PAYLOAD + fw_image.SIGNATURE_SIZE
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class FirmwareStore:
    """Signed images under ``directory``, verified with ``public_key`` before they are kept."""

    def __init__(self, directory: Path, public_key: bytes) -> None:
        self.dir = directory
        self.public_key = public_key
        self.dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_config(cls, directory: Path, public_key_file: Path) -> FirmwareStore:
        return cls(directory, fw_image.load_key(public_key_file, fw_image.PUBLIC_KEY_SIZE))

    def path(self, image_id: str) -> Path:
        return self.dir / f"{image_id}.img"

    def add(self, data: bytes) -> tuple[fw_image.Image, bool]:
        """Verify and store; ``(image, created)``. :class:`ImageError` if refused."""
        img = fw_image.verify(data, self.public_key)
        dest = self.path(img.image_id)
        if dest.exists():
            return img, False
        tmp = dest.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        return img, True

    def list(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.dir.glob("*.img")):
            try:
                img = fw_image.parse_image(p.read_bytes())
            except (OSError, fw_image.ImageError):
                continue
            out.append(describe(img, p.stat().st_size))
        return out


FIRMWARE: web.AppKey[FirmwareStore] = web.AppKey("firmware", FirmwareStore)


def describe(img: fw_image.Image, size: int) -> dict[str, Any]:
    return {
        "sha256": img.image_id,
        "board_model": img.board_model,
        "version": img.version,
        "size": size,
        "path": f"/api/v1/firmware/{img.image_id}",
    }


async def upload(request: web.Request) -> web.Response:
    store = request.app[FIRMWARE]
    # Read the stream with our own cap: the API's body cap (64 KiB) is for JSON requests.
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > MAX_IMAGE_BYTES:
            raise ApiError(
                413,
                "image_too_large",
                f"镜像超过 {MAX_IMAGE_BYTES} 字节",
                f"image larger than {MAX_IMAGE_BYTES} bytes",
            )
    try:
        img, created = await asyncio.to_thread(store.add, bytes(data))
    except fw_image.ImageError as e:
        await auth.audit(request, "firmware_upload", "-", "refused", fault=e.fault.value)
        zh, _, en = str(e).partition(" / ")
        raise ApiError(422, e.fault.value, zh, en) from None
    await auth.audit(
        request,
        "firmware_upload",
        img.image_id,
        "stored" if created else "already_stored",
        version=img.version,
        board_model=img.board_model,
        size=len(data),
    )
    return ok(describe(img, len(data)), status=201 if created else 200)


async def list_images(request: web.Request) -> web.Response:
    store = request.app[FIRMWARE]
    return ok({"images": await asyncio.to_thread(store.list)})


async def download(request: web.Request) -> web.StreamResponse:
    store = request.app[FIRMWARE]
    image_id = request.match_info["sha256"].lower()
    path = store.path(image_id)
    if not _SHA256.match(image_id) or not path.exists():
        raise ApiError(404, "unknown_image", "没有这个固件镜像", "no such firmware image")
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


def add_routes(app: web.Application, store: FirmwareStore) -> None:
    app[FIRMWARE] = store
    app.router.add_post("/api/v1/firmware", upload)
    app.router.add_get("/api/v1/firmware", list_images)
    app.router.add_get("/api/v1/firmware/{sha256}", download)
