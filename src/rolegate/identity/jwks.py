"""The provider's signing keys (its JWKS), cached; refetched on an unknown ``kid``, at most every
``oidc.jwks_min_refresh`` so that tokens with made-up key ids cannot make us hammer the provider."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import jwt

from rolegate.identity.discovery import HttpSource, ProviderMetadata

log = logging.getLogger("rolegate.identity.jwks")


class UnknownKey(Exception):
    """No key of the provider matches the token's ``kid``."""


class ProviderKeys:
    """``await key_for(kid)`` -> a PyJWK bound to its own algorithm."""

    __slots__ = ("_metadata", "_http", "_min_refresh", "_keys", "_fetched_at", "_lock", "_timeout")

    def __init__(
        self, metadata: ProviderMetadata, http: HttpSource, *, min_refresh: float, timeout: float = 10.0
    ) -> None:
        self._metadata = metadata
        self._http = http
        self._min_refresh = min_refresh
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self._timeout = timeout

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:
            key = self._keys.get(kid)
            if key is None and (self._fetched_at is None or time.monotonic() - self._fetched_at >= self._min_refresh):
                await self._refresh()
                key = self._keys.get(kid)
        if key is None:
            raise UnknownKey(f"no provider key with kid {kid!r}")
        return key

    async def _refresh(self) -> None:
        self._fetched_at = time.monotonic()  # also on failure: the rate limit holds either way
        doc = await self._metadata.get()
        try:
            data = await self._http.get_json(doc["jwks_uri"], timeout=self._timeout)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            log.warning("cannot read the provider's JWKS: %s", exc)
            return
        keys: dict[str | None, jwt.PyJWK] = {}
        for entry in data.get("keys", []) if isinstance(data, dict) else []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            if entry.get("kty") == "oct":
                continue  # a symmetric key has no place in a provider's public JWKS
            try:
                keys[entry.get("kid")] = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError) as exc:
                log.info("skipping provider key %s: %s", entry.get("kid"), exc)
        if keys:
            self._keys = keys
        # A JWKS with one key may be used without kid (RFC 7517 allows omitting it).
        if len(keys) == 1:
            self._keys[None] = next(iter(keys.values()))
