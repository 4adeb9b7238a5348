"""The one TLS client context of the product: verify the peer against our CA (and its name) and
present our certificate. Used by the edge's and central's MQTT links and the edge's TLS probe."""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(
    ca_file: Path, cert_file: Path, key_file: Path, *, max_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    """A context for mutual TLS. Files are read now (call again after a renewal). Missing or
    unreadable files raise OSError; files that are not a certificate or key raise ssl.SSLError.
    ``max_version`` caps the protocol (the probe caps at TLS 1.2 to see the server's verdict on
    our certificate inside the handshake)."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if max_version is not None:
        ctx.maximum_version = max_version
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx
