"""The token endpoint over real HTTP: session exchange (CSRF-safe), refresh rotation, reuse, revocation,
and rolegate's bearer authenticator with immediate effect of permission changes."""

from __future__ import annotations

import jwt
import pytest
from aiohttp import web

from rolegate.errors import Unauthenticated
from rolegate.identity.authenticator_rolegate_token import RolegateTokenAuthenticator
from rolegate.identity.principal import Principal
from rolegate.tokens import JWKS_PATH, REVOKE_PATH, TOKEN_PATH, StaleToken, TokenEndpoint, jwks_handler

from .conftest import ISSUER

XHR = {"X-Requested-With": "XMLHttpRequest", "Origin": ISSUER}


@pytest.fixture
async def client(aiohttp_client, service, keyring, clock):
    async def authenticate_session(request: web.Request) -> Principal | None:
        if request.cookies.get("sess") != "good":
            return None
        return Principal(
            username="alice",
            name="Alice",
            email="alice@example.com",
            groups=frozenset({"staff", "building-a-responsible"}),
            session_id="s1",
            expires_at=clock() + 3600,
        )

    async def redeem_daypass(request: web.Request, code: str) -> Principal | None:
        if code != "PASS-1":
            return None
        return Principal(username="daypass:sub1", name="Sam Sub", auth="daypass", expires_at=clock() + 1800)

    authenticator = RolegateTokenAuthenticator(service=service)

    async def protected(request: web.Request) -> web.Response:
        try:
            principal = await authenticator.authenticate(request)
        except Unauthenticated as exc:
            challenge = getattr(exc, "www_authenticate", f'Bearer realm="rolegate", error="{exc.bearer_error}"')
            return web.json_response({"error": exc.code}, status=401, headers={"WWW-Authenticate": challenge})
        if principal is None:
            return web.json_response({"error": "none"}, status=401)
        return web.json_response(
            {
                "user": principal.username,
                "groups": sorted(principal.groups),
                "auth": principal.auth,
                "sid": principal.session_id,
            }
        )

    app = web.Application()
    TokenEndpoint(
        service, public_url=ISSUER, authenticate_session=authenticate_session, redeem_daypass=redeem_daypass
    ).add_routes(app)
    app.router.add_get(JWKS_PATH, jwks_handler(keyring))
    app.router.add_get("/api/me", protected)
    return await aiohttp_client(app)


async def exchange(client, **headers):
    return await client.post(
        TOKEN_PATH, data={"grant_type": "urn:rolegate:session"}, headers={**XHR, **headers}, cookies={"sess": "good"}
    )


async def me(client, token: str):
    return await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})


async def test_session_exchange_and_bearer_use(client) -> None:
    resp = await exchange(client)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["refresh_token"].startswith("rt1.") and 0 < body["refresh_expires_in"] <= 3600
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "alice" and claims["aud"] == ISSUER and claims["ver"] == 1
    assert claims["perms"] == {"dashboard": ["view"], "documents": ["view"]} and "groups" not in claims
    assert jwt.get_unverified_header(body["access_token"])["typ"] == "at+jwt"
    resp = await me(client, body["access_token"])
    assert resp.status == 200
    assert await resp.json() == {
        "user": "alice",
        "groups": ["building-a-responsible", "staff"],
        "auth": "rolegate_token",
        "sid": claims["sid"],
    }


@pytest.mark.parametrize(
    "headers,cookie",
    [
        ({}, "good"),  # no X-Requested-With: a plain form post
        ({"X-Requested-With": "x", "Origin": "https://evil.example"}, "good"),
        ({"X-Requested-With": "x", "Sec-Fetch-Site": "cross-site"}, "good"),
    ],
)
async def test_session_exchange_refused_cross_site(client, headers, cookie) -> None:
    resp = await client.post(
        TOKEN_PATH, data={"grant_type": "urn:rolegate:session"}, headers=headers, cookies={"sess": cookie}
    )
    assert resp.status == 403
    assert (await resp.json())["error"] == "invalid_request"


async def test_session_exchange_needs_a_session_and_post(client) -> None:
    resp = await client.post(TOKEN_PATH, data={"grant_type": "urn:rolegate:session"}, headers=XHR)
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"
    assert (await client.get(TOKEN_PATH, headers=XHR, cookies={"sess": "good"})).status == 405


