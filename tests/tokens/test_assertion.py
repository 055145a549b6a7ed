"""Upstream assertions: claims, caching, size, header safety, and every forgery refused."""

from __future__ import annotations

import base64
import json
from urllib.parse import unquote

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from rolegate.tokens import (
    ASSERTION_HEADER,
    AssertionMinter,
    AssertionTooLarge,
    InvalidToken,
    TokenVerifier,
    has_permission,
    header_value,
)

from .conftest import ISSUER

CALLER = dict(
    sub="alice",
    name="Alice Zoë",
    email="alice@example.com",
    roles=["user", "responsible"],
    scope="building:a",
    perms=["dashboard:view", "documents:view", "rolegate:daypass:issue"],
    sid="sess-1",
    ver=7,
    aud="app",
)


def verifier(minter: AssertionMinter, clock) -> TokenVerifier:
    return TokenVerifier(minter.keyring, ISSUER, leeway=30, clock=clock)


def test_claims(minter, clock) -> None:
    claims = verifier(minter, clock).verify(minter.mint(**CALLER), audience="app", typ="JWT")
    assert claims["iss"] == ISSUER and claims["aud"] == "app" and claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 300 and claims["nbf"] == claims["iat"] and claims["jti"]
    assert claims["roles"] == ["responsible", "user"] and claims["scope"] == "building:a"
    assert claims["perms"] == {"dashboard": ["view"], "documents": ["view"], "rolegate:daypass": ["issue"]}
    assert has_permission(claims["perms"], "rolegate:daypass:issue") and not has_permission(claims["perms"], "x:y")
    assert claims["sid"] == "sess-1" and claims["ver"] == 7 and claims["name"] == "Alice Zoë"
    assert "groups" not in claims


def test_cache_per_session_scope_version_audience(minter, clock) -> None:
    first = minter.mint(**CALLER)
    assert minter.mint(**CALLER) == first
    for change in ({"scope": "building:b"}, {"ver": 8}, {"aud": "billing"}, {"sid": "sess-2"}):
        assert minter.mint(**{**CALLER, **change}) != first, change
    assert minter.mint(**CALLER) == first
    assert minter.hits == 2 and minter.misses == 5
    # Grants that changed without a version bump (a directory sync) are never served from the cache.
    for change in ({"perms": ["dashboard:view"]}, {"roles": ["user"]}, {"email": "new@example.com"}):
        assert minter.mint(**{**CALLER, **change}) != first, change
    first = minter.mint(**CALLER)
    # Reused until a third of the lifetime is left, then re-minted.
    clock.advance(199)
    assert minter.mint(**CALLER) == first
    clock.advance(2)
    assert minter.mint(**CALLER) != first


def test_cache_is_bounded(keyring, clock) -> None:
    minter = AssertionMinter(keyring, ISSUER, 300, max_entries=50, clock=clock)
    for i in range(500):
        minter.mint(**{**CALLER, "sid": f"s{i}"})
    assert len(minter._cache) == 50


def test_headers_are_cached_and_safe(minter) -> None:
    headers = minter.assertion_headers(
        **{**CALLER, "sub": "bob\r\nX-Evil: 1", "email": "zoë@例え.jp", "roles": ["a,b", "user"]}
    )
    assert (
        minter.assertion_headers(
            **{**CALLER, "sub": "bob\r\nX-Evil: 1", "email": "zoë@例え.jp", "roles": ["a,b", "user"]}
        )
        is headers
    )
    for value in headers.values():
        value.encode("latin-1")
        assert "\r" not in value and "\n" not in value
    assert unquote(headers["X-Rolegate-User"]) == "bob\r\nX-Evil: 1"
    assert unquote(headers["X-Rolegate-Email"]) == "zoë@例え.jp"
    assert [unquote(r) for r in headers["X-Rolegate-Roles"].split(",")] == ["a,b", "user"]
    assert header_value("alice@example.com") == "alice@example.com"
    assert header_value("100%") == "100%25"


