"""rolegate in-process with the building-safety config (seed 001), the lab's slapd as directory and the lab's
IdP for sign-in, on the session's reserved port (the IdP knows its callback). A fresh store per test."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from rolegate.app import build_app
from rolegate.config.loader import load_config_text
from rolegate.directory import DirectorySync
from rolegate.server.runtime import Runtime, RuntimeHolder
from rolegate_lab import DEFAULT_AUDIENCE, idp_login, lab_client_session

REPO = Path(__file__).resolve().parents[2]
API = "/.rolegate/api/v1"
HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}


def admin_config(url: str, idp: Any, slapd: Any, backend_url: str, tmp: Path) -> str:
    config = yaml.safe_load((REPO / "config/examples/building-safety.yaml").read_text())
    port = urllib.parse.urlsplit(url).port
    config["server"] = {"listen": f"127.0.0.1:{port}", "public_url": url, "workers": 1}
    config["storage"] = {"url": f"sqlite:///{tmp}/rolegate.db"}
    config["session"] = {"secret": "admin-tests-session-secret-" + "a" * 32}
    config["oidc"] = {
        "issuer": idp.issuer,
        "client_id": "rolegate",
        "client_secret": idp.client()["client_secret"],
        "scopes": ["openid", "profile", "email", "groups"],
        "algorithms": ["ES256", "RS256"],
        "access_token_audience": [DEFAULT_AUDIENCE],
    }
    config["directory"] = {
        "url": slapd.url,
        "bind_dn": slapd.service_dn,
        "bind_password": slapd.service_password,
        "users": {"base": "ou=people,dc=example,dc=com", "disabled_filter": "(employeeType=disabled)"},
        "groups": {"base": "ou=groups,dc=example,dc=com"},
        "timeout": "5s",
        "connect_timeout": "2s",
    }
    for upstream in config["upstreams"].values():
        upstream["url"] = backend_url
    config["audit"] = {"sinks": ["store"], "reads": {"sample": 1.0}}
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class Served:
    url: str
    holder: RuntimeHolder
    server: TestServer

    @property
    def runtime(self) -> Runtime:
        return self.holder.runtime


async def start_served(url: str, idp: Any, slapd: Any, backend_url: str, tmp: Path) -> Served:
    config = load_config_text(admin_config(url, idp, slapd, backend_url, tmp), base_dir=tmp)
    runtime = await Runtime.create(config, base_dir=tmp)
    # One full directory sync, as the master's runner would do, then let the worker load it.
    sync = DirectorySync(config, runtime.store)
    sync.board = runtime.board
    result = await sync.sync_now(full=True)
    assert result.ok, result.as_dict()
    await runtime.refresh(force=True)
    holder = RuntimeHolder(runtime)
    server = TestServer(build_app(holder), host="127.0.0.1", port=urllib.parse.urlsplit(url).port)
    await server.start_server()
    return Served(url, holder, server)


@pytest.fixture
async def served(lab_idp, lab_slapd, lab_backend, rolegate_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    s = await start_served(rolegate_url, lab_idp, lab_slapd, lab_backend.url, tmp_path)
    yield s
    await s.server.close()
    await s.runtime.close()


class Client:
    """A signed-in user's HTTP session: cookie jar plus the CSRF token from /me."""

    def __init__(self, http: aiohttp.ClientSession, base: str, csrf: str) -> None:
        self.http = http
        self.base = base
        self.csrf = csrf

    async def call(
        self, method: str, path: str, json: Any = None, headers: dict[str, str] | None = None, csrf: bool = True
    ) -> tuple[int, Any, Any]:
        h = {**JSON, **(headers or {})}
        if csrf and method not in ("GET", "HEAD"):
            h["X-Rolegate-CSRF"] = self.csrf
        async with self.http.request(method, self.base + path, json=json, headers=h, allow_redirects=False) as resp:
            text = await resp.text()
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = text
            return resp.status, body, resp.headers


async def sign_in(base: str, username: str, password: str = "demo") -> Client:
    http = lab_client_session()
    async with http.get(f"{base}/.rolegate/login", params={"rd": "/"}, headers=HTML, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        location = resp.headers["Location"]
    callback = await idp_login(http, location, username, password)
    async with http.get(callback.url, headers=HTML, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
    async with http.get(f"{base}{API}/me", headers=JSON) as resp:
        assert resp.status == 200, await resp.text()
        csrf = resp.headers["X-Rolegate-CSRF"]
    return Client(http, base, csrf)


@pytest.fixture
async def clients(served: Served) -> AsyncIterator[Any]:
    opened: list[Client] = []

    async def login(username: str) -> Client:
        client = await sign_in(served.url, username)
        opened.append(client)
        return client

    yield login
    for c in opened:
        await c.http.close()
