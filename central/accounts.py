"""Operator accounts at central: users with a role and a scope, login sessions,
and the failed-login throttle.

Roles are ordered ``viewer < operator < admin``. A scope is a division-code prefix: ``""`` is the
whole registry scope, ``"4501"`` a city, ``"450102"`` a county, and so on down to a village.

Storage: tables ``users`` and ``sessions`` in central's database (SQLite or PostgreSQL,
:mod:`central.db`) on a connection of this module's own: a user change or a login is committed
(durably: SQLite ``synchronous=FULL``, PostgreSQL's WAL flush) before it is answered. Passwords
are stored only as argon2id hashes (argon2-cffi, its RFC 9106 low-memory profile); session
tokens only as their SHA-256, so the database alone lets nobody log in. Writes are rare (logins,
user changes, a session's last-use time at most once per :data:`TOUCH_S`).
:class:`AccountStore` is not thread-safe: the API uses it from one thread; the CLI from its only
thread.

The throttle is in memory (pure, time passed in): a restart forgets recent failures, which only
gives an attacker :data:`MAX_FAILURES` more guesses per restart.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from typing import Any

from central import audit
from central.db import INTEGRITY_ERRORS, Target, open_db

#: A session's last-use time is written at most this often: idle expiry is exact to within this,
#: and a dashboard polling every few seconds does not turn into a write per request.
TOUCH_S = 60.0
#: Token entropy: 256 bits (the brief's requirement; far beyond guessing).
TOKEN_BYTES = 32
#: Password length bounds: 8 keeps the weakest out; 1024 bounds the hashing work per request.
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
#: Failed logins per user name and per client address within the window before 429.
MAX_FAILURES = 10
FAILURE_WINDOW_S = 300.0
#: Keys (user names, addresses) the throttle remembers: bounds memory under a spray of names.
MAX_THROTTLE_KEYS = 10_000

_NAME_RE = re.compile(r"^[\w.@-]{1,64}$")
_SCOPE_RE = re.compile(r"^(\d{2}|\d{4}|\d{6}|\d{9}|\d{12})?$")


class Role(IntEnum):
    """Ordered: a higher role may do everything a lower one may."""

    viewer = 1
    operator = 2
    admin = 3


ROLE_NAMES = tuple(r.name for r in Role)


class AccountError(Exception):
    """A user change the caller got wrong (zh and en in the message); ``code`` is stable."""

    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(f"{zh} / {en}")
        self.code = code
        self.zh, self.en = zh, en


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    scope: str
    disabled: bool
    created: float
    changed: float

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role.name,
            "scope": self.scope,
            "disabled": self.disabled,
            "created": self.created,
            "changed": self.changed,
        }


@dataclass(frozen=True, slots=True)
class Session:
    """A valid session and its user. ``expires_at``: the earlier of the absolute expiry and the
    idle expiry as of now."""

    token_sha256: str
    user: str
    role: Role
    scope: str
    expires_at: float
    absolute_expiry: float


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a token is: a session, or why not (``unknown`` | ``expired`` | ``disabled``)."""

    session: Session | None
    reason: str = ""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


@cache
def _hasher() -> Any:
    # Imported on first use: central's CLI commands that never hash need not load argon2.
    from argon2 import PasswordHasher

    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist: the answer takes as long as for a real
    user, so timing does not tell which names exist."""
    return str(_hasher().hash(secrets.token_hex(16)))


def hash_password(password: str) -> str:
    check_password(password)
    return str(_hasher().hash(password))


def verify_password(stored: str | None, password: str) -> bool:
    """argon2id verification (tens of ms: run off the event loop)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    if len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        ok = bool(_hasher().verify(stored or _dummy_hash(), password))
    except (VerificationError, InvalidHashError):
        return False
    return ok and stored is not None


def check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise AccountError(
            "bad_name",
            f"用户名无效：{name[:70]!r}（1 到 64 个字母、数字、汉字或 ._@-）",
            f"invalid user name {name[:70]!r} (1 to 64 letters, digits or ._@-)",
        )


def check_password(password: str) -> None:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise AccountError(
            "bad_password",
            f"密码长度应为 {MIN_PASSWORD_CHARS} 到 {MAX_PASSWORD_CHARS} 个字符",
            f"a password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters",
        )


