"""Bearer tokens that are the provider's own JWT access tokens (RFC 9068), for API clients."""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import TYPE_CHECKING, Any

import jwt
from aiohttp import web

from rolegate.config import Config
from rolegate.identity.authenticator import Authenticator, BearerAuthenticator, bearer_token
from rolegate.identity.errors import SignInRequired
from rolegate.identity.principal import Principal, principal_from_claims
from rolegate.identity.provider_jwt import InvalidProviderToken
from rolegate.identity.registry import register

if TYPE_CHECKING:
    from rolegate.identity.stage import IdentityStage

log = logging.getLogger("rolegate.identity.bearer")


class IdPAccessTokenAuthenticator(BearerAuthenticator):
    name = "idp_access_token"

    async def authenticate(self, request: web.BaseRequest) -> Principal | None:
        token = bearer_token(request)
        if token is None:
            return None
        stage = self.stage
        oidc = stage.config.oidc
        assert oidc is not None and stage.provider_tokens is not None
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None  # not a JWT: some other authenticator's token (or nobody's)
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or not hmac.compare_digest(issuer.rstrip("/").encode(), oidc.issuer.encode()):
            return None  # issued by someone else: not ours to judge
        try:
            claims = await stage.provider_tokens.verify_access_token(token, oidc.access_token_audience)
            if _an_apps_own(stage.config, claims):
                raise ValueError("a client-credentials token of an app (apps:) is not a user's")
            principal = principal_from_claims(
                claims,
                username_claim=oidc.username_claim,
                groups_claim=oidc.groups_claim,
                auth="bearer",
                expires_at=float(claims["exp"]),
            )
        except (InvalidProviderToken, ValueError) as exc:
            raise SignInRequired(f"provider access token refused: {exc}", bearer_error="invalid_token") from None
        # An opaque reference for logs/audit: a hash of the jti (or of the token) never the token itself..
        principal.session_id = _token_ref(claims.get("jti"), token)
        return principal


def _an_apps_own(config: Config, claims: dict[str, Any]) -> bool:
    """A configured app's client-credentials token (``sub`` = its ``client_id``): never a user, whatever the
    username claim says (an app authenticates to the admin API only, as itself)."""
    client = claims.get("client_id")
    return (
        isinstance(client, str)
        and claims.get("sub") == client
        and any(app.client_id == client for app in getattr(config, "apps", {}).values())
    )


def _token_ref(jti: object, token: str) -> str:
    basis = jti if isinstance(jti, str) and jti else token
    return "at-" + hashlib.sha256(basis.encode()).hexdigest()[:24]


@register("idp_access_token", order=20)
def _factory(stage: "IdentityStage") -> Authenticator | None:
    if stage.config.oidc is None:
        return None
    return IdPAccessTokenAuthenticator(stage)
