"""Typed wire errors. Whose fault it is decides what happens: a remote fault is counted and
logged (rate-limited) and the receiver keeps running; a local fault is a bug in our code."""

from __future__ import annotations

from enum import StrEnum


class Fault(StrEnum):
    """Why a message was refused. The value is the ``reason`` label of the metrics."""

    OVERSIZE = "oversize"
    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    UNKNOWN_VERSION = "unknown_version"
    BAD_TOPIC = "bad_topic"
    IDENTITY_MISMATCH = "identity_mismatch"
    UNKNOWN_VILLAGE = "unknown_village"


class WireError(Exception):
    """Root of the contract's errors."""

    def __init__(self, fault: Fault, detail: str) -> None:
        super().__init__(f"{fault.value}: {detail}")
        self.fault = fault
        self.detail = detail


class RemoteWireError(WireError):
    """The peer sent something the contract does not allow."""


class LocalWireError(WireError):
    """We tried to send something the contract does not allow (a bug on our side)."""
