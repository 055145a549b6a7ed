"""``oidc`` and ``session``: company sign-in and browser sessions."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from rolegate.config.types import Duration, Section

_SAFE_ALGS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}


class OIDCConfig(Section):
    issuer: str
    client_id: str
    client_secret: SecretStr | None = None
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    algorithms: tuple[str, ...] = ("RS256", "ES256", "PS256", "EdDSA")
    clock_skew: Duration = timedelta(seconds=60)
    userinfo: bool = False
    # Audiences accepted on the IdP's own JWT access tokens presented as bearer tokens.
    access_token_audience: tuple[str, ...] = ()
    # Refetch the IdP's JWKS on an unknown kid at most this often.
    jwks_min_refresh: Duration = timedelta(seconds=30)
    timeout: Duration = timedelta(seconds=10)

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("issuer must be the provider's https:// URL")
        return value.rstrip("/")

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in value:
            raise ValueError("scopes must include openid")
        return value

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if a not in _SAFE_ALGS]
        if bad:
            raise ValueError(f"unsupported or unsafe algorithms {bad}; choose from {sorted(_SAFE_ALGS)}")
        return value


class SessionConfig(Section):
    secret: SecretStr
    lifetime: Duration = timedelta(hours=12)
    idle_timeout: Duration = timedelta(hours=2)
    cookie_name: str = Field(default="rolegate_session", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    domain: str | None = None
    same_site: Literal["Lax", "Strict"] = "Lax"
    # Refresh the provider's tokens (with its refresh token) when they expire within this margin.
    refresh_before: Duration = timedelta(seconds=60)

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("session.secret must be at least 32 characters (use e.g. `openssl rand -base64 48`)")
        return value
