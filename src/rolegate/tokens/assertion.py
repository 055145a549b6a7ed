"""The upstream assertion: a short-lived JWT telling a backend who is calling and what they may do.

Minting costs a signature, so assertions are cached per (session, scope, permission version,
audience) and reused until a third of their lifetime is left. A cache hit is checked against the
permissions and roles it was minted with, so a caller whose grants changed without a version bump
(e.g. a directory sync) never gets a stale assertion. Groups are never put in the token: a user in
hundreds of groups still gets a header of a few KiB: perms grouped by resource, and roles, only.
On a route without a scope the assertion also carries ``where`` (``rolegate.authz.where``): where the
caller holds the route's permission, so a backend can filter a list; it is part of the cache key.
"""

from __future__ import annotations

import base64
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from rolegate.tokens.keys import KeyRing

ASSERTION_HEADER = "X-Rolegate-Assertion"
USER_HEADER = "X-Rolegate-User"
EMAIL_HEADER = "X-Rolegate-Email"
ROLES_HEADER = "X-Rolegate-Roles"
# Every incoming header of these names is stripped before forwarding (they would impersonate us).
ASSERTION_HEADERS: tuple[str, ...] = (ASSERTION_HEADER, USER_HEADER, EMAIL_HEADER, ROLES_HEADER)
ASSERTION_TYP = "JWT"
# Common server limit for one header line (nginx large_client_header_buffers, Node, Go defaults).
MAX_HEADER_BYTES = 8 * 1024


class AssertionTooLarge(Exception):
    """The caller's claims do not fit in one header; refuse rather than send a header a backend drops."""


def compact_permissions(perms: Iterable[str]) -> dict[str, list[str]]:
    """``{"workorders": ["edit", "view"]}`` for ``workorders:edit, workorders:view``: each resource once.

    Split at the last colon, so ``rolegate:daypass:issue`` is ``{"rolegate:daypass": ["issue"]}``;
    a permission without a colon is listed under ``""``. Sorted, so equal sets give equal tokens.
    """
    grouped: dict[str, list[str]] = {}
    for perm in sorted(perms):
        resource, _, action = perm.rpartition(":")
        grouped.setdefault(resource, []).append(action)
    return grouped


def has_permission(perms: dict[str, list[str]], permission: str) -> bool:
    """Whether a compact ``perms`` claim grants ``permission`` (what a Python backend would write)."""
    resource, _, action = permission.rpartition(":")
    return action in perms.get(resource, ())


def _jti() -> str:
    return base64.urlsafe_b64encode(os.urandom(12)).decode()


class _Entry:
    __slots__ = ("token", "refresh_at", "perms", "roles", "sub", "email", "headers", "where")

    def __init__(
        self,
        token: str,
        refresh_at: float,
        perms: frozenset[str],
        roles: frozenset[str],
        sub: str,
        email: str,
        where: dict[str, Any] | None = None,
    ) -> None:
        self.token = token
        self.refresh_at = refresh_at
        self.perms = perms
        self.roles = roles
        self.sub = sub
        self.email = email
        self.headers: dict[str, str] | None = None
        self.where = where


# (session, scope, permission version, audience, the where claim's permission or "")
CacheKey = tuple[str, str, int, str, str]


