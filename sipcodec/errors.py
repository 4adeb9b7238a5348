"""Whose fault: the peer sent something that is not an answer to us, or we asked for a request
that cannot be written."""

from __future__ import annotations


class SipError(ValueError):
    """Root of the codec's errors; ``reason`` is a short stable label (metric, logs)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RemoteSipError(SipError):
    """The peer's fault: not a SIP response, or a response to another request. Reasons:
    ``too_large``, ``not_sip``, ``malformed``, ``call_id``, ``branch``, ``method``."""


class LocalSipError(SipError):
    """Our fault: a request field that would break the message (a line break or space in a
    host, a port out of range). Reason: ``bad_field``."""
