"""Short-lived signed tokens: upstream assertions, rotating signing keys and their JWKS, and the
token endpoint for API clients (access + rotating refresh tokens, revocation)."""

from rolegate.tokens.assertion import (
    ASSERTION_HEADER,
    ASSERTION_HEADERS,
    AssertionMinter,
    AssertionTooLarge,
    assertion_headers,
    compact_permissions,
    has_permission,
    header_value,
)
from rolegate.tokens.endpoint import REVOKE_PATH, TOKEN_PATH, TokenEndpoint
from rolegate.tokens.errors import GrantError, StaleToken
from rolegate.tokens.jwks import PATH as JWKS_PATH
from rolegate.tokens.jwks import jwks_handler
from rolegate.tokens.keys import KeyRing, SigningKey, thumbprint
from rolegate.tokens.service import TokenGrant, TokenService
from rolegate.tokens.stage import TokenStage, audience_for
from rolegate.tokens.verify import InvalidToken, TokenVerifier

__all__ = [
    "ASSERTION_HEADER",
    "ASSERTION_HEADERS",
    "AssertionMinter",
    "AssertionTooLarge",
    "GrantError",
    "InvalidToken",
    "JWKS_PATH",
    "KeyRing",
    "REVOKE_PATH",
    "SigningKey",
    "StaleToken",
    "TOKEN_PATH",
    "TokenEndpoint",
    "TokenGrant",
    "TokenService",
    "TokenStage",
    "TokenVerifier",
    "assertion_headers",
    "audience_for",
    "compact_permissions",
    "has_permission",
    "header_value",
    "jwks_handler",
    "thumbprint",
]
