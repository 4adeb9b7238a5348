"""HTTP Digest access authentication (RFC 7616, which obsoletes RFC 2617) for RTSP, pure.

Cameras answer ``401`` with ``WWW-Authenticate: Digest realm=..., nonce=...`` (some also offer
``Basic``). :func:`parse_challenges` reads the header values into :class:`Challenge`s,
:func:`authorization` computes the ``Authorization`` header for one request. MD5 and SHA-256
(and their ``-sess`` variants) with ``qop=auth`` or without qop (RFC 2069 style, still common on
cameras); ``auth-int`` is not offered by RTSP cameras and is refused as unsupported.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

#: Longest challenge header we read: real ones are ~200 bytes; a longer one is a broken peer.
MAX_CHALLENGE_CHARS = 4096
_HASHES = {"MD5": "md5", "SHA-256": "sha256"}


class AuthError(ValueError):
    """The peer's challenge cannot be answered (malformed or an unsupported algorithm)."""


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "digest" or "basic" (lower case)
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def _split_params(text: str) -> tuple[dict[str, str], str]:
    """``k=v, k="v, w"`` pairs from the start of ``text``; returns them and what follows the
    first token that is not a pair (the next challenge's scheme)."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        start = i
        while i < n and text[i] not in "= \t,":
            i += 1
        key = text[start:i]
        j = i
        while j < n and text[j] in " \t":
            j += 1
        if not key or j >= n or text[j] != "=":
            return params, text[start:]  # a bare token: the next scheme
        i = j + 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            buf = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(text[i])
                i += 1
            if i >= n:
                raise AuthError("unterminated quoted string in challenge")
            i += 1
            value = "".join(buf)
        else:
            start = i
            while i < n and text[i] not in " \t,":
                i += 1
            value = text[start:i]
        params[key.lower()] = value
    return params, ""


def parse_challenges(values: list[str]) -> list[Challenge]:
    """All challenges of the ``WWW-Authenticate`` header values, in order (schemes other than
    Digest and Basic are skipped)."""
    out: list[Challenge] = []
    for raw in values:
        if len(raw) > MAX_CHALLENGE_CHARS:
            raise AuthError("challenge too long")
        rest = raw.strip()
        while rest:
            scheme, _, tail = rest.partition(" ")
            params, rest = _split_params(tail)
            rest = rest.strip()
            s = scheme.strip().lower()
            if s in ("digest", "basic"):
                out.append(Challenge(s, params))
    return out


def _h(algorithm: str, data: str) -> str:
    return hashlib.new(_HASHES[algorithm], data.encode("utf-8")).hexdigest()


def _quote(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def digest_response(
    ch: Challenge,
    username: str,
    password: str,
    method: str,
    uri: str,
    *,
    nc: int = 1,
    cnonce: str = "",
) -> tuple[str, str | None]:
    """``(response, qop)`` per RFC 7616 section 3.4.1 (qop ``None``: RFC 2069 form)."""
    p = ch.params
    if "nonce" not in p:
        raise AuthError("digest challenge without a nonce")
    alg = p.get("algorithm", "MD5").upper()
    sess = alg.endswith("-SESS")
    base = alg[:-5] if sess else alg
    if base not in _HASHES:
        raise AuthError(f"unsupported digest algorithm {alg}")
    qops = [q.strip() for q in p.get("qop", "").split(",") if q.strip()]
    if qops and "auth" not in qops:
        raise AuthError(f"unsupported qop {p['qop']}")
    qop = "auth" if qops else None
    nonce, realm = p["nonce"], p.get("realm", "")
    ha1 = _h(base, f"{username}:{realm}:{password}")
    if sess:
        ha1 = _h(base, f"{ha1}:{nonce}:{cnonce}")
    ha2 = _h(base, f"{method}:{uri}")
    if qop is None:
        return _h(base, f"{ha1}:{nonce}:{ha2}"), None
    return _h(base, f"{ha1}:{nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}"), qop


def authorization(
    ch: Challenge,
    username: str,
    password: str,
    method: str,
    uri: str,
    *,
    nc: int = 1,
    cnonce: str = "",
) -> str:
    """The ``Authorization`` header value answering ``ch`` for one request."""
    if ch.scheme == "basic":
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        return f"Basic {token}"
    response, qop = digest_response(ch, username, password, method, uri, nc=nc, cnonce=cnonce)
    p = ch.params
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(p.get('realm', ''))}",
        f"nonce={_quote(p['nonce'])}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
    ]
    if "algorithm" in p:
        parts.append(f"algorithm={p['algorithm']}")
    if "opaque" in p:
        parts.append(f"opaque={_quote(p['opaque'])}")
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc:08x}", f"cnonce={_quote(cnonce)}"]
    return "Digest " + ", ".join(parts)


def best(challenges: list[Challenge]) -> Challenge | None:
    """The challenge to answer: Digest SHA-256, then Digest MD5, then Basic (RFC 7616 3.7:
    the client uses the strongest it supports)."""

    def rank(c: Challenge) -> int:
        if c.scheme == "basic":
            return 0
        alg = c.params.get("algorithm", "MD5").upper().removesuffix("-SESS")
        return {"MD5": 1, "SHA-256": 2}.get(alg, -1)

    usable = [c for c in challenges if rank(c) >= 0]
    return max(usable, key=rank) if usable else None
