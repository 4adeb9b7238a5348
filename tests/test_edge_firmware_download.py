"""The firmware image's bytes (edge.firmware_download): from a path or a real local HTTP server,
refused when the size differs from the job's."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.commands import MAX_FIRMWARE_BYTES, FirmwareJob
from edge.firmware_download import fetch_image

BODY = b"signed-image-bytes"


@pytest.fixture
def http_url() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/fw"
    finally:
        srv.shutdown()
        srv.server_close()


def test_download_of_the_announced_size(http_url: str) -> None:
    assert fetch_image(FirmwareJob(url=http_url, size=len(BODY))) == BODY


def test_download_of_another_size_is_refused(http_url: str) -> None:
    with pytest.raises(ValueError, match="size mismatch"):
        fetch_image(FirmwareJob(url=http_url, size=len(BODY) + 1))
    with pytest.raises(ValueError, match="size mismatch"):
        fetch_image(FirmwareJob(url=http_url, size=len(BODY) - 1))


def test_local_path_without_size_is_bounded(tmp_path: Path) -> None:
    ok = tmp_path / "ok.img"
    ok.write_bytes(BODY)
    assert fetch_image(FirmwareJob(path=str(ok))) == BODY
    big = tmp_path / "big.img"
    big.write_bytes(b"\0" * (MAX_FIRMWARE_BYTES + 1))
    with pytest.raises(ValueError, match="size mismatch"):
        fetch_image(FirmwareJob(path=str(big)))
    with pytest.raises(OSError):
        fetch_image(FirmwareJob(path=str(tmp_path / "missing.img")))
