"""rolegate's own access tokens (RFC 9068 shape): what API and mobile clients send as ``Bearer``.

Signed with the same KeyRing as upstream assertions but told apart by ``typ: at+jwt`` and the
audience (rolegate's public URL, never an upstream name), so neither can pass for the other.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from rolegate.tokens.keys import KeyRing
from rolegate.tokens.verify import MAX_TOKEN_CHARS

ACCESS_TYP = "at+jwt"


def mint_access_token(
    keyring: KeyRing,
    *,
    issuer: str,
    sub: str,
    family: str,
    ver: int,
    now: float,
    expires: float,
    extra: dict[str, Any] | None = None,
) -> str:
    """A signed access token for family ``family`` valid until ``expires``."""
    iat = int(now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": issuer,
        "sub": sub,
        "iat": iat,
        "nbf": iat,
        "exp": int(expires),
        "jti": base64.urlsafe_b64encode(os.urandom(12)).decode(),
        "sid": family,
        "ver": ver,
    }
    if extra:
        claims.update(extra)
    return keyring.signing_key.sign(claims, typ=ACCESS_TYP)


def claims_issuer(token: str) -> str | None:
    """The unverified ``iss`` of a JWT (to decide whose token it is), or None when it is not a JWT."""
    if len(token) > MAX_TOKEN_CHARS:
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    body = parts[1]
    try:
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: "[[[[…" nested past the limit
        return None
    issuer = payload.get("iss") if isinstance(payload, dict) else None
    return issuer if isinstance(issuer, str) else None
