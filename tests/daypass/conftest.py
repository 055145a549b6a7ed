"""rolegate in-process (real SQLite Store, real audit log, real pipeline) in front of the lab backend, with a
building-scoped day-pass config and a clock the test moves. A fresh Store per test."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

import rolegate.app as rolegate_app
from rolegate.authz import Identity, decide
from rolegate.config.loader import load_config_text
from rolegate.identity.daypass import IssuedPass, add_daypass_routes, daypass_token_redeemer, issue_pass
from rolegate.server.runtime import Runtime, RuntimeHolder
from rolegate_lab import free_port, lab_client_session

HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}
SECRET = "daypass-tests-session-secret-" + "d" * 32
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def daypass_config(
    url: str, backend_url: str, tmp: Path, *, redeem_rate: str = "60/min", template: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Buildings inside clients; a building's responsible issues passes for their building only."""
    port = urllib.parse.urlsplit(url).port
    prices = {
        "fields": ["workorders[*].price", "workorders[*].lines[*].price", "price", "lines[*].price"],
        "unless": "pricing:view",
    }
    return {
        "server": {"listen": f"127.0.0.1:{port}", "public_url": url, "workers": 1},
        "storage": {"url": f"sqlite:///{tmp}/rolegate.db"},
        "session": {"secret": SECRET},
        "scopes": {
            "client": {"description": "client"},
            "building": {"parent": "client", "members": {"a": "acme", "b": "acme", "c": "globex"}},
        },
        "permissions": ["workorders:view", "pricing:view", "documents:view", "invoices:view"],
        "roles": {
            "responsible": {
                "permissions": ["workorders:view", "pricing:view", "documents:view", "rolegate:daypass:issue"]
            },
            "subcontractor": {
                "permissions": ["workorders:view", "documents:view"],
                "deny": ["pricing:view", "invoices:view"],
            },
            "finance": {"permissions": ["invoices:view", "pricing:view"]},
        },
        "bindings": [
            {"group": "responsible-a", "role": "responsible", "scope": "building:a"},
            {"group": "finance", "role": "finance"},
        ],
        "upstreams": {"app": {"url": backend_url}},
        "routes": [
            {
                "path": "/workorders",
                "methods": ["GET"],
                "permission": "workorders:view",
                "scope": "building:{query.building}",
                "upstream": "app",
                "redact": prices,
            },
            {
                "path": "/buildings/{building}/dashboard",
                "methods": ["GET"],
                "permission": "workorders:view",
                "scope": "building:{building}",
                "upstream": "app",
            },
            {
                "path": "/buildings/{building}/documents/**",
                "methods": ["GET"],
                "permission": "documents:view",
                "scope": "building:{building}",
                "upstream": "app",
            },
            {"path": "/invoices/**", "methods": ["GET"], "permission": "invoices:view", "upstream": "app"},
            {"path": "/me", "mode": "authenticated", "upstream": "app"},
            {"path": "/public/**", "mode": "public", "upstream": "app"},
        ],
        "daypass": {
            "contact": "the site office (+31 20 555 0100)",
            "redeem_rate": redeem_rate,
            "templates": {
                "subcontractor": template
                or {
                    "role": "subcontractor",
                    "scopes": ["building"],
                    "max_lifetime": "24h",
                    "expires": "end_of_day",
                    "timezone": "Europe/Amsterdam",
                    "devices": 1,
                    "require": ["name", "company", "reason"],
                    "landing": "/workorders?building={building}",
                }
            },
        },
        "audit": {"sinks": ["store"], "reads": {"sample": 1.0}},
    }


