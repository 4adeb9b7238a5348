"""The firmware image's bytes for a job: read from a local path or downloaded over HTTP(S).

Blocking (run it in a thread); stdlib urllib, imported only when a download is made, so an edge
node carries no HTTP client for a rare download. The size is checked against the job before the
bytes are returned; the signature is the caller's to verify (firmware_bridge.image).
"""

from __future__ import annotations

from edge.commands import MAX_FIRMWARE_BYTES, FirmwareJob

#: Download timeout per socket operation: central's download is on the same network as the
#: MQTT link; a stalled read ends the job as ``download_failed`` instead of hanging it.
FIRMWARE_HTTP_TIMEOUT_S = 30.0


def fetch_image(job: FirmwareJob) -> bytes:
    """The image bytes of ``job``; OSError if unreadable, ValueError if the size is wrong.
    At most one byte past the bound is read, so an oversized image is refused unallocated."""
    limit = job.size if job.size is not None else MAX_FIRMWARE_BYTES
    if job.path is not None:
        with open(job.path, "rb") as f:
            data = f.read(MAX_FIRMWARE_BYTES + 1)
    else:
        import urllib.request

        assert job.url is not None
        with urllib.request.urlopen(job.url, timeout=FIRMWARE_HTTP_TIMEOUT_S) as resp:
            data = resp.read(limit + 1)
    if len(data) > limit or (job.size is not None and len(data) != job.size):
        raise ValueError(f"下载大小不符 / size mismatch: {len(data)} bytes, expected {limit}")
    return bytes(data)
