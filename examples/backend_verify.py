"""Verify rolegate's ``X-Rolegate-Assertion`` in your backend, with nothing but PyJWT.

    pip install "pyjwt[crypto]" aiohttp
    python examples/backend_verify.py --rolegate https://safety.example.com --audience app --port 8081

rolegate signs every request it forwards with a short-lived JWT. Check four things and you can trust
the caller's identity and permissions without ever talking to the directory:

1. the signature, with a key from ``<rolegate>/.well-known/jwks.json`` (``jwt.PyJWKClient`` caches
   it and re-fetches when rolegate rotates its key);
2. ``iss`` is your rolegate's public URL;
3. ``aud`` is the name of *your* upstream in rolegate's config (so a token for another backend is
   refused);
4. ``exp`` / ``nbf`` (PyJWT checks them; allow a little clock skew).

Then read ``perms``: permissions at the request's ``scope``, grouped by resource
(``{"invoices": ["view"], "workorders": ["edit", "view"]}``); ``has_permission`` below checks one.

A list (``GET /workorders``: a route without a scope) carries ``where`` for the route's permission:
``{"perm": "workorders:view", "all": false, "scopes": ["region:north"], "assigned": ["workorder:1"]}``.
``visible`` below keeps the items lying in one of ``scopes`` (minus ``except``) or named in ``assigned``;
with ``"truncated": true`` the lists are incomplete, so it refuses to guess (see docs/tokens.md).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import jwt
from aiohttp import web

ALGORITHMS = ["EdDSA", "ES256"]
CLAIMS = web.RequestKey("claims", dict)


class AssertionVerifier:
    """``verify(token) -> claims`` for assertions rolegate at ``rolegate_url`` minted for ``audience``."""

    def __init__(self, rolegate_url: str, audience: str, *, leeway: float = 30.0) -> None:
        self.issuer = rolegate_url.rstrip("/")
        self.audience = audience
        self.leeway = leeway
        self.jwks = jwt.PyJWKClient(f"{self.issuer}/.well-known/jwks.json", lifespan=300)

    def verify(self, token: str) -> dict[str, Any]:
        """The assertion's claims; raises jwt.PyJWTError when it must not be trusted."""
        signing_key = self.jwks.get_signing_key_from_jwt(token)  # picks the key by the token's kid
        return jwt.decode(token, signing_key.key, algorithms=[signing_key.algorithm_name], audience=self.audience,
                          issuer=self.issuer, leeway=self.leeway,
                          options={"require": ["exp", "iat", "iss", "aud", "sub", "perms"]})


def has_permission(claims: dict[str, Any], permission: str) -> bool:
    """Whether the assertion grants ``permission`` (e.g. ``invoices:view``) at its ``scope``."""
    resource, _, action = permission.rpartition(":")
    return action in claims.get("perms", {}).get(resource, ())


class Truncated(Exception):
    """The ``where`` claim was cut (too many scopes or objects): filter per item another way, or refuse."""


def visible(claims: dict[str, Any], permission: str, items: list[dict[str, Any]],
            places: Any) -> list[dict[str, Any]]:
    """The items of a list the caller may see with ``permission``, from the assertion's ``where`` claim.

    ``places(item)`` gives the item's own object and every scope it lies in, nearest first, e.g.
    ``["workorder:1", "customer:c100", "region:north"]``: your backend knows where its objects are.
    """
    where = claims.get("where")
    if not isinstance(where, dict) or where.get("perm") != permission:
        return []  # no claim for this permission: nothing (never everything)
    if where.get("truncated"):
        raise Truncated(f"the where claim for {permission} is truncated")
    if where.get("all") is True:
        return list(items)
    scopes, assigned = set(where.get("scopes", ())), set(where.get("assigned", ()))
    denied = set(where.get("except", ()))
    out = []
    for item in items:
        chain = list(places(item))
        if chain and chain[0] in assigned:
            out.append(item)  # assigned to the caller (or, for a parent's permission, the object itself)
            continue
        for place in chain:
            if place in denied:
                break  # a deny nearer the item than the scope that grants it
            if place in scopes:
                out.append(item)
                break
    return out


def make_app(verifier: AssertionVerifier) -> web.Application:
    @web.middleware
    async def require_assertion(request: web.Request, handler):
        token = request.headers.get("X-Rolegate-Assertion")
        if not token:
            raise web.HTTPUnauthorized(text="no rolegate assertion")
        try:
            # PyJWKClient uses blocking HTTP when it (re)fetches keys: keep it off the event loop.
            request[CLAIMS] = await asyncio.to_thread(verifier.verify, token)
        except jwt.PyJWTError as exc:
            raise web.HTTPUnauthorized(text=f"invalid rolegate assertion: {type(exc).__name__}") from None
        return await handler(request)

    async def whoami(request: web.Request) -> web.Response:
        claims = request[CLAIMS]
        return web.json_response({"user": claims["sub"], "email": claims.get("email"), "roles": claims.get("roles"),
                                  "scope": claims.get("scope"), "perms": claims["perms"]})

    async def invoices(request: web.Request) -> web.Response:
        if not has_permission(request[CLAIMS], "invoices:view"):
            raise web.HTTPForbidden(text="invoices:view needed")
        return web.json_response([{"id": "1001", "amount": 580.8}])

    # Demo data: where each work order lies (your database knows this).
    workorders = [{"id": "1", "customer": "c100", "region": "north"},
                  {"id": "2", "customer": "c100", "region": "north"},
                  {"id": "3", "customer": "c200", "region": "south"}]

    async def list_workorders(request: web.Request) -> web.Response:
        try:
            shown = visible(request[CLAIMS], "workorders:view", workorders,
                            lambda w: [f"workorder:{w['id']}", f"customer:{w['customer']}", f"region:{w['region']}"])
        except Truncated:
            raise web.HTTPServiceUnavailable(text="too many places to filter from the assertion") from None
        return web.json_response(shown)

    app = web.Application(middlewares=[require_assertion])
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/workorders", list_workorders)
    app.router.add_get("/invoices", invoices)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rolegate", required=True, help="rolegate's public URL (the token issuer)")
    parser.add_argument("--audience", required=True, help="this upstream's name (or audience) in rolegate's config")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    print(f"backend on http://{args.host}:{args.port}, trusting assertions of {args.rolegate} for {args.audience!r}")
    web.run_app(make_app(AssertionVerifier(args.rolegate, args.audience)), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