class FakeClock:
    """The time every stage reads (bindings' until, pass expiry); only the test moves it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def set(self, now: float) -> None:
        self.now = now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _build_reserved_with_daypass(original: Callable[..., Any]) -> Callable[..., Any]:
    """Until app.py mounts the day-pass routes itself, add them; a no-op once it does."""

    def build(holder: RuntimeHolder):
        reserved = original(holder)
        mounted = any(getattr(r, "canonical", "") == "/pass/{code}" for r in reserved.router.resources())
        if not mounted:
            add_daypass_routes(reserved, holder)
        return reserved

    return build


@dataclass
class Served:
    url: str
    holder: RuntimeHolder
    server: TestServer
    clock: FakeClock
    tmp: Path
    clients: list[aiohttp.ClientSession] = field(default_factory=list)

    @property
    def runtime(self) -> Runtime:
        return self.holder.runtime

    def client(self) -> aiohttp.ClientSession:
        """A new device: its own cookie jar."""
        http = lab_client_session()
        self.clients.append(http)
        return http

    def may_issue_as(self, username: str, groups: list[str]) -> Callable[[str], bool]:
        """The admin API's issuer check: does this staff member hold rolegate:daypass:issue at the scope?"""
        identity = Identity(username, groups)
        return lambda scope: (
            decide(self.runtime.policy, identity, "rolegate:daypass:issue", scope, now=self.clock()).allowed
        )

    async def issue(
        self,
        *,
        scope: str = "building:a",
        issuer: str = "carol",
        groups: list[str] | None = None,
        template: str = "subcontractor",
        name: str = "Jan de Vries",
        company: str = "Vries Installaties",
        reason: str = "replace sprinkler heads",
    ) -> IssuedPass:
        runtime = self.runtime
        return await issue_pass(
            runtime.store,
            runtime.board,
            runtime.config,
            template=template,
            scope=scope,
            name=name,
            company=company,
            reason=reason,
            issuer=issuer,
            issuer_may_issue=self.may_issue_as(issuer, groups or ["responsible-a"]),
            now=self.clock(),
            audit=runtime.audit,
        )

    async def audit_events(self, action: str | None = None) -> list[dict[str, Any]]:
        import json

        await self.runtime.audit.flush()
        rows = await self.runtime.store.audit_rows(limit=100000, kind="daypass")
        events = [json.loads(r["body"]) for r in rows]
        return [e for e in events if action is None or e.get("action") == action]


async def start_served(tmp: Path, backend_url: str, *, now: float, **options: Any) -> Served:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    text = yaml.safe_dump(daypass_config(url, backend_url, tmp, **options), sort_keys=False)
    (tmp / "rolegate.yaml").write_text(text)
    config = load_config_text(text, base_dir=tmp)
    runtime = await Runtime.create(config, base_dir=tmp)
    clock = FakeClock(now)
    # The Runtime's clock drives every time decision; the identity stage reads it (and the audit log) too.
    runtime.clock = clock
    runtime.identity.clock = clock
    runtime.identity.audit = runtime.audit
    holder = RuntimeHolder(runtime, str(tmp / "rolegate.yaml"))
    if runtime.tokens is not None and runtime.tokens.endpoint.redeem_daypass is None:
        # Until the Runtime wires the token endpoint's day-pass grant itself.
        runtime.tokens.endpoint.redeem_daypass = daypass_token_redeemer(holder)
    original = rolegate_app.build_reserved_app
    rolegate_app.build_reserved_app = _build_reserved_with_daypass(original)
    try:
        app = rolegate_app.build_app(holder)
    finally:
        rolegate_app.build_reserved_app = original
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    await runtime.refresh(force=True)
    return Served(url, holder, server, clock, tmp)


@pytest.fixture
async def make_served(lab_backend, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await make_served(now=..., redeem_rate=..., template=...)``; all closed after the test."""
    import time

    started: list[Served] = []

    async def make(*, now: float | None = None, **options: Any) -> Served:
        sub = tmp_path / f"rg{len(started)}"
        sub.mkdir()
        served = await start_served(sub, lab_backend.url, now=time.time() if now is None else now, **options)
        started.append(served)
        return served

    yield make
    for served in started:
        for http in served.clients:
            await http.close()
        await served.server.close()
        await served.runtime.close()


@pytest.fixture
async def served(make_served) -> Served:
    return await make_served()


async def redeem(served: Served, http: aiohttp.ClientSession, link: str) -> aiohttp.ClientResponse:
    """What a phone does: open the link (the confirmation page), then tap the button (POST + CSRF)."""
    async with http.get(link, headers=HTML) as page:
        assert page.status == 200, await page.text()
        token = CSRF_FIELD.search(await page.text()).group(1)
    async with http.post(
        link, data={"csrf": token}, headers={**HTML, "Origin": served.url}, allow_redirects=False
    ) as resp:
        await resp.read()
        return resp
