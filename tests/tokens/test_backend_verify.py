"""What a backend developer does: verify X-Rolegate-Assertion with nothing but PyJWT's PyJWKClient
against rolegate's JWKS served over real HTTP; once directly, once after the assertion travelled
through the lab backend (which echoes the headers it received)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import aiohttp
import jwt
import pytest
from aiohttp import web

from rolegate.tokens import JWKS_PATH, AssertionMinter, jwks_handler

from .conftest import make_ring

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "backend_verify.py"


def load_example():
    spec = importlib.util.spec_from_file_location("backend_verify", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def rolegate(aiohttp_server, store, board):
    """A real HTTP server publishing the JWKS; its URL is the issuer. Real clock: PyJWT checks exp itself."""
    import time

    ring = make_ring(store, time.time, board)
    await ring.sync()
    app = web.Application()
    app.router.add_get(JWKS_PATH, jwks_handler(ring))
    server = await aiohttp_server(app)
    issuer = str(server.make_url("")).rstrip("/")
    return issuer, ring, AssertionMinter(ring, issuer, 300)


CALLER = dict(
    sub="alice",
    name="Alice",
    email="alice@example.com",
    roles=["responsible"],
    scope="building:a",
    perms=["dashboard:view", "controls:activate"],
    sid="sess-1",
    ver=3,
    aud="app",
)


async def test_jwks_endpoint(rolegate) -> None:
    issuer, ring, _ = rolegate
    async with aiohttp.ClientSession() as http:
        async with http.get(issuer + JWKS_PATH) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("application/jwk-set+json")
            assert resp.headers["Cache-Control"] == "public, max-age=300"
            body = await resp.json(content_type=None)
    assert [k["kid"] for k in body["keys"]] == [ring.signing_key.kid]
    assert all("d" not in k for k in body["keys"])


async def test_backend_verifies_with_pyjwkclient(rolegate) -> None:
    issuer, _ring, minter = rolegate
    example = load_example()
    verifier = example.AssertionVerifier(issuer, "app")
    claims = await asyncio.to_thread(verifier.verify, minter.mint(**CALLER))
    assert claims["sub"] == "alice" and example.has_permission(claims, "controls:activate")
    assert not example.has_permission(claims, "invoices:view")
    # A token for another upstream is refused by the backend's own check.
    with pytest.raises(jwt.InvalidAudienceError):
        await asyncio.to_thread(verifier.verify, minter.mint(**{**CALLER, "aud": "billing"}))
    # So is one from another issuer, even when signed by the same keys.
    stranger = example.AssertionVerifier(issuer.replace("127.0.0.1", "localhost"), "app")
    with pytest.raises(jwt.PyJWTError):
        await asyncio.to_thread(stranger.verify, minter.mint(**CALLER))


async def test_backend_follows_a_rotation_without_refetching(aiohttp_server, store, board) -> None:
    import time

    from .conftest import Clock

    week = 7 * 86400
    ring_clock = Clock((int(time.time() // week) + 1) * week - 10)  # ten seconds before a rotation
    ring = make_ring(store, ring_clock, board)
    await ring.sync()
    fetches = 0

    @web.middleware
    async def count(request, handler):
        nonlocal fetches
        fetches += 1
        return await handler(request)

    app = web.Application(middlewares=[count])
    app.router.add_get(JWKS_PATH, jwks_handler(ring))
    server = await aiohttp_server(app)
    issuer = str(server.make_url("")).rstrip("/")
    minter = AssertionMinter(ring, issuer, 300)  # real clock for iat/exp: PyJWT checks them with real time
    verifier = load_example().AssertionVerifier(issuer, "app")
    before = minter.mint(**CALLER)
    await asyncio.to_thread(verifier.verify, before)
    ring_clock.advance(20)  # the period ends; the prepublished key starts signing
    await ring.sync()
    minter.clear()
    after = minter.mint(**CALLER)
    assert jwt.get_unverified_header(after)["kid"] != jwt.get_unverified_header(before)["kid"]
    assert (await asyncio.to_thread(verifier.verify, after))["sub"] == "alice"
    assert (await asyncio.to_thread(verifier.verify, before))["sub"] == "alice"  # old key still published
    # The backend already had the new key: one JWKS fetch for both (PyJWKClient would not refetch
    # an unknown kid within its 30-second cooldown).
    assert fetches == 1


async def test_example_backend_app(rolegate, aiohttp_client) -> None:
    issuer, _ring, minter = rolegate
    example = load_example()
    client = await aiohttp_client(example.make_app(example.AssertionVerifier(issuer, "app")))
    headers = minter.assertion_headers(**CALLER)
    resp = await client.get("/whoami", headers=headers)
    assert resp.status == 200 and (await resp.json())["user"] == "alice"
    assert (await client.get("/invoices", headers=headers)).status == 403
    allowed = minter.assertion_headers(**{**CALLER, "perms": ["invoices:view"]})
    assert (await client.get("/invoices", headers=allowed)).status == 200
    assert (await client.get("/whoami")).status == 401
    assert (await client.get("/whoami", headers={"X-Rolegate-Assertion": "forged"})).status == 401


@pytest.mark.lab
async def test_assertion_through_the_lab_backend(rolegate, lab_backend) -> None:
    issuer, _ring, minter = rolegate
    headers = minter.assertion_headers(**{**CALLER, "sub": "zoë", "email": "zoë@example.com"})
    async with aiohttp.ClientSession() as http:
        async with http.get(lab_backend.url + "/anything", headers=headers) as resp:
            echoed = (await resp.json())["headers"]
    assert echoed["X-Rolegate-User"] == "zo%C3%AB"
    example = load_example()
    claims = await asyncio.to_thread(example.AssertionVerifier(issuer, "app").verify, echoed["X-Rolegate-Assertion"])
    assert claims["sub"] == "zoë" and claims["perms"] == {"controls": ["activate"], "dashboard": ["view"]}
    assert json.dumps(claims["roles"]) == '["responsible"]'
