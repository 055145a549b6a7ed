"""rolegate in-process in front of the lab's real IdP and backend, on a port the IdP already knows."""

from __future__ import annotations

import base64
import hashlib
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from rolegate.app import build_app
from rolegate.config import Config
from rolegate.config.loader import load_config_text
from rolegate.server.runtime import Runtime, RuntimeHolder
from rolegate_lab import DEFAULT_AUDIENCE, IdP, idp_login, lab_client_session

SESSION_SECRET = "test-session-secret-" + "x" * 40
HTML = {"Accept": "text/html,application/xhtml+xml"}
JSON = {"Accept": "application/json"}


def rolegate_yaml(
    *,
    url: str,
    idp: IdP,
    backend_url: str,
    db: Path,
    oidc_extra: str = "",
    session_extra: str = "",
    server_extra: str = "",
) -> str:
    port = urllib.parse.urlsplit(url).port
    return f"""
server:
  listen: 127.0.0.1:{port}
  public_url: {url}
  allowed_hosts: [apps.example.test]
{server_extra}
storage:
  url: sqlite:///{db}
oidc:
  issuer: {idp.issuer}
  client_id: rolegate
  client_secret: {idp.client()["client_secret"]}
  scopes: [openid, profile, email, groups]
  access_token_audience: [{DEFAULT_AUDIENCE}]
{oidc_extra}
session:
  secret: {SESSION_SECRET}
{session_extra}
permissions: [invoices:view]
upstreams:
  backend: {{url: {backend_url}}}
routes:
  - {{path: /public/**, mode: public, upstream: backend}}
  - {{path: /me-echo/**, mode: authenticated, upstream: backend}}
  - {{path: /workorders/**, mode: authenticated, upstream: backend}}
  - {{path: /invoices/**, permission: invoices:view, upstream: backend}}
"""


@dataclass
class Rolegate:
    url: str
    holder: RuntimeHolder
    server: TestServer
    idp: IdP
    base_dir: Path
    _retired: list = field(default_factory=list)

    @property
    def config(self) -> Config:
        return self.holder.runtime.config

    @property
    def stage(self):
        return self.holder.runtime.identity

    def swap(self, text: str) -> None:
        """Replace the running config (like a reload); the old runtime is closed by the fixture."""
        old = self.holder.runtime
        self.holder.runtime = Runtime.build(
            load_config_text(text, base_dir=self.base_dir), generation=old.generation + 1, base_dir=self.base_dir
        )
        self._retired.append(old)


async def start_rolegate(url: str, idp: IdP, backend_url: str, base_dir: Path, **yaml_args: Any) -> Rolegate:
    text = rolegate_yaml(url=url, idp=idp, backend_url=backend_url, db=base_dir / "rolegate.db", **yaml_args)
    config = load_config_text(text, base_dir=base_dir)
    holder = RuntimeHolder(Runtime.build(config, base_dir=base_dir))
    port = urllib.parse.urlsplit(url).port
    server = TestServer(build_app(holder), host="127.0.0.1", port=port)
    await server.start_server()
    rg = Rolegate(url=url, holder=holder, server=server, idp=idp, base_dir=base_dir)
    return rg


async def stop_rolegate(rg: Rolegate) -> None:
    await rg.server.close()
    for runtime in [*rg._retired, rg.holder.runtime]:
        await runtime.close()


@pytest.fixture
async def rolegate(lab_idp: IdP, lab_backend, rolegate_url: str, tmp_path: Path) -> AsyncIterator[Rolegate]:
    """rolegate on the session's reserved port, a fresh store per test."""
    rg = await start_rolegate(rolegate_url, lab_idp, lab_backend.url, tmp_path)
    yield rg
    await stop_rolegate(rg)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with lab_client_session() as session:
        yield session


async def sign_in(
    http: aiohttp.ClientSession,
    rg: Rolegate,
    username: str = "alice",
    password: str = "demo",
    rd: str = "/me-echo/start",
) -> aiohttp.ClientResponse:
    """Login through rolegate and the IdP's own form; returns rolegate's (unfollowed) answer to the callback."""
    async with http.get(f"{rg.url}/.rolegate/login", params={"rd": rd}, headers=HTML, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        location = resp.headers["Location"]
    callback = await idp_login(http, location, username, password)
    async with http.get(callback.url, headers=HTML, allow_redirects=False) as resp:
        await resp.read()
        return resp


SignIn = Callable[..., Awaitable[aiohttp.ClientResponse]]


async def provider_tokens(
    http: aiohttp.ClientSession, idp: IdP, rolegate_url: str, *, username: str = "alice", resource: str | None = None
) -> dict[str, Any]:
    """Act as the registered client ourselves to get the IdP's tokens (JWT access token) for bearer tests."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = f"{rolegate_url}/.rolegate/callback"
    params = {
        "response_type": "code",
        "client_id": "rolegate",
        "redirect_uri": redirect_uri,
        "scope": "openid profile email groups",
        "state": secrets.token_urlsafe(16),
        "nonce": secrets.token_urlsafe(16),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if resource:
        params["resource"] = resource
    url = idp.discovery["authorization_endpoint"] + "?" + urllib.parse.urlencode(params)
    callback = await idp_login(http, url, username, "demo", callback_prefix=redirect_uri)
    assert callback.code, callback
    data = {
        "grant_type": "authorization_code",
        "code": callback.code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    if resource:
        data["resource"] = resource
    basic = base64.b64encode(f"rolegate:{idp.client()['client_secret']}".encode()).decode()
    async with http.post(
        idp.discovery["token_endpoint"], data=data, headers={"Authorization": f"Basic {basic}"}
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body