def test_500_groups_and_200_permissions_fit_one_8k_header(minter, clock) -> None:
    # 40 resources x 5 actions with long-ish names, 30 roles; the 500 groups never enter the token.
    resources = [f"maintenance_resource_{i:02d}" for i in range(40)]
    actions = ["view", "edit", "approve", "schedule", "download"]
    perms = [f"{r}:{a}" for r in resources for a in actions]
    groups = [f"cn=group-{i:03d},ou=groups,dc=example,dc=com" for i in range(500)]
    roles = [f"building_role_number_{i:02d}" for i in range(30)]
    headers = minter.assertion_headers(
        sub="a.very.long.username@subsidiary.example.com",
        name="A" * 80,
        email="a.very.long.username@subsidiary.example.com",
        roles=roles,
        scope="building:headquarters-north-wing",
        perms=perms,
        sid="x" * 32,
        ver=123456,
        aud="maintenance-app",
    )
    line = f"{ASSERTION_HEADER}: {headers[ASSERTION_HEADER]}\r\n"
    assert len(line.encode()) < 8 * 1024, len(line)
    claims = verifier(minter, clock).verify(headers[ASSERTION_HEADER], audience="maintenance-app", typ="JWT")
    assert sum(len(v) for v in claims["perms"].values()) == 200
    assert not any(g in headers[ASSERTION_HEADER] for g in groups[:1])
    # Beyond one header, minting refuses loudly instead of sending a header a backend would drop.
    with pytest.raises(AssertionTooLarge):
        minter.mint(**{**CALLER, "perms": [f"resource_{i}_with_a_long_name:act" for i in range(400)]})


# -- forgeries and bad input --------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims(clock, **over):
    now = int(clock())
    return {"iss": ISSUER, "aud": "app", "sub": "mallory", "iat": now, "nbf": now, "exp": now + 300, "jti": "j", **over}


def _expect_refused(minter, clock, token: str) -> None:
    with pytest.raises(InvalidToken):
        verifier(minter, clock).verify(token, audience="app", typ="JWT")


def test_alg_none_refused(minter, clock) -> None:
    kid = minter.keyring.signing_key.kid
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    _expect_refused(minter, clock, f"{header}.{_b64(json.dumps(_claims(clock)).encode())}.")


def test_hmac_signed_with_the_public_key_refused(minter, clock) -> None:
    key = minter.keyring.signing_key
    public_pem = key.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    import hashlib
    import hmac

    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    body = _b64(json.dumps(_claims(clock)).encode())
    sig = _b64(hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest())
    _expect_refused(minter, clock, f"{header}.{body}.{sig}")
    # And with the JWK's raw x as the secret.
    sig = _b64(hmac.new(key.jwk["x"].encode(), f"{header}.{body}".encode(), hashlib.sha256).digest())
    _expect_refused(minter, clock, f"{header}.{body}.{sig}")


def test_unknown_kid_refused(minter, clock) -> None:
    stranger = ed25519.Ed25519PrivateKey.generate()
    token = jwt.encode(_claims(clock), stranger, algorithm="EdDSA", headers={"kid": "nope", "typ": "JWT"})
    _expect_refused(minter, clock, token)
    # The right kid with someone else's signature.
    token = jwt.encode(
        _claims(clock), stranger, algorithm="EdDSA", headers={"kid": minter.keyring.signing_key.kid, "typ": "JWT"}
    )
    _expect_refused(minter, clock, token)


@pytest.mark.parametrize(
    "over",
    [
        {"exp": -1000},  # expired (relative, see below)
        {"nbf": 3600},  # not yet valid
        {"iat": 3600},  # issued in the future
        {"aud": "billing"},  # for another upstream
        {"aud": ["app", "billing"]},
        {"iss": "https://evil.example.com"},
    ],
)
def test_time_audience_issuer_refused(minter, clock, over) -> None:
    claims = _claims(clock)
    for name, value in over.items():
        claims[name] = claims[name] + value if isinstance(value, int) else value
    token = minter.keyring.signing_key.sign(claims)
    _expect_refused(minter, clock, token)


def test_expiry_and_skew(minter, clock) -> None:
    token = minter.mint(**CALLER)
    clock.advance(300 + 29)
    assert verifier(minter, clock).verify(token, audience="app", typ="JWT")
    clock.advance(2)
    _expect_refused(minter, clock, token)


def test_tampered_payload_refused(minter, clock) -> None:
    header, body, sig = minter.mint(**CALLER).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["perms"]["invoices"] = ["view"]
    _expect_refused(minter, clock, f"{header}.{_b64(json.dumps(claims).encode())}.{sig}")


def test_missing_claims_and_wrong_type_refused(minter, clock) -> None:
    claims = _claims(clock)
    del claims["jti"]
    _expect_refused(minter, clock, minter.keyring.signing_key.sign(claims))
    # An access token is not an assertion (and vice versa).
    with pytest.raises(InvalidToken):
        verifier(minter, clock).verify(
            minter.keyring.signing_key.sign(_claims(clock), typ="at+jwt"), audience="app", typ="JWT"
        )


def test_one_mebibyte_token_refused_before_decoding(minter, clock) -> None:
    token = minter.mint(**CALLER)
    huge = token + "A" * (1024 * 1024)
    _expect_refused(minter, clock, huge)
    _expect_refused(minter, clock, "x" * (1024 * 1024))
    _expect_refused(minter, clock, "not.a.jwt")
    _expect_refused(minter, clock, "")
