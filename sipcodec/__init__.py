"""SIP OPTIONS as a pure codec (RFC 3261): build a request, parse and match its response.

No sockets, no clocks: the technician's discovery (provisioning) and the box's watch over its
conference terminal use it with their own transports. Decoding is total: any bytes give a
:class:`SipResponse` or a :class:`RemoteSipError` whose ``reason`` is also a metric label.
"""

from sipcodec.errors import LocalSipError, RemoteSipError, SipError
from sipcodec.options import (
    MAX_SIP_BYTES,
    OptionsRequest,
    SipResponse,
    build_options,
    match_response,
    parse_options_response,
    parse_response,
)

__all__ = [
    "MAX_SIP_BYTES",
    "LocalSipError",
    "OptionsRequest",
    "RemoteSipError",
    "SipError",
    "SipResponse",
    "build_options",
    "match_response",
    "parse_options_response",
    "parse_response",
]
