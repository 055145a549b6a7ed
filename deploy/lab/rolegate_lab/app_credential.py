"""The field-service backend's machine credential for rolegate's admin API (``apps:`` in the rolegate config).

Read from the environment, one of:

* ``ROLEGATE_APP_KEY=rgk_…`` — an API key made with ``rolegate apps key create --app fieldservice``;
* ``ROLEGATE_APP_CLIENT_ID``, ``ROLEGATE_APP_CLIENT_SECRET``, ``ROLEGATE_APP_TOKEN_URL`` and
  ``ROLEGATE_APP_RESOURCE`` — the OAuth client-credentials grant at the IdP, asking for a JWT access token
  for rolegate's apps audience (RFC 8707 ``resource``); fetched on first use, renewed before it expires.

and ``ROLEGATE_ADMIN_URL``: rolegate's public URL (the API is under ``/.rolegate/api/v1``).

    credential = AppCredential.from_env()
    if credential is not None:
        status, body = await credential.call(session, "PUT", "/scope-members/workorder:1", {"parent": "building:a"})
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

API = "/.rolegate/api/v1"
ENV_NAMES = ("ROLEGATE_ADMIN_URL", "ROLEGATE_APP_KEY", "ROLEGATE_APP_CLIENT_ID", "ROLEGATE_APP_CLIENT_SECRET",
             "ROLEGATE_APP_TOKEN_URL", "ROLEGATE_APP_RESOURCE")


class AppCredential:
    """An API key, or client-credentials settings; ``authorization()`` is the header value to send."""

    def __init__(self, admin_url: str, *, api_key: str | None = None, client_id: str | None = None,
                 client_secret: str | None = None, token_url: str | None = None, resource: str | None = None) -> None:
        if api_key is None and not (client_id and client_secret and token_url):
            raise ValueError("an app credential is an API key, or client_id + client_secret + token_url")
        self.admin_url = admin_url.rstrip("/")
        self.api_key = api_key
        self.client_id, self.client_secret = client_id, client_secret
        self.token_url, self.resource = token_url, resource
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "AppCredential | None":
        """The credential the environment describes, or None when it names none (or no ROLEGATE_ADMIN_URL)."""
        env = os.environ if env is None else env
        admin_url = env.get("ROLEGATE_ADMIN_URL")
        if not admin_url:
            return None
        if env.get("ROLEGATE_APP_KEY"):
            return cls(admin_url, api_key=env["ROLEGATE_APP_KEY"])
        if env.get("ROLEGATE_APP_CLIENT_ID") and env.get("ROLEGATE_APP_CLIENT_SECRET") and env.get("ROLEGATE_APP_TOKEN_URL"):
            return cls(admin_url, client_id=env["ROLEGATE_APP_CLIENT_ID"], client_secret=env["ROLEGATE_APP_CLIENT_SECRET"],
                       token_url=env["ROLEGATE_APP_TOKEN_URL"], resource=env.get("ROLEGATE_APP_RESOURCE") or None)
        return None

    @property
    def kind(self) -> str:
        return "api_key" if self.api_key is not None else "client_credentials"

    async def authorization(self, session: aiohttp.ClientSession) -> str:
        if self.api_key is not None:
            return f"Bearer {self.api_key}"
        async with self._lock:
            if self._token is None or time.time() > self._expires - 30:
                await self._fetch(session)
        return f"Bearer {self._token}"

    async def _fetch(self, session: aiohttp.ClientSession) -> None:
        data = {"grant_type": "client_credentials"}
        if self.resource:
            data["resource"] = self.resource
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        async with session.post(self.token_url, data=data, headers={"Authorization": f"Basic {basic}"}) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200 or "access_token" not in body:
                raise RuntimeError(f"client-credentials grant refused: {resp.status} {body.get('error')}")
        self._token = body["access_token"]
        self._expires = time.time() + float(body.get("expires_in") or 60)

    async def call(self, session: aiohttp.ClientSession, method: str, path: str,
                   body: Any = None) -> tuple[int, Any]:
        """One admin-API call (``path`` below ``/.rolegate/api/v1``): (status, JSON answer or text)."""
        headers = {"Authorization": await self.authorization(session), "Accept": "application/json"}
        async with session.request(method, f"{self.admin_url}{API}{path}", json=body, headers=headers) as resp:
            try:
                return resp.status, await resp.json(content_type=None)
            except ValueError:
                return resp.status, await resp.text()
