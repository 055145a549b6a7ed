"""Verifying rolegate's own JWTs against the KeyRing, refusing everything a forger might try.

Only EdDSA and ES256 are accepted, and only with the algorithm the key named by ``kid`` was made
for: ``alg: none`` and HMAC signed with a public key never reach a signature check. Oversized
tokens are refused before any decoding.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from typing import Any

import jwt

from rolegate.tokens.keys import ALGORITHMS, KeyRing

# Far above any token rolegate mints (they stay under 8 KiB), far below what would cost real work.
MAX_TOKEN_CHARS = 16 * 1024


def _header(token: str) -> dict[str, Any]:
    """The JOSE header alone (PyJWT validates the whole token once, in decode; no need to twice)."""
    segment, dot, _rest = token.partition(".")
    if not dot or len(segment) > 1024:
        raise InvalidToken("malformed token")
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise InvalidToken("malformed token header") from None
    if not isinstance(header, dict):
        raise InvalidToken("malformed token header")
    return header


class InvalidToken(Exception):
    """The token is not a valid rolegate token; the message is for logs, never for the client."""


class TokenVerifier:
    """``verify(token, audience=..., typ=...) -> claims`` or raise InvalidToken."""

    __slots__ = ("keyring", "issuer", "leeway", "_jwt", "_clock")

    def __init__(
        self, keyring: KeyRing, issuer: str, *, leeway: float = 30.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.leeway = leeway
        self._jwt = jwt.PyJWT()
        self._clock = clock

    def verify(self, token: str, *, audience: str, typ: str, require: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("token too large")
        header = _header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise InvalidToken(f"algorithm {alg!r} not accepted")
        if header.get("typ") != typ:
            raise InvalidToken("wrong token type")
        key = self.keyring.key_for(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("unknown signing key")
        if key.alg != alg:
            raise InvalidToken("algorithm does not match the key")
        try:
            claims = self._jwt.decode(
                token,
                key.public,
                algorithms=[key.alg],
                audience=audience,
                issuer=self.issuer,
                options={
                    "require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti", *require],
                    "strict_aud": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"refused: {type(exc).__name__}: {exc}") from None
        # Times are checked here, against the ring's clock, so every stage agrees on "now".
        exp, nbf, iat = claims["exp"], claims["nbf"], claims["iat"]
        if not all(type(v) in (int, float) for v in (exp, nbf, iat)):
            raise InvalidToken("refused: non-numeric time claims")
        now = self._clock()
        if now >= exp + self.leeway:
            raise InvalidToken("refused: expired")
        if nbf > now + self.leeway or iat > now + self.leeway:
            raise InvalidToken("refused: not yet valid")
        return claims
