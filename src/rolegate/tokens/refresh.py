"""Refresh-token families (OAuth 2.0 Security BCP §4.14): rotate on every use, detect reuse.

A sign-in (session exchange or day pass) starts a family; each refresh replaces the family's one
live refresh token with a new one. Presenting a token the family already rotated away means two
parties hold it (one of them stole it), so the whole family is revoked. The Store keeps only
SHA-256 hashes of refresh tokens, never the tokens; the family also keeps the caller's identity
snapshot that bearer requests authenticate as.

Token format: ``rt1.<family>.<secret>`` where ``family`` = ``<hash of the user>-<random>`` (so all
families of one user share a key prefix) and ``secret`` is 256 random bits.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rolegate.store import Store, VersionConflict

NAMESPACE = "token_families"
_PREFIX = "rt1"
# Rotated-away hashes kept per family for reuse detection (12h of 5-minute refreshes is 144).
_MAX_USED = 512


class InvalidGrant(Exception):
    """The refresh token is unknown, expired, revoked or reused; ``reused`` says which case."""

    def __init__(self, detail: str, *, reused: bool = False, family: str | None = None) -> None:
        super().__init__(detail)
        self.reused = reused
        self.family = family


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def subject_tag(username: str) -> str:
    return hashlib.sha256(f"rolegate-user\x00{username}".encode()).hexdigest()[:20]


def parse(token: str) -> str | None:
    """The family named by a refresh token, or None when it is not one of ours."""
    if not isinstance(token, str) or len(token) > 256:
        return None
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1]


class Family:
    """One family as read from the Store."""

    __slots__ = ("key", "data", "version")

    def __init__(self, key: str, data: dict[str, Any], version: int) -> None:
        self.key = key
        self.data = data
        self.version = version

    @property
    def expires(self) -> float:
        return float(self.data["expires"])


class RefreshFamilies:
    """Create, rotate and revoke refresh-token families in the Store."""

    __slots__ = ("store", "lifetime", "_clock")

    def __init__(self, store: Store, *, lifetime: float, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.lifetime = float(lifetime)
        self._clock = clock

    def _new_token(self, family: str) -> str:
        return f"{_PREFIX}.{family}.{secrets.token_urlsafe(32)}"

    async def start(self, identity: dict[str, Any], *, not_after: float | None = None) -> tuple[Family, str]:
        """A new family for ``identity`` (a JSON-able snapshot with ``username``); (family, refresh token)."""
        now = self._clock()
        expires = now + self.lifetime
        if not_after is not None:
            expires = min(expires, not_after)
        key = f"{subject_tag(identity['username'])}-{secrets.token_urlsafe(16)}"
        token = self._new_token(key)
        data = {
            "identity": identity,
            "created": now,
            "expires": expires,
            "current": _hash(token),
            "used": [],
            "revoked": False,
        }
        version = await self.store.put(NAMESPACE, key, data, expected_version=0, expires_at=expires)
        return Family(key, data, version), token

    async def get(self, key: str) -> Family | None:
        record = await self.store.get(NAMESPACE, key)
        if record is None:
            return None
        return Family(key, record.value, record.version)

    async def rotate(
        self, token: str, *, check: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None
    ) -> tuple[Family, str]:
        """Exchange a live refresh token for its successor; InvalidGrant otherwise (reuse revokes the family).

        ``check`` is called with the family's identity once the token proved to be the live one, before
        anything is written; it answers the identity to keep (re-read), or raises to refuse: then the
        token is not rotated, so an outage behind ``check`` costs the client a retry, not its family.
        """
        key = parse(token)
        if key is None:
            raise InvalidGrant("not a rolegate refresh token")
        presented = _hash(token)
        for _attempt in range(3):
            family = await self.get(key)
            now = self._clock()
            if family is None or now >= family.expires:
                raise InvalidGrant("refresh token expired or unknown")
            data = family.data
            if data.get("revoked"):
                raise InvalidGrant("refresh token family revoked", family=key)
            if not hmac.compare_digest(presented, data["current"]):
                # Compare with every rotated hash (no early exit: timing says nothing about which).
                reused = False
                for old in data.get("used", ()):
                    reused |= hmac.compare_digest(presented, old)
                if reused:
                    await self.revoke(key)
                    raise InvalidGrant("refresh token reused; family revoked", reused=True, family=key)
                raise InvalidGrant("refresh token not recognised")
            identity = await check(data["identity"]) if check is not None else data["identity"]
            successor = self._new_token(key)
            updated = dict(data)
            updated["used"] = [*data.get("used", ()), data["current"]][-_MAX_USED:]
            updated["current"] = _hash(successor)
            updated["identity"] = identity
            try:
                version = await self.store.put(
                    NAMESPACE, key, updated, expected_version=family.version, expires_at=family.expires
                )
            except VersionConflict:
                continue  # someone rotated concurrently: re-read; our token is now a reused one
            return Family(key, updated, version), successor
        raise InvalidGrant("refresh token contended")

    async def revoke(self, key: str) -> Family | None:
        """Mark a family revoked (idempotent); the family as it was, or None when unknown."""
        for _attempt in range(5):
            family = await self.get(key)
            if family is None:
                return None
            if family.data.get("revoked"):
                return family
            updated = {**family.data, "revoked": True}
            try:
                await self.store.put(
                    NAMESPACE, key, updated, expected_version=family.version, expires_at=family.expires
                )
                return family
            except VersionConflict:
                continue
        raise RuntimeError(f"could not revoke token family {key}")

    async def families_of(self, username: str) -> list[Family]:
        prefix = subject_tag(username) + "-"
        return [Family(r.key, r.value, r.version) for r in await self.store.list(NAMESPACE, prefix)]
