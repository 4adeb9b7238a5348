"""ONVIF WS-Discovery (SOAP-over-UDP, WS-Discovery 2005/04 as ONVIF Core §7.3 uses it), sans-I/O:
build a Probe for ``dn:NetworkVideoTransmitter``, parse ProbeMatches into :class:`Camera` values.

Replies are untrusted LAN input: a size cap before parsing, any parse problem is a
:class:`ReplyError` (the caller counts it and keeps listening), never an exception of its own.
"""

from __future__ import annotations

import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

#: Multicast group and port of WS-Discovery (SOAP-over-UDP §3.1).
MULTICAST_ADDR = "239.255.255.250"
PORT = 3702
#: Largest reply parsed: a ProbeMatches with a few XAddrs and scopes is 1–4 KiB; UDP caps at 64 KiB.
MAX_REPLY_BYTES = 65507

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "d": "http://schemas.xmlsoap.org/ws/2005/04/discovery",
    "dn": "http://www.onvif.org/ver10/network/wsdl",
}
PROBE_ACTION = "http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe"
MATCHES_ACTION = "http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches"
DISCOVERY_TO = "urn:schemas-xmlsoap-org:ws:2005:04:discovery"
#: ONVIF scope prefix (ONVIF Core §7.3.2.2): onvif://www.onvif.org/<category>/<value>.
ONVIF_SCOPE = "onvif://www.onvif.org/"


class ReplyError(ValueError):
    """A datagram that is not a usable ProbeMatches for our probe (the peer's fault)."""


@dataclass(frozen=True)
class Camera:
    """One ProbeMatch: the device's stable endpoint id, its service URLs and what its scopes
    say (name, hardware, location are URL-decoded)."""

    endpoint: str
    xaddrs: tuple[str, ...]
    types: tuple[str, ...]
    scopes: tuple[str, ...]
    name: str | None = None
    hardware: str | None = None
    location: str | None = None
    source: str | None = None  # IP the reply came from
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, object]:
        return {
            "endpoint": self.endpoint,
            "xaddrs": list(self.xaddrs),
            "types": list(self.types),
            "scopes": list(self.scopes),
            "name": self.name,
            "hardware": self.hardware,
            "location": self.location,
            "source": self.source,
        }


def new_message_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def probe(message_id: str, types: str = "dn:NetworkVideoTransmitter") -> bytes:
    """The Probe datagram (SOAP 1.2 envelope)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:d="{NS["d"]}" '
        f'xmlns:dn="{NS["dn"]}">'
        "<s:Header>"
        f"<a:MessageID>{message_id}</a:MessageID>"
        f'<a:To s:mustUnderstand="1">{DISCOVERY_TO}</a:To>'
        f'<a:Action s:mustUnderstand="1">{PROBE_ACTION}</a:Action>'
        "</s:Header>"
        f"<s:Body><d:Probe><d:Types>{types}</d:Types></d:Probe></s:Body>"
        "</s:Envelope>"
    ).encode()


def _scope_values(scopes: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in scopes:
        if s.startswith(ONVIF_SCOPE):
            category, _, value = s[len(ONVIF_SCOPE) :].partition("/")
            if value and category not in out:
                out[category] = urllib.parse.unquote(value)
    return out


def parse_probe_matches(data: bytes, message_id: str, source: str | None = None) -> list[Camera]:
    """The cameras in a ProbeMatches answering ``message_id``; :class:`ReplyError` otherwise."""
    if len(data) > MAX_REPLY_BYTES:
        raise ReplyError(f"reply over {MAX_REPLY_BYTES} bytes")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ReplyError("DTDs are not allowed in SOAP (SOAP 1.2 §5)")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise ReplyError(f"not XML: {e}") from None
    if root.tag != f"{{{NS['s']}}}Envelope":
        raise ReplyError("not a SOAP 1.2 envelope")
    action = (root.findtext("s:Header/a:Action", "", NS) or "").strip()
    if action != MATCHES_ACTION:
        raise ReplyError(f"not ProbeMatches: {action or 'no action'}")
    relates = (root.findtext("s:Header/a:RelatesTo", "", NS) or "").strip()
    if relates != message_id:
        raise ReplyError("answers another probe")
    cameras = []
    for m in root.iterfind("s:Body/d:ProbeMatches/d:ProbeMatch", NS):
        endpoint = (m.findtext("a:EndpointReference/a:Address", "", NS) or "").strip()
        if not endpoint:
            raise ReplyError("ProbeMatch without an endpoint address")
        types = tuple((m.findtext("d:Types", "", NS) or "").split())
        scopes = tuple((m.findtext("d:Scopes", "", NS) or "").split())
        xaddrs = tuple((m.findtext("d:XAddrs", "", NS) or "").split())
        values = _scope_values(scopes)
        cameras.append(
            Camera(
                endpoint,
                xaddrs,
                types,
                scopes,
                name=values.get("name"),
                hardware=values.get("hardware"),
                location=values.get("location"),
                source=source,
            )
        )
    return cameras
