"""Server-side sessions in the Store, looked up by a hash of the random id the sealed cookie carries.

A fresh 256-bit id at every sign-in (no fixation). The store key is ``<hash(sub)>.<hash(id)>``:
the raw id never leaves the cookie, and all sessions of one user share a prefix, so a
back-channel logout by ``sub`` is one prefix scan. Provider tokens are sealed at rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from typing import Any

from rolegate.identity.authenticator import PENDING, Pending
from rolegate.identity.principal import Principal
from rolegate.identity.revocation_watch import RevocationWatch
from rolegate.identity.sealed_cookie import CookieSealer
from rolegate.limits import SESSIONS
from rolegate.memo import BoundedCache
from rolegate.store import Store

log = logging.getLogger("rolegate.identity.sessions")

NAMESPACE = "sessions"
# A session's last-seen time is written back at most this often (per session, per worker).
_TOUCH_EVERY = 60.0


def _digest(label: str, value: str) -> str:
    return hashlib.sha256(f"{label}\x00{value}".encode()).hexdigest()


def subject_tag(sub: str) -> str:
    return _digest("sub", sub)[:24]


def session_key(sub_tag: str, session_id: str) -> str:
    return f"{sub_tag}.{_digest('sid', session_id)}"


class Session:
    """One signed-in browser: the stored document, its version and the Principal it yields."""

    __slots__ = ("key", "data", "version", "principal", "seen_written")

    def __init__(self, key: str, data: dict[str, Any], version: int) -> None:
        self.key = key
        self.data = data
        self.version = version
        self.seen_written = float(data.get("seen", 0))
        self.principal = Principal(
            username=data["username"],
            name=data.get("name", ""),
            email=data.get("email", ""),
            groups=frozenset(data.get("groups", ())),
            session_id=key.rsplit(".", 1)[-1][:32],
            auth="session",
            expires_at=float(data["expires"]),
            idp_sid=data.get("idp_sid"),
            subject=data.get("sub", ""),
        )

    def alive(self, now: float, idle_timeout: float) -> bool:
        return now < float(self.data["expires"]) and now < float(self.data.get("seen", 0)) + idle_timeout


class SessionStore:
    """Create, find, refresh and end sessions; a per-worker cache is kept honest by RevocationWatch."""

    __slots__ = (
        "store",
        "watch",
        "lifetime",
        "idle_timeout",
        "_token_sealer",
        "_cache",
        "_cache_version",
        "locks",
        "_keys",
    )

    def __init__(
        self, store: Store, watch: RevocationWatch, *, secret: str, lifetime: float, idle_timeout: float
    ) -> None:
        self.store = store
        self.watch = watch
        self.lifetime = lifetime
        self.idle_timeout = idle_timeout
        self._token_sealer = CookieSealer(secret, "session-tokens")
        self._cache: BoundedCache[str, Session] = BoundedCache(SESSIONS)
        self._cache_version = -2
        # One refresh at a time per session in this worker.
        self.locks: dict[str, asyncio.Lock] = {}
        # (subject tag, session id) -> store key: two SHA-256 per request otherwise.
        self._keys: BoundedCache[tuple[str, str], str] = BoundedCache(SESSIONS)

    # -- creation ---------------------------------------------------------------------------
    async def create(
        self, *, claims: dict[str, Any], principal: Principal, tokens: dict[str, Any], issuer: str
    ) -> tuple[str, str, Session]:
        """Store a new session; returns (raw session id, subject tag, session) for the cookie."""
        now = time.time()
        session_id = secrets.token_urlsafe(32)
        tag = subject_tag(principal.subject)
        key = session_key(tag, session_id)
        data: dict[str, Any] = {
            "sub": principal.subject,
            "username": principal.username,
            "name": principal.name,
            "email": principal.email,
            "groups": sorted(principal.groups),
            "idp_sid": principal.idp_sid,
            "iss": issuer,
            "created": now,
            "seen": now,
            "expires": now + self.lifetime,
        }
        self._put_tokens(data, key, tokens, now)
        version = await self.store.put(NAMESPACE, key, data, expected_version=0, expires_at=self._expiry(data, now))
        session = Session(key, data, version)
        return session_id, tag, session

    def _put_tokens(self, data: dict[str, Any], key: str, tokens: dict[str, Any], now: float) -> None:
        refresh = tokens.get("refresh_token")
        if isinstance(refresh, str) and refresh:
            data["rt"] = self._token_sealer.seal_text(refresh, name=key)
        id_token = tokens.get("id_token")
        if isinstance(id_token, str) and id_token:
            data["idt"] = self._token_sealer.seal_text(id_token, name=key)
        expires_in = tokens.get("expires_in")
        data["tok_exp"] = now + (float(expires_in) if isinstance(expires_in, (int, float)) else 300.0)

    def refresh_token(self, session: Session) -> str | None:
        return self._token_sealer.unseal_text(session.data.get("rt"), name=session.key)

    def id_token(self, session: Session) -> str | None:
        return self._token_sealer.unseal_text(session.data.get("idt"), name=session.key)

    def _expiry(self, data: dict[str, Any], now: float) -> float:
        return min(float(data["expires"]), now + self.idle_timeout)

    # -- lookup -----------------------------------------------------------------------------
    async def find(self, sub_tag: str, session_id: str) -> Session | None:
        """The live session for a cookie's (subject tag, id), or None."""
        keys = self._keys
        key = keys.get((sub_tag, session_id))
        if key is None:
            key = keys.put((sub_tag, session_id), session_key(sub_tag, session_id))
        version = await self.watch.current()
        if version != self._cache_version or version < 0:
            self._cache.clear()
            self._cache_version = version
        now = time.time()
        session = self._cache.get(key)
        if session is None:
            record = await self.store.get(NAMESPACE, key)
            if record is None or not isinstance(record.value, dict):
                return None
            session = Session(key, record.value, record.version)
            if version >= 0:
                self._cache.put(key, session)
        if not session.alive(now, self.idle_timeout):
            self._cache.pop(key, None)
            return None
        await self._touch(session, now)
        return session

    async def find_for(self, principal: Principal) -> Session | None:
        """The live session a session Principal came from, read from the Store and touched like a
        request's; None once it ended (signed out, revoked, expired, idle). Token families started from
        a browser session ask this at every refresh: they live only as long as the session.

        The Principal's ``session_id`` is the head of the key's id hash (see Session), so the key is
        found by prefix without the raw id, which only the cookie holds.
        """
        sid = principal.session_id
        if principal.auth != "session" or len(sid) != 32 or not all(c in "0123456789abcdef" for c in sid):
            return None
        records = await self.store.list(NAMESPACE, f"{subject_tag(principal.subject)}.{sid}")
        if len(records) != 1 or not isinstance(records[0].value, dict):
            return None
        session = Session(records[0].key, records[0].value, records[0].version)
        now = time.time()
        if session.principal.username != principal.username or not session.alive(now, self.idle_timeout):
            return None
        await self._touch(session, now)
        return session

    def find_now(self, sub_tag: str, session_id: str, now: float) -> Session | Pending | None:
        """``find``'s answer when memory holds it (cached, alive, nothing to write back), else PENDING."""
        key = self._keys.get((sub_tag, session_id))
        if key is None:
            return PENDING
        version = self.watch.current_now()
        if version is None or version < 0 or version != self._cache_version:
            return PENDING
        session = self._cache.get(key)
        if session is None or not session.alive(now, self.idle_timeout) or self._touch_due(session, now):
            return PENDING
        session.data["seen"] = now
        return session

    def is_current(self, session: Session) -> bool:
        """True while ``session`` is still what ``find`` would return from memory (no revocation since)."""
        version = self.watch.current_now()
        return (
            version is not None
            and version >= 0
            and version == self._cache_version
            and self._cache.get(session.key) is session
        )

    def touch_at(self, session: Session) -> float:
        """When ``session``'s last-seen time is next written back to the Store."""
        return session.seen_written + min(_TOUCH_EVERY, self.idle_timeout / 4)

    def _touch_due(self, session: Session, now: float) -> bool:
        return now >= self.touch_at(session)

    async def _touch(self, session: Session, now: float) -> None:
        session.data["seen"] = now
        if not self._touch_due(session, now):
            return
        session.seen_written = now
        record = await self.store.get(NAMESPACE, session.key)
        if record is None:  # ended meanwhile
            self._cache.pop(session.key, None)
            return
        data = dict(record.value)
        data["seen"] = max(float(data.get("seen", 0)), now)
        try:
            session.version = await self.store.put(
                NAMESPACE, session.key, data, expected_version=record.version, expires_at=self._expiry(data, now)
            )
        except Exception as exc:  # a concurrent write (refresh, other worker) is fine: it also is "seen"
            log.debug("touch of session %s skipped: %s", session.principal.session_id, type(exc).__name__)

    async def replace_tokens(
        self, session: Session, *, tokens: dict[str, Any], claims: dict[str, Any] | None, principal: Principal | None
    ) -> Session | None:
        """Write refreshed provider tokens (and refreshed identity claims); None when the session is gone."""
        record = await self.store.get(NAMESPACE, session.key)
        if record is None:
            return None
        now = time.time()
        data = dict(record.value)
        self._put_tokens(data, session.key, tokens, now)
        if "refresh_token" not in tokens:
            data["rt"] = record.value.get("rt")
        if principal is not None:
            data.update(
                username=principal.username, name=principal.name, email=principal.email, groups=sorted(principal.groups)
            )
        data["seen"] = max(float(data.get("seen", 0)), now)
        version = await self.store.put(
            NAMESPACE, session.key, data, expected_version=record.version, expires_at=self._expiry(data, now)
        )
        fresh = Session(session.key, data, version)
        self._cache[session.key] = fresh
        return fresh

    # -- ending -----------------------------------------------------------------------------
    async def end(self, key: str) -> bool:
        removed = await self.store.delete(NAMESPACE, key)
        self._cache.pop(key, None)
        await self.watch.bump()
        return removed

    async def end_matching(self, *, sub: str | None, idp_sid: str | None, issuer: str) -> int:
        """End every session of ``sub`` (optionally only the one with provider session ``idp_sid``)."""
        prefix = subject_tag(sub) + "." if sub else ""
        ended = 0
        for record in await self.store.list(NAMESPACE, prefix):
            data = record.value if isinstance(record.value, dict) else {}
            if data.get("iss") != issuer:
                continue
            if sub is not None and data.get("sub") != sub:
                continue
            if idp_sid is not None and data.get("idp_sid") != idp_sid:
                continue
            if await self.store.delete(NAMESPACE, record.key):
                ended += 1
            self._cache.pop(record.key, None)
        await self.watch.bump()
        return ended