async def test_bad_requests(client) -> None:
    resp = await client.post(TOKEN_PATH, data={"grant_type": "password"})
    assert resp.status == 400 and (await resp.json())["error"] == "unsupported_grant_type"
    resp = await client.post(
        TOKEN_PATH,
        data="grant_type=refresh_token&grant_type=refresh_token",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (await resp.json())["error"] == "invalid_request"
    resp = await client.post(
        TOKEN_PATH, data="x=" + "a" * 20000, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status == 413
    resp = await client.post(TOKEN_PATH, data=b"[" * 2000 + b"]" * 2000, headers={"Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_request"  # nested past the limit
    resp = await client.post(TOKEN_PATH, json={"grant_type": "refresh_token", "refresh_token": "rt1.nope.nope"})
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"


async def test_refresh_rotates_and_reuse_revokes_the_family(client) -> None:
    first = await (await exchange(client)).json()
    resp = await client.post(TOKEN_PATH, data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    second = await resp.json()
    assert resp.status == 200 and second["refresh_token"] != first["refresh_token"]
    assert (await me(client, second["access_token"])).status == 200
    # The rotated-away token comes back: someone else holds it. The whole family dies at once,
    # including the live refresh token and every access token already out.
    resp = await client.post(TOKEN_PATH, data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"
    resp = await client.post(TOKEN_PATH, data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]})
    assert resp.status == 400
    assert (await me(client, second["access_token"])).status == 401
    assert (await me(client, first["access_token"])).status == 401


async def test_a_guessed_refresh_token_does_not_revoke_the_family(client) -> None:
    first = await (await exchange(client)).json()
    family = first["refresh_token"].split(".")[1]
    resp = await client.post(TOKEN_PATH, data={"grant_type": "refresh_token", "refresh_token": f"rt1.{family}.guess"})
    assert resp.status == 400
    resp = await client.post(TOKEN_PATH, data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert resp.status == 200


async def test_refresh_tokens_are_stored_only_as_hashes(client, store) -> None:
    first = await (await exchange(client)).json()
    second = await (
        await client.post(TOKEN_PATH, data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    ).json()
    dump = repr(await store.list("token_families"))
    for token in (first["refresh_token"], second["refresh_token"]):
        assert token.split(".")[2] not in dump


async def test_revoke_access_token(client) -> None:
    body = await (await exchange(client)).json()
    other = await (await exchange(client)).json()
    resp = await client.post(REVOKE_PATH, data={"token": body["access_token"], "token_type_hint": "access_token"})
    assert resp.status == 200
    assert (await me(client, body["access_token"])).status == 401
    assert (await me(client, other["access_token"])).status == 200
    # The refresh token still works (RFC 7009 lets us keep it) and yields a fresh access token.
    resp = await client.post(TOKEN_PATH, data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
    assert resp.status == 200


async def test_revoke_refresh_token_ends_the_family(client) -> None:
    body = await (await exchange(client)).json()
    resp = await client.post(REVOKE_PATH, data={"token": body["refresh_token"]})
    assert resp.status == 200
    resp = await client.post(TOKEN_PATH, data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
    assert resp.status == 400
    assert (await me(client, body["access_token"])).status == 401
    # Unknown or garbage tokens: 200 all the same (RFC 7009 §2.2); no token at all: 400.
    assert (await client.post(REVOKE_PATH, data={"token": "garbage"})).status == 200
    assert (await client.post(REVOKE_PATH, data={})).status == 400


async def test_permission_change_makes_tokens_stale_until_refreshed(client, version) -> None:
    body = await (await exchange(client)).json()
    assert (await me(client, body["access_token"])).status == 200
    version.value = 2  # an admin changed a role: next request, not next login
    resp = await me(client, body["access_token"])
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == (
        'Bearer realm="rolegate", error="invalid_token", error_description="permissions changed; refresh the token"'
    )
    assert (await resp.json())["error"] == StaleToken.code
    fresh = await (
        await client.post(TOKEN_PATH, data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
    ).json()
    assert jwt.decode(fresh["access_token"], options={"verify_signature": False})["ver"] == 2
    assert (await me(client, fresh["access_token"])).status == 200


async def test_access_token_expires(client, clock) -> None:
    body = await (await exchange(client)).json()
    clock.advance(300 + 31)
    assert (await me(client, body["access_token"])).status == 401


async def test_family_ends_with_the_session_it_came_from(client, clock) -> None:
    body = await (await exchange(client)).json()
    clock.advance(3601)  # the session's expiry caps the family
    resp = await client.post(TOKEN_PATH, data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
    assert resp.status == 400


async def test_daypass_grant_seam(client) -> None:
    resp = await client.post(TOKEN_PATH, data={"grant_type": "urn:rolegate:daypass", "code": "PASS-1"})
    body = await resp.json()
    assert resp.status == 200 and 0 < body["refresh_expires_in"] <= 1800
    assert (await (await me(client, body["access_token"])).json())["user"] == "daypass:sub1"
    resp = await client.post(TOKEN_PATH, data={"grant_type": "urn:rolegate:daypass", "code": "WRONG"})
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"


async def test_assertions_are_not_access_tokens(client, minter) -> None:
    assertion = minter.mint(sub="alice", name="", email="", roles=[], scope="", perms=[], sid="s", ver=1, aud=ISSUER)
    assert (await me(client, assertion)).status == 401


async def test_foreign_tokens_are_left_to_other_authenticators(service) -> None:
    authenticator = RolegateTokenAuthenticator(service=service)
    foreign = jwt.encode({"iss": "https://sso.example.com", "sub": "x"}, "k" * 32, algorithm="HS256")
    assert await authenticator.authenticate_token(foreign) is None
    assert await authenticator.authenticate_token("opaque-token") is None
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate_token("A" * (1024 * 1024))


async def test_revocation_is_seen_by_another_worker(client, service, keyring, store, board, clock, version) -> None:
    from rolegate.tokens import TokenService

    other_worker = TokenService(
        keyring=keyring, store=store, issuer=ISSUER, current_version=version, board=board, clock=clock
    )
    body = await (await exchange(client)).json()
    assert (await other_worker.authenticate(body["access_token"])).username == "alice"
    await service.revoke(body["refresh_token"])
    with pytest.raises(Unauthenticated):
        await other_worker.authenticate(body["access_token"])