class AssertionMinter:
    """Mint (and cache) upstream assertions signed with the KeyRing's current key."""

    __slots__ = ("keyring", "issuer", "lifetime", "max_entries", "_cache", "_clock", "hits", "misses")

    def __init__(
        self,
        keyring: KeyRing,
        issuer: str,
        lifetime: float = 300.0,
        *,
        max_entries: int = 10000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lifetime < 30:
            raise ValueError("assertion lifetime must be at least 30s")
        self.keyring = keyring
        self.issuer = issuer
        self.lifetime = float(lifetime)
        self.max_entries = max_entries
        self._cache: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._clock = clock
        self.hits = 0
        self.misses = 0

    def mint(
        self,
        *,
        sub: str,
        name: str,
        email: str,
        roles: Iterable[str],
        scope: str,
        perms: Iterable[str],
        sid: str,
        ver: int,
        aud: str,
        where: dict[str, Any] | None = None,
    ) -> str:
        """The assertion for this caller at this scope for upstream ``aud`` (cached when ``sid`` is set)."""
        return self._entry(sub, name, email, roles, scope, perms, sid, ver, aud, where).token

    def _entry(
        self,
        sub: str,
        name: str,
        email: str,
        roles: Iterable[str],
        scope: str,
        perms: Iterable[str],
        sid: str,
        ver: int,
        aud: str,
        where: dict[str, Any] | None = None,
    ) -> _Entry:
        perms = perms if isinstance(perms, frozenset) else frozenset(perms)
        roles = roles if isinstance(roles, frozenset) else frozenset(roles)
        now = self._clock()
        key = (sid, scope, ver, aud, where["perm"] if where else "")
        cache = self._cache
        entry = cache.get(key) if sid else None
        if (
            entry is not None
            and now < entry.refresh_at
            and entry.sub == sub
            and entry.email == email
            and (entry.perms is perms or entry.perms == perms)
            and (entry.roles is roles or entry.roles == roles)
            and entry.where == where
        ):
            cache.move_to_end(key)
            self.hits += 1
            return entry
        self.misses += 1
        signing = self.keyring.signing_key
        iat = int(now)
        exp = iat + int(self.lifetime)
        claims = {
            "iss": self.issuer,
            "aud": aud,
            "sub": sub,
            "iat": iat,
            "nbf": iat,
            "exp": exp,
            "jti": _jti(),
            "name": name,
            "email": email,
            "roles": sorted(roles),
            "scope": scope,
            "perms": compact_permissions(perms),
            "sid": sid,
            "ver": ver,
        }
        if where is not None:  # on a route without a scope: where the caller holds its permission (lists)
            claims["where"] = where
        token = signing.sign(claims, typ=ASSERTION_TYP)
        if len(token) > MAX_HEADER_BYTES - len(ASSERTION_HEADER) - 4:
            raise AssertionTooLarge(
                f"assertion of {len(token)} bytes for {len(perms)} permissions and "
                f"{len(roles)} roles exceeds one {MAX_HEADER_BYTES}-byte header"
            )
        # Refresh once less than a third of the lifetime is left: the backend always gets minutes.
        entry = _Entry(token, now + self.lifetime * 2 / 3, perms, roles, sub, email, where)
        if sid:
            cache[key] = entry
            cache.move_to_end(key)
            if len(cache) > self.max_entries:
                cache.popitem(last=False)
        return entry

    def forget(self, sid: str) -> None:
        """Drop every cached assertion of one session (sign-out)."""
        for key in [k for k in self._cache if k[0] == sid]:
            del self._cache[key]

    def clear(self) -> None:
        self._cache.clear()

    def assertion_headers(
        self,
        *,
        sub: str,
        name: str,
        email: str,
        roles: Iterable[str],
        scope: str,
        perms: Iterable[str],
        sid: str,
        ver: int,
        aud: str,
        where: dict[str, Any] | None = None,
    ) -> dict[str, str]:
        """The four headers to add upstream (after stripping any incoming ``ASSERTION_HEADERS``).

        The dict is cached with the assertion: treat it as read-only.
        """
        return self.assertion_headers_until(
            sub=sub,
            name=name,
            email=email,
            roles=roles,
            scope=scope,
            perms=perms,
            sid=sid,
            ver=ver,
            aud=aud,
            where=where,
        )[0]

    def assertion_headers_until(
        self,
        *,
        sub: str,
        name: str,
        email: str,
        roles: Iterable[str],
        scope: str,
        perms: Iterable[str],
        sid: str,
        ver: int,
        aud: str,
        where: dict[str, Any] | None = None,
    ) -> tuple[dict[str, str], float]:
        """``assertion_headers`` and the time until which this exact answer would be given again
        (the cached assertion's refresh time), for callers that keep the headers themselves."""
        entry = self._entry(sub, name, email, roles, scope, perms, sid, ver, aud, where)
        headers = entry.headers
        if headers is None:
            headers = entry.headers = assertion_headers(entry.token, user=sub, email=email, roles=entry.roles)
        return headers, entry.refresh_at


# Printable ASCII except "%" (the escape) and "," (the list separator): everything else is
# percent-encoded as UTF-8, so CR/LF can never split a header and non-latin-1 names survive.
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%,") + " "


def header_value(value: str) -> str:
    """``value`` made safe for an HTTP header: controls, ``%``, ``,`` and non-ASCII percent-encoded."""
    if value.isascii() and value.isprintable() and "%" not in value and "," not in value:
        return value
    return quote(value, safe=_SAFE)


def assertion_headers(token: str, *, user: str, email: str, roles: Iterable[str]) -> dict[str, str]:
    """Header dict for an already minted assertion; plain headers percent-encoded (decode with unquote)."""
    return {
        ASSERTION_HEADER: token,
        USER_HEADER: header_value(user),
        EMAIL_HEADER: header_value(email),
        ROLES_HEADER: ",".join(header_value(r) for r in sorted(roles)),
    }
