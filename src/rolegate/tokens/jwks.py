"""``/.well-known/jwks.json``: the public half of every key a backend may meet in a live token."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from rolegate.tokens.keys import KeyRing

PATH = "/.well-known/jwks.json"
# Short, so a backend learns a new key within minutes; PyJWKClient also refetches on an unknown kid.
MAX_AGE = 300


def jwks_handler(keyring: KeyRing, *, max_age: int = MAX_AGE) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler serving the key ring's JWKS (current, next and still-needed retired keys)."""

    async def handle(request: web.Request) -> web.Response:
        await keyring.sync()
        return web.Response(
            body=keyring.jwks_body(),
            content_type="application/jwk-set+json",
            headers={"Cache-Control": f"public, max-age={max_age}", "Access-Control-Allow-Origin": "*"},
        )

    return handle
