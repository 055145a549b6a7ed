"""The relying-party side of the authorization code flow (OIDC Core §3.1) with PKCE (RFC 7636).

Protocol pieces come from authlib's core (grant URI, token request body, client authentication,
PKCE challenge, token generation); aiohttp carries the requests, since authlib has no aiohttp glue.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

# authlib ships no type hints (no py.typed, no types-Authlib among the dev dependencies): its names are Any here.
from authlib.common.security import generate_token  # type: ignore[import-untyped]
from authlib.oauth2.auth import ClientAuth  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request  # type: ignore[import-untyped]
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]

from rolegate.config.sections.identity import OIDCConfig
from rolegate.identity.discovery import HttpSource, ProviderMetadata
from rolegate.identity.errors import ProviderUnavailable

log = logging.getLogger("rolegate.identity.oidc")


class TokenRefused(Exception):
    """The provider answered the token request with an OAuth error (e.g. invalid_grant): final."""

    def __init__(self, error: str, status: int) -> None:
        super().__init__(f"token endpoint refused: {error} (HTTP {status})")
        self.error = error
        self.status = status


class LoginRequest:
    """What one sign-in attempt must remember until the callback: state, nonce, PKCE verifier, target."""

    __slots__ = ("state", "nonce", "code_verifier", "return_to")

    def __init__(self, return_to: str) -> None:
        # 43+ characters of [A-Za-z0-9]: ~256 bits each (RFC 7636 §4.1 wants 43..128 for the verifier).
        self.state = generate_token(43)
        self.nonce = generate_token(43)
        self.code_verifier = generate_token(64)
        self.return_to = return_to

    def to_dict(self) -> dict[str, str]:
        return {"s": self.state, "n": self.nonce, "v": self.code_verifier, "r": self.return_to}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LoginRequest | None":
        values = [data.get(k) for k in ("s", "n", "v", "r")]
        if not all(isinstance(v, str) and v for v in values):
            return None
        req = cls.__new__(cls)
        req.state, req.nonce, req.code_verifier, req.return_to = values  # type: ignore[assignment]
        return req


class OIDCClient:
    """Talks to the provider's endpoints on behalf of rolegate (the confidential client)."""

    __slots__ = ("config", "metadata", "http", "redirect_uri", "_auth", "_timeout")

    def __init__(self, config: OIDCConfig, metadata: ProviderMetadata, http: HttpSource, redirect_uri: str) -> None:
        self.config = config
        self.metadata = metadata
        self.http = http
        self.redirect_uri = redirect_uri
        secret = config.client_secret.get_secret_value() if config.client_secret else None
        self._auth = ClientAuth(config.client_id, secret, "client_secret_basic" if secret else "none")
        self._timeout = config.timeout.total_seconds()

    async def authorization_url(self, login: LoginRequest) -> str:
        doc = await self.metadata.get()
        url: str = prepare_grant_uri(
            doc["authorization_endpoint"],
            self.config.client_id,
            "code",
            redirect_uri=self.redirect_uri,
            scope=list(self.config.scopes),
            state=login.state,
            nonce=login.nonce,
            code_challenge=create_s256_code_challenge(login.code_verifier),
            code_challenge_method="S256",
        )
        return url

    async def exchange_code(self, code: str, login: LoginRequest) -> dict[str, Any]:
        body = prepare_token_request(
            "authorization_code", redirect_uri=self.redirect_uri, code=code, code_verifier=login.code_verifier
        )
        return await self._token_request(body)

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        body = prepare_token_request("refresh_token", refresh_token=refresh_token)
        return await self._token_request(body)

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        doc = await self.metadata.get()
        endpoint = doc.get("userinfo_endpoint")
        if not isinstance(endpoint, str):
            raise ProviderUnavailable("the provider advertises no userinfo_endpoint")
        try:
            data = await self.http.get_json(
                endpoint, timeout=self._timeout, headers={"Authorization": f"Bearer {access_token}"}
            )
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise ProviderUnavailable(f"userinfo: {exc}") from None
        if not isinstance(data, dict):
            raise ProviderUnavailable("userinfo answered something other than a JSON object")
        return data

    async def end_session_endpoint(self) -> str | None:
        try:
            doc = await self.metadata.get()
        except ProviderUnavailable:
            return None
        endpoint = doc.get("end_session_endpoint")
        return endpoint if isinstance(endpoint, str) else None

    async def _token_request(self, body: str) -> dict[str, Any]:
        doc = await self.metadata.get()
        endpoint = doc["token_endpoint"]
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        endpoint, headers, body = self._auth.prepare("POST", endpoint, headers, body)
        try:
            async with self.http.session.post(
                endpoint,
                data=body.encode(),
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as resp:
                status = resp.status
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.metadata.forget()
            raise ProviderUnavailable(f"token endpoint: {exc}") from None
        if status == 200 and isinstance(data, dict) and isinstance(data.get("access_token"), str):
            if str(data.get("token_type", "")).lower() != "bearer":
                raise TokenRefused("unsupported token_type", status)
            return data
        if 400 <= status < 500 and isinstance(data, dict) and isinstance(data.get("error"), str):
            raise TokenRefused(data["error"], status)
        raise ProviderUnavailable(f"token endpoint answered HTTP {status}")
