"""One-time enrolment tokens, so that a technician enrols a box without ever holding the CA key.

A token is bound to one node id, or to a village code (then any node id of that village may use
it), and expires. Only its SHA-256 is stored (table ``enrol_tokens`` in central's database,
SQLite or PostgreSQL through :mod:`central.db`): a copy of the database does not let anyone
enrol. Redeeming is one write transaction (writers take turns on both backends), so two
concurrent uses of one token cannot both succeed; a use survives a power cut once committed.

Errors are :class:`TokenError` with the HTTP status the enrol endpoint answers: 401 unknown or
malformed token, 409 already used, 410 expired or revoked, 400 the token is for another node /
village. An administrator lists tokens by their id (the first hex digits of the hash: enough to
name one, useless to enrol with) and revokes an unused one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from central.db import Db
from wire import valid_node_id

#: Random bytes per token: 256 bits, unguessable even with the 401 answer as an oracle.
TOKEN_BYTES = 32
#: Longest lifetime a token may have: a token is for one visit, not a standing credential.
MAX_TTL_S = 30 * 24 * 3600.0
#: Shortest lifetime: a token must outlast the drive to the village; anything shorter is a typo
#: (``--ttl 1`` meaning one second).
MIN_TTL_S = 10 * 60.0
#: Hex digits of the hash shown as a token's id in lists and used to revoke it.
TOKEN_ID_LEN = 10
#: Longest token string looked at (urlsafe base64 of 32 bytes is 43 characters).
MAX_TOKEN_LEN = 128
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_TTL_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenError(Exception):
    """A token that cannot be used: ``status`` (HTTP), ``code``, a zh-CN / English message."""

    def __init__(self, status: int, code: str, zh: str, en: str) -> None:
        super().__init__(f"{zh} / {en}")
        self.status = status
        self.code = code
        self.zh = zh
        self.en = en


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """One token as an administrator sees it (never the token itself)."""

    token_id: str
    target: str
    created_at: float
    expires_at: float
    used_at: float | None
    used_by: str | None
    revoked_at: float | None

    def status(self, now: float) -> str:
        """``used``, ``revoked``, ``expired`` or ``unused``."""
        if self.used_at is not None:
            return "used"
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "unused"


@dataclass(frozen=True, slots=True)
class Redeemed:
    target: str
    node_id: str


def parse_ttl(text: str) -> float:
    """``"24h"``, ``"30m"``, ``"7d"`` or ``"900s"`` → seconds, from 10 minutes to 30 days. A
    number without a unit is refused: ``1`` is more likely "one day" than one second."""
    m = _TTL_RE.match(text.strip())
    seconds = float(m.group(1)) * _TTL_UNITS[m.group(2)] if m else 0.0
    if not MIN_TTL_S <= seconds <= MAX_TTL_S:
        raise ValueError(
            f"有效期应为带单位的时长（如 24h、30m、7d），10 分钟到 30 天：{text[:40]!r} / "
            f"TTL must have a unit (24h, 30m, 7d) and be from 10 minutes to 30 days: "
            f"{text[:40]!r}"
        )
    return seconds


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", errors="replace")).hexdigest()


def _valid_target(target: str) -> bool:
    return valid_node_id(target) or (len(target) == 12 and target.isdigit())


class TokenStore:
    """Tokens in ``db`` (central's database, opened with :func:`central.db.open_db`, which
    brings its schema up to date). ``clock`` gives Unix seconds."""

    def __init__(self, db: Db, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def create(self, target: str, ttl_s: float) -> str:
        """A new token for ``target`` (node id or 12-digit village code); only its hash is kept."""
        if not _valid_target(target):
            raise ValueError(
                f"应为节点编号或 12 位村代码：{target[:60]!r} / "
                f"expected a node id or a 12-digit village code: {target[:60]!r}"
            )
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ValueError("有效期应在 30 天以内 / TTL must be within 30 days")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self.clock()
        with self.db.transaction(write=True):
            self.db.execute(
                "INSERT INTO enrol_tokens(token_sha256, target, created_at, expires_at) "
                "VALUES (?, ?, ?, ?)",
                (token_hash(token), target, now, now + ttl_s),
            )
        return token

    def tokens(self) -> list[TokenInfo]:
        """Every token, newest first."""
        rows = self.db.fetchall(
            "SELECT substr(token_sha256, 1, ?), target, created_at, expires_at, used_at, "
            "used_by, revoked_at FROM enrol_tokens ORDER BY created_at DESC",
            (TOKEN_ID_LEN,),
        )
        return [TokenInfo(*row) for row in rows]

    def revoke(self, token_id: str) -> TokenInfo:
        """Revoke the unused token whose id (hash prefix, :data:`TOKEN_ID_LEN` hex digits) is
        ``token_id``. ValueError (zh / en) when there is none, or it was used already."""
        if len(token_id) != TOKEN_ID_LEN or not all(c in "0123456789abcdef" for c in token_id):
            raise ValueError(
                f"令牌编号应为 {TOKEN_ID_LEN} 位十六进制（见 token list）/ "
                f"a token id is {TOKEN_ID_LEN} hex digits (see token list)"
            )
        with self.db.transaction(write=True):
            found = [t for t in self.tokens() if t.token_id == token_id]
            if not found:
                raise ValueError(f"没有编号为 {token_id} 的令牌 / no token with id {token_id}")
            t = found[0]
            if t.used_at is not None:
                raise ValueError(
                    f"令牌 {token_id} 已被 {t.used_by} 使用，无法吊销；"
                    "如需停用该节点请吊销其证书 / "
                    f"token {token_id} was used by {t.used_by}; "
                    "revoke the node's certificate instead"
                )
            self.db.execute(
                "UPDATE enrol_tokens SET revoked_at = ? WHERE substr(token_sha256, 1, ?) = ? "
                "AND used_at IS NULL AND revoked_at IS NULL",
                (self.clock(), TOKEN_ID_LEN, token_id),
            )
        return next(t for t in self.tokens() if t.token_id == token_id)

    def redeem(self, token: str, node_id: str) -> Redeemed:
        """Use ``token`` for ``node_id``, once. Raises :class:`TokenError`; a refused attempt
        does not consume the token."""
        if not isinstance(token, str) or not _TOKEN_RE.match(token):
            raise TokenError(
                401,
                "token_invalid",
                "入网令牌格式错误，请核对后重新输入",
                "malformed enrolment token; check it and type it again",
            )
        now = self.clock()
        h = token_hash(token)
        db = self.db
        with db.transaction(write=True):  # one writer at a time: a token is used at most once
            row = db.fetchone(
                "SELECT target, expires_at, used_at, used_by, revoked_at FROM enrol_tokens "
                "WHERE token_sha256 = ?",
                (h,),
            )
            if row is None:
                raise TokenError(
                    401,
                    "token_unknown",
                    "入网令牌无效（中心没有这个令牌），请向管理员重新申请",
                    "unknown enrolment token; ask the administrator for a new one",
                )
            target, expires_at, used_at, used_by, revoked_at = row
            if revoked_at is not None and used_at is None:
                raise TokenError(
                    410,
                    "token_revoked",
                    "入网令牌已被管理员吊销，请向管理员申请新令牌",
                    "this enrolment token was revoked by the administrator; ask for a new one",
                )
            if used_at is not None:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(used_at))
                raise TokenError(
                    409,
                    "token_used",
                    f"入网令牌已于 {when} 被节点 {used_by} 使用过，每个令牌只能用一次；"
                    "请向管理员申请新令牌",
                    f"this enrolment token was already used at {when} by node {used_by}; "
                    "a token works once: ask the administrator for a new one",
                )
            if now >= expires_at:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expires_at))
                raise TokenError(
                    410,
                    "token_expired",
                    f"入网令牌已于 {when} 过期，请向管理员申请新令牌",
                    f"this enrolment token expired at {when}; ask the administrator for a new one",
                )
            if node_id != target and node_id[:12] != target:
                raise TokenError(
                    400,
                    "token_other_node",
                    f"此令牌签发给 {target}，不能用于节点 {node_id[:60]}",
                    f"this token is for {target}, not for node {node_id[:60]}",
                )
            db.execute(
                "UPDATE enrol_tokens SET used_at = ?, used_by = ? WHERE token_sha256 = ?",
                (now, node_id, h),
            )
        return Redeemed(target, node_id)
