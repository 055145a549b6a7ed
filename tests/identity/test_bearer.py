"""Bearer tokens: the IdP's own JWT access tokens are accepted; forged or misdirected ones are 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from .conftest import JSON, provider_tokens, rolegate_yaml

pytestmark = pytest.mark.lab


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _get(http, rolegate, token: str):
    async with http.get(
        f"{rolegate.url}/me-echo/api", headers={**JSON, "Authorization": f"Bearer {token}"}, allow_redirects=False
    ) as r:
        return r.status, await r.text()


async def test_idp_access_token_is_accepted(rolegate, http):
    tokens = await provider_tokens(http, rolegate.idp, rolegate.url, username="carol")
    http.cookie_jar.clear()
    status, body = await _get(http, rolegate, tokens["access_token"])
    assert status == 200, body
    assert json.loads(body)["headers"]["X-Rolegate-User"] == "carol"
    # The IdP's token is the user's, for the backend's own API calls: it passes.
    assert json.loads(body)["headers"]["Authorization"] == f"Bearer {tokens['access_token']}"


async def test_id_token_is_not_an_access_token(rolegate, http):
    tokens = await provider_tokens(http, rolegate.idp, rolegate.url)
    http.cookie_jar.clear()
    status, _ = await _get(http, rolegate, tokens["id_token"])
    assert status == 401


async def test_wrong_audience_is_refused(rolegate, http, tmp_path):
    tokens = await provider_tokens(http, rolegate.idp, rolegate.url)
    http.cookie_jar.clear()
    rolegate.swap(
        rolegate_yaml(
            url=rolegate.url,
            idp=rolegate.idp,
            backend_url=rolegate.config.upstreams["backend"].url,
            db=tmp_path / "rolegate.db",
        ).replace("access_token_audience: [urn:rolegate:api]", "access_token_audience: [urn:some-other-api]")
    )
    status, _ = await _get(http, rolegate, tokens["access_token"])
    assert status == 401


async def test_forged_tokens_are_refused(rolegate, http):
    idp = rolegate.idp
    tokens = await provider_tokens(http, idp, rolegate.url)
    http.cookie_jar.clear()
    real = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    header = jwt.get_unverified_header(tokens["access_token"])
    now = int(time.time())
    claims = {**real, "iat": now, "exp": now + 300, "preferred_username": "mallory"}

    # alg: none
    none_token = f"{_b64(json.dumps({'alg': 'none', 'typ': 'at+jwt'}).encode())}.{_b64(json.dumps(claims).encode())}."
    assert (await _get(http, rolegate, none_token))[0] == 401

    # HMAC keyed with the IdP's public key (the classic algorithm confusion)
    async with http.get(idp.jwks_uri) as r:
        jwks = await r.json()
    for entry in jwks["keys"]:
        public = jwt.PyJWK(entry).key
        from cryptography.hazmat.primitives import serialization

        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        head = {"alg": "HS256", "typ": "at+jwt", "kid": entry["kid"]}
        signing_input = f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(claims).encode())}"
        sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        assert (await _get(http, rolegate, f"{signing_input}.{_b64(sig)}"))[0] == 401

    # our own key pretending to be the IdP's (same kid), and a wrong issuer
    mine = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims, mine, algorithm="ES256", headers={"kid": header["kid"], "typ": "at+jwt"})
    assert (await _get(http, rolegate, forged))[0] == 401
    other_issuer = jwt.encode(
        {**claims, "iss": "http://127.0.0.1:1/evil"}, mine, algorithm="ES256", headers={"kid": "evil", "typ": "at+jwt"}
    )
    assert (await _get(http, rolegate, other_issuer))[0] == 401
    unknown_kid = jwt.encode(claims, mine, algorithm="ES256", headers={"kid": "made-up", "typ": "at+jwt"})
    assert (await _get(http, rolegate, unknown_kid))[0] == 401
    assert (await _get(http, rolegate, "not-a-jwt"))[0] == 401
    # JSON nested past the parser's recursion limit, in the header and in the claims: refused, never a 500
    deep = _b64(b"[" * 5000 + b"]" * 5000)
    for hostile in (
        f"{deep}.{_b64(json.dumps(claims).encode())}.sig",
        f"{_b64(json.dumps(header).encode())}.{deep}.sig",
    ):
        assert (await _get(http, rolegate, hostile))[0] == 401

    # the genuine token, tampered: a changed claim breaks the signature
    h, p, s = tokens["access_token"].split(".")
    tampered = f"{h}.{_b64(json.dumps(claims).encode())}.{s}"
    assert (await _get(http, rolegate, tampered))[0] == 401
    # and the genuine token still passes
    assert (await _get(http, rolegate, tokens["access_token"]))[0] == 200


async def test_expired_access_token_is_refused(make_idp, lab_backend, http, tmp_path):
    from rolegate_lab import free_port, rolegate_client

    from .conftest import start_rolegate, stop_rolegate

    url = f"http://127.0.0.1:{free_port()}"
    idp = make_idp([rolegate_client(url)], ttl={"AccessToken": 1})
    rg = await start_rolegate(url, idp, lab_backend.url, tmp_path, oidc_extra="  clock_skew: 0s")
    try:
        tokens = await provider_tokens(http, idp, url)
        http.cookie_jar.clear()
        exp = jwt.decode(tokens["access_token"], options={"verify_signature": False})["exp"]
        for _ in range(40):  # wait (bounded) until the token's own exp has passed
            if time.time() > exp + 1:
                break
            await __import__("asyncio").sleep(0.1)
        assert (await _get(http, rg, tokens["access_token"]))[0] == 401
    finally:
        await stop_rolegate(rg)