def check_scope_code(scope: str) -> None:
    if not _SCOPE_RE.match(scope):
        raise AccountError(
            "bad_scope",
            f"范围应为区划代码（2/4/6/9/12 位）或空（全部）：{scope[:40]!r}",
            f"a scope is a division code (2/4/6/9/12 digits) or empty (all): {scope[:40]!r}",
        )


def parse_role(role: str) -> Role:
    try:
        return Role[role]
    except KeyError:
        raise AccountError(
            "bad_role",
            f"角色应为 {' / '.join(ROLE_NAMES)} 之一：{role[:40]!r}",
            f"role must be one of {', '.join(ROLE_NAMES)}: {role[:40]!r}",
        ) from None


def _user(row: tuple[Any, ...]) -> User:
    name, role, scope, disabled, created, changed = row
    return User(name, Role[role], scope, bool(disabled), created, changed)


class AccountStore:
    """Users, sessions and the audit log in central's database (one connection)."""

    def __init__(self, target: Target) -> None:
        self.db = open_db(target)

    def close(self) -> None:
        self.db.close()

    # -- users ------------------------------------------------------------------------------------

    def user_count(self) -> int:
        (n,) = self.db.fetchone("SELECT count(*) FROM users") or (0,)
        return int(n)

    def get(self, name: str) -> User | None:
        row = self.db.fetchone(
            "SELECT name, role, scope, disabled, created, changed FROM users WHERE name = ?",
            (name,),
        )
        return None if row is None else _user(row)

    def users(self) -> list[User]:
        rows = self.db.fetchall(
            "SELECT name, role, scope, disabled, created, changed FROM users ORDER BY name"
        )
        return [_user(r) for r in rows]

    def add(self, name: str, role: Role, scope: str, password: str, now: float) -> User:
        check_name(name)
        check_scope_code(scope)
        pw_hash = hash_password(password)
        try:
            self.db.execute(
                "INSERT INTO users(name, role, scope, password_hash, disabled, created, changed)"
                " VALUES (?, ?, ?, ?, 0, ?, ?)",
                (name, role.name, scope, pw_hash, now, now),
            )
        except INTEGRITY_ERRORS:
            raise AccountError(
                "user_exists", f"用户 {name} 已存在", f"user {name} already exists"
            ) from None
        user = self.get(name)
        assert user is not None
        return user

    def _require(self, name: str) -> User:
        user = self.get(name)
        if user is None:
            raise AccountError("unknown_user", f"没有用户 {name}", f"no user {name}")
        return user

    def set_password(self, name: str, password: str, now: float) -> None:
        """New password; the user's sessions end (whoever had the old one is logged out)."""
        self._require(name)
        pw_hash = hash_password(password)
        self._in_tx(
            (
                "UPDATE users SET password_hash = ?, changed = ? WHERE name = ?",
                (pw_hash, now, name),
            ),
            ('DELETE FROM sessions WHERE "user" = ?', (name,)),
        )

    def set_disabled(self, name: str, disabled: bool, now: float) -> None:
        """Disable (ending the user's sessions at once) or enable a user."""
        self._require(name)
        self._in_tx(
            (
                "UPDATE users SET disabled = ?, changed = ? WHERE name = ?",
                (int(disabled), now, name),
            ),
            ('DELETE FROM sessions WHERE "user" = ?', (name,)) if disabled else None,
        )

    def _in_tx(self, *stmts: tuple[str, tuple[Any, ...]] | None) -> None:
        with self.db.transaction(write=True):
            for s in stmts:
                if s is not None:
                    self.db.execute(*s)

    def password_hash(self, name: str) -> str | None:
        row = self.db.fetchone(
            "SELECT password_hash FROM users WHERE name = ? AND disabled = 0", (name,)
        )
        return None if row is None else str(row[0])

    def rehash(self, name: str, password: str) -> None:
        """Store a fresh hash when the hasher's parameters changed since the last one."""
        stored = self.password_hash(name)
        if stored is not None and _hasher().check_needs_rehash(stored):
            self.db.execute(
                "UPDATE users SET password_hash = ? WHERE name = ?", (hash_password(password), name)
            )

    # -- sessions ---------------------------------------------------------------------------------

    def create_session(
        self, name: str, address: str, now: float, max_s: float, idle_s: float
    ) -> tuple[str, Session]:
        """A new session for ``name``: (the token, to be given to the client once; the session)."""
        user = self._require(name)
        token = new_token()
        digest = token_hash(token)
        expires = now + max_s
        self.db.execute(
            'INSERT INTO sessions(token_sha256, "user", created, last_used, expires, address)'
            " VALUES (?, ?, ?, ?, ?, ?)",
            (digest, name, now, now, expires, address[:64]),
        )
        return token, Session(
            digest, name, user.role, user.scope, min(expires, now + idle_s), expires
        )

    def lookup(self, token: str, now: float, idle_s: float) -> Lookup:
        """The session of ``token`` if it is valid now; an expired one is deleted."""
        digest = token_hash(token)
        row = self.db.fetchone(
            'SELECT s."user", s.last_used, s.expires, u.role, u.scope, u.disabled'
            ' FROM sessions s JOIN users u ON u.name = s."user" WHERE s.token_sha256 = ?',
            (digest,),
        )
        if row is None:
            return Lookup(None, "unknown")
        user, last_used, expires, role, scope, disabled = row
        if disabled:
            return Lookup(None, "disabled")
        if now >= expires or now >= last_used + idle_s:
            self.db.execute("DELETE FROM sessions WHERE token_sha256 = ?", (digest,))
            return Lookup(None, "expired")
        if now - last_used >= TOUCH_S:
            self.db.execute(
                "UPDATE sessions SET last_used = ? WHERE token_sha256 = ?", (now, digest)
            )
            last_used = now
        return Lookup(
            Session(digest, user, Role[role], scope, min(expires, last_used + idle_s), expires)
        )

    def session_alive(self, token_sha256: str, now: float) -> bool:
        """The session still exists, has not reached its absolute expiry and its user is not
        disabled (read only: an open live stream does not count as activity)."""
        row = self.db.fetchone(
            'SELECT s.expires, u.disabled FROM sessions s JOIN users u ON u.name = s."user"'
            " WHERE s.token_sha256 = ?",
            (token_sha256,),
        )
        return row is not None and not row[1] and now < row[0]

    def end_session(self, token_sha256: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE token_sha256 = ?", (token_sha256,))

    def purge_sessions(self, now: float, idle_s: float) -> int:
        """Delete expired sessions (run on each login: the table stays the size of the live set)."""
        cur = self.db.execute(
            "DELETE FROM sessions WHERE expires <= ? OR last_used <= ?", (now, now - idle_s)
        )
        return int(cur.rowcount)

    # -- audit ------------------------------------------------------------------------------------

    def audit(self, entry: audit.Entry) -> None:
        audit.record(self.db, entry)


class Throttle:
    """Attempts per key (failed logins per ``user:NAME`` and ``addr:IP``, meeting prepares)
    in a sliding window. Pure."""

    def __init__(
        self,
        limit: int = MAX_FAILURES,
        window_s: float = FAILURE_WINDOW_S,
        max_keys: int = MAX_THROTTLE_KEYS,
    ) -> None:
        self.limit, self.window_s, self.max_keys = limit, window_s, max_keys
        self._fails: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        q = self._fails.get(key)
        if q is None:
            return None
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._fails[key]
            return None
        return q

    def retry_after(self, key: str, now: float, limit: int | None = None) -> float | None:
        """Seconds until ``key`` may try again, or None if it may now; ``limit`` (at most the
        throttle's own): a lower bound for this key."""
        n = self.limit if limit is None else min(limit, self.limit)
        q = self._recent(key, now)
        if q is None or len(q) < n:
            return None
        return q[-n] + self.window_s - now

    def failed(self, key: str, now: float) -> None:
        q = self._recent(key, now)
        if q is None:
            if len(self._fails) >= self.max_keys:
                self._evict(now)
            q = self._fails[key] = deque(maxlen=self.limit)
        q.append(now)

    def succeeded(self, key: str) -> None:
        self._fails.pop(key, None)

    def _evict(self, now: float) -> None:
        for key in list(self._fails):
            self._recent(key, now)
        while len(self._fails) >= self.max_keys:  # still full: forget the oldest keys
            del self._fails[next(iter(self._fails))]


def record_local(db: Target, action: str, target: str, outcome: str, **detail: Any) -> None:
    """An audit row for a command run on central's box (``shilian central user …``,
    ``shilian provision token create`` …)."""
    store = AccountStore(db)
    try:
        store.audit(
            audit.Entry(
                time.time(),
                f"cli:{audit.local_login()}",
                None,
                "local",
                action,
                target,
                outcome,
                detail,
            )
        )
    finally:
        store.close()
