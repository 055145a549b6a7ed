"""The provider's discovery document (OpenID Connect Discovery 1.0 §4), fetched lazily and cached.

A failed fetch is retried with exponential backoff so that a provider outage does not turn every
login attempt into a slow request; until it comes back, sign-in answers 503 at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp

from rolegate.identity.errors import ProviderUnavailable

log = logging.getLogger("rolegate.identity.discovery")

_BACKOFF_START = 1.0
_BACKOFF_MAX = 60.0
# The document rarely changes; re-read it now and then so key or endpoint moves are picked up.
_MAX_AGE = 3600.0
# Before a sign-in, the provider must have answered this recently (else it is asked again).
PROBE_SECONDS = 2.0


class ProviderMetadata:
    """Caches ``{issuer}/.well-known/openid-configuration``; ``await get()`` returns the document."""

    __slots__ = ("issuer", "_http", "_doc", "_fetched_at", "_failures", "_retry_at", "_lock", "_timeout")

    def __init__(self, issuer: str, http: "HttpSource", *, timeout: float = 10.0) -> None:
        self.issuer = issuer.rstrip("/")
        self._http = http
        self._doc: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self._failures = 0
        self._retry_at = 0.0
        self._lock = asyncio.Lock()
        self._timeout = timeout

    async def get(self) -> dict[str, Any]:
        """The document, refetched when older than an hour; a stale known-good one while the provider is down."""
        return await self._current(_MAX_AGE, stale_ok=True)

    async def reachable(self) -> dict[str, Any]:
        """The document, once the provider has answered within the last PROBE_SECONDS.

        Sign-in sends the browser to the provider: with a document cached for an hour, a provider that
        went down meanwhile would get the user a browser error page instead of rolegate's clear 503.
        During an outage the retry back-off answers at once (no timeout per sign-in attempt).
        """
        return await self._current(PROBE_SECONDS, stale_ok=False)

    async def _current(self, max_age: float, *, stale_ok: bool) -> dict[str, Any]:
        now = time.monotonic()
        if self._doc is not None and now - self._fetched_at < max_age:
            return self._doc
        async with self._lock:
            now = time.monotonic()
            if self._doc is not None and now - self._fetched_at < max_age:
                return self._doc
            if now < self._retry_at:
                if stale_ok and self._doc is not None:
                    return self._doc  # stale but known-good beats nothing
                raise ProviderUnavailable("discovery in backoff after earlier failures")
            try:
                doc = await self._fetch()
            except ProviderUnavailable:
                self._failures += 1
                self._retry_at = now + min(_BACKOFF_MAX, _BACKOFF_START * 2 ** (self._failures - 1))
                if stale_ok and self._doc is not None:
                    return self._doc
                raise
            self._doc, self._fetched_at, self._failures, self._retry_at = doc, now, 0, 0.0
            return doc

    def forget(self) -> None:
        """Drop the cached document (e.g. after an endpoint failed), so the next use refetches."""
        self._fetched_at = 0.0

    async def _fetch(self) -> dict[str, Any]:
        url = f"{self.issuer}/.well-known/openid-configuration"
        try:
            doc = await self._http.get_json(url, timeout=self._timeout)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            log.warning("cannot read the provider's discovery document %s: %s", url, exc)
            raise ProviderUnavailable(f"discovery {url}: {exc}") from None
        # OIDC Discovery §4.3: the issuer in the document must be exactly the one configured.
        if not isinstance(doc, dict) or doc.get("issuer", "").rstrip("/") != self.issuer:
            raise ProviderUnavailable(
                f"discovery {url}: issuer mismatch ({doc.get('issuer') if isinstance(doc, dict) else doc!r})"
            )
        for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(doc.get(field), str):
                raise ProviderUnavailable(f"discovery {url}: no {field}")
        return doc


class HttpSource:
    """The one aiohttp ClientSession the identity stage uses to talk to the provider (opened lazily)."""

    __slots__ = ("_session",)

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": "rolegate"}, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def get_json(self, url: str, *, timeout: float, headers: dict[str, str] | None = None) -> Any:
        async with self.session.get(
            url, headers=headers, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            if resp.status != 200:
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status, message=f"HTTP {resp.status}"
                )
            return await resp.json(content_type=None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
