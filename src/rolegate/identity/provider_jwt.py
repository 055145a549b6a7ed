"""Verify JWTs the provider signed: ID tokens (OIDC Core §3.1.3.7), JWT access tokens (RFC 9068)
and logout tokens (OIDC Back-Channel Logout §2.6).

Signatures with PyJWT against the provider's JWKS; the algorithm must be on ``oidc.algorithms``
*and* match the key it names (so ``alg: none`` and HMAC keyed with the public key never verify).
ID-token claims are validated with authlib's ``CodeIDToken``.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

import jwt
from authlib.oidc.core import CodeIDToken  # type: ignore[import-untyped]  # authlib ships no type hints
from joserfc.errors import JoseError

from rolegate.identity.jwks import ProviderKeys, UnknownKey

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# A logout token is delivered at once; an old one is a replay.
LOGOUT_TOKEN_MAX_AGE = 300.0
_ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})


class InvalidProviderToken(Exception):
    """The token is not one the provider signed for us, or is no longer valid. Detail is for logs only."""


class ProviderTokens:
    """All checks of provider-signed JWTs, sharing one key cache and one algorithm allow-list."""

    __slots__ = ("issuer", "client_id", "algorithms", "leeway", "keys")

    def __init__(
        self, *, issuer: str, client_id: str, algorithms: tuple[str, ...], leeway: float, keys: ProviderKeys
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self.algorithms = list(algorithms)
        self.leeway = leeway
        self.keys = keys

    async def _verify(
        self, token: str, *, audience: str | list[str] | None, require: list[str], types: frozenset[str] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, RecursionError) as exc:  # RecursionError: JSON nested past the parser's limit
            raise InvalidProviderToken(f"unreadable JWT: {type(exc).__name__}") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidProviderToken(f"algorithm {alg!r} is not allowed")
        if types is not None and str(header.get("typ", "")).lower() not in types:
            raise InvalidProviderToken(f"token type {header.get('typ')!r} is not acceptable here")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidProviderToken("malformed kid")
        try:
            key = await self.keys.key_for(kid)
        except UnknownKey as exc:
            raise InvalidProviderToken(str(exc)) from None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": require, "verify_aud": audience is not None},
            )
        except RecursionError:
            raise InvalidProviderToken("unreadable JWT: claims nested too deep") from None
        except jwt.PyJWTError as exc:
            raise InvalidProviderToken(f"{type(exc).__name__}: {exc}") from None
        return claims, header

    async def verify_id_token(self, token: str, *, nonce: str, access_token: str | None = None) -> dict[str, Any]:
        """Claims of a valid ID token from the code flow whose nonce is ``nonce``."""
        claims, header = await self._verify(token, audience=self.client_id, require=["iss", "sub", "aud", "exp", "iat"])
        found = claims.get("nonce")
        if not isinstance(found, str) or not hmac.compare_digest(found.encode(), nonce.encode()):
            raise InvalidProviderToken("nonce mismatch")
        id_token = CodeIDToken(
            claims,
            header,
            options={"iss": {"essential": True, "value": self.issuer}},
            params={"nonce": nonce, "client_id": self.client_id, "access_token": access_token},
        )
        try:
            id_token.validate(now=int(time.time()), leeway=int(self.leeway))
        except JoseError as exc:
            raise InvalidProviderToken(f"ID token claims: {exc}") from None
        return dict(id_token)

    async def verify_refreshed_id_token(self, token: str, *, subject: str) -> dict[str, Any]:
        """An ID token from a refresh (OIDC Core §12.2): same iss/sub/aud, no nonce to check."""
        claims, header = await self._verify(token, audience=self.client_id, require=["iss", "sub", "aud", "exp", "iat"])
        if not hmac.compare_digest(str(claims.get("sub", "")).encode(), subject.encode()):
            raise InvalidProviderToken("refreshed ID token names another subject")
        id_token = CodeIDToken(claims, header, params={"client_id": self.client_id})
        try:
            id_token.validate(now=int(time.time()), leeway=int(self.leeway))
        except JoseError as exc:
            raise InvalidProviderToken(f"ID token claims: {exc}") from None
        return dict(id_token)

    async def verify_access_token(self, token: str, audiences: tuple[str, ...]) -> dict[str, Any]:
        """Claims of one of the provider's JWT access tokens meant for one of ``audiences``."""
        if not audiences:
            raise InvalidProviderToken("no access_token_audience configured: provider access tokens are not accepted")
        claims, _ = await self._verify(
            token, audience=list(audiences), require=["iss", "sub", "aud", "exp"], types=_ACCESS_TOKEN_TYPES
        )
        return claims

    async def verify_client_token(self, token: str, audience: str) -> dict[str, Any]:
        """Claims of a JWT access token from the client-credentials grant (RFC 9068 §2.2: ``sub`` is the
        client's id) meant for ``audience``. A user's token (``sub`` is the user) is refused whatever its aud."""
        claims, _ = await self._verify(
            token, audience=audience, require=["iss", "sub", "aud", "exp"], types=_ACCESS_TOKEN_TYPES
        )
        client = claims.get("client_id")
        if not isinstance(client, str) or not client:
            raise InvalidProviderToken("access token without client_id")
        if not hmac.compare_digest(str(claims.get("sub", "")).encode(), client.encode()):
            raise InvalidProviderToken("not a client-credentials token: its subject is not the client")
        return claims

    async def verify_logout_token(self, token: str) -> dict[str, Any]:
        """Claims of a valid back-channel logout token addressed to us."""
        claims, _ = await self._verify(token, audience=self.client_id, require=["iss", "aud", "iat", "jti"])
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_EVENT), dict):
            raise InvalidProviderToken("logout token without the back-channel logout event")
        if "nonce" in claims:
            raise InvalidProviderToken("a logout token must not carry a nonce")
        iat = claims.get("iat")
        now = time.time()
        if (
            not isinstance(iat, (int, float))
            or not now - LOGOUT_TOKEN_MAX_AGE - self.leeway <= iat <= now + self.leeway
        ):
            raise InvalidProviderToken("logout token issued too long ago or in the future")
        sid, sub = claims.get("sid"), claims.get("sub")
        if not (isinstance(sid, str) and sid) and not (isinstance(sub, str) and sub):
            raise InvalidProviderToken("logout token names neither sid nor sub")
        return claims
