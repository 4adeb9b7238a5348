"""One TLS handshake with the node's own certificate: is the broker reachable, and does it
still accept this certificate? Used by ``shilian edge doctor`` and by the technician's
commissioning check (which sits above edge and imports it from here)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from pki.tls import client_context

#: Seconds for the TCP connect and the handshake: a 4G uplink answers within a few seconds.
HANDSHAKE_TIMEOUT_S = 10.0


class HandshakeFailed(Exception):
    """The broker could not be reached or refused the handshake; the message says why (zh/en)."""


def tls_handshake(
    host: str,
    port: int,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    timeout_s: float = HANDSHAKE_TIMEOUT_S,
) -> str:
    """A full TLS handshake with our certificate and no MQTT session (that would take over the
    running agent's). Capped at TLS 1.2: in TLS 1.3 the client's handshake completes before the
    server has checked the client certificate, so a revoked certificate would look accepted.
    Returns ``host:port version``."""
    try:
        ctx = client_context(ca_file, cert_file, key_file, max_version=ssl.TLSVersion.TLSv1_2)
        with (
            socket.create_connection((host, port), timeout_s) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as s,
        ):
            version = s.version()
    except (OSError, ssl.SSLError) as e:
        raise HandshakeFailed(f"无法与代理建立 TLS 连接 / TLS to the broker failed: {e}") from None
    return f"{host}:{port} {version}"
