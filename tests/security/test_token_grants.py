"""Issue 16, item 3: every token grant re-checks its subject exactly like a request does; and item 8:
the token endpoint refuses duplicate JSON keys.

rolegate in-process with its real pieces: the building-safety config, a SQLite Store, the audit log, this
test's own slapd (so a user can be disabled or deleted) synced by the real DirectorySync, the lab IdP for
sign-in, day passes issued and revoked through the admin API. Each refused grant must be RFC 6749's
``invalid_grant`` (400) saying no more than an unknown token would, and land in the audit trail.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestServer

from rolegate.app import build_app
from rolegate.config.loader import load_config_text
from rolegate.directory import DirectorySync
from rolegate.server.runtime import Runtime, RuntimeHolder
from rolegate_lab import free_port, lab_client_session, rolegate_client
from tests.admin.conftest import API, JSON, Client, sign_in

pytestmark = pytest.mark.lab

TOKEN = "/.rolegate/token"
REVOKE = "/.rolegate/token/revoke"
SESSION_GRANT = "urn:rolegate:session"
DAYPASS_GRANT = "urn:rolegate:daypass"


def token_config(url: str, idp: Any, slapd: Any, backend_url: str, tmp: Path) -> dict[str, Any]:
    """Sign-in by the lab IdP, groups from this test's slapd; carol issues passes for building a, alice
    (admin) for all; every staff member may read the dashboards and the two authenticated routes."""
    return {
        "server": {"listen": f"127.0.0.1:{urllib.parse.urlsplit(url).port}", "public_url": url, "workers": 1},
        "storage": {"url": f"sqlite:///{tmp}/rolegate.db"},
        "oidc": {
            "issuer": idp.issuer,
            "client_id": "rolegate",
            "client_secret": idp.client()["client_secret"],
            "scopes": ["openid", "profile", "email", "groups"],
            "algorithms": ["ES256", "RS256"],
        },
        "session": {"secret": "token-grant-tests-session-secret-" + "t" * 32},
        "directory": {
            "url": slapd.url,
            "bind_dn": slapd.service_dn,
            "bind_password": slapd.service_password,
            "users": {"base": f"ou=people,{slapd.base_dn}", "disabled_filter": "(employeeType=disabled)"},
            "groups": {"base": f"ou=groups,{slapd.base_dn}"},
            "timeout": "5s",
            "connect_timeout": "2s",
        },
        "scopes": {"client": {}, "building": {"parent": "client", "members": {"a": "acme", "b": "acme"}}},
        "permissions": ["dashboard:view"],
        "roles": {
            "user": {"permissions": ["dashboard:view"]},
            "responsible": {"permissions": ["dashboard:view", "rolegate:daypass:issue"]},
            "admin": {"permissions": ["dashboard:view", "rolegate:daypass:issue"]},
            "subcontractor": {"permissions": ["dashboard:view"]},
        },
        "bindings": [
            {"group": "bs-users", "role": "user"},
            {"group": "bs-admins", "role": "admin"},
            {"group": "bs-responsible-a", "role": "responsible", "scope": "building:a"},
        ],
        "upstreams": {"app": {"url": backend_url}},
        "routes": [
            {
                "path": "/buildings/{building}/dashboard",
                "methods": ["GET"],
                "permission": "dashboard:view",
                "scope": "building:{building}",
                "upstream": "app",
            },
            # The issue's "authenticated routes, /sse": any signed-in caller passes them.
            {"path": "/me", "methods": ["GET"], "mode": "authenticated", "upstream": "app"},
            {"path": "/sse", "methods": ["GET"], "mode": "authenticated", "upstream": "app"},
        ],
        "daypass": {
            "templates": {
                "subcontractor": {
                    "role": "subcontractor",
                    "scopes": ["building"],
                    "max_lifetime": "24h",
                    "expires": "end_of_day",
                    "timezone": "Europe/Amsterdam",
                    "devices": 1,
                    "require": ["name", "company", "reason"],
                }
            }
        },
        "audit": {"sinks": ["store"], "reads": {"sample": 1.0}},
    }


class Served:
    def __init__(self, url: str, holder: RuntimeHolder, server: TestServer, slapd: Any) -> None:
        self.url = url
        self.holder = holder
        self.server = server
        self.slapd = slapd
        self.opened: list[Any] = []

    @property
    def runtime(self) -> Runtime:
        return self.holder.runtime

    async def sync(self, *, full: bool) -> None:
        """One directory sync now, as the master's runner does, then the worker's refresh."""
        sync = DirectorySync(self.runtime.config, self.runtime.store)
        sync.board = self.runtime.board
        result = await sync.sync_now(full=full)
        assert result.ok, result.as_dict()
        await self.runtime.refresh(force=True)

    async def login(self, username: str) -> Client:
        client = await sign_in(self.url, username)
        self.opened.append(client.http)
        return client

    def app(self) -> Any:
        """A client without cookies (a mobile app)."""
        http = lab_client_session()
        self.opened.append(http)
        return http

    async def signin_failures(self) -> list[dict[str, Any]]:
        await self.runtime.audit.flush()
        rows = await self.runtime.store.audit_rows(limit=10000, kind="signin")
        events = [json.loads(r["body"]) for r in rows]
        return [e for e in events if e.get("method") == "token" and e.get("outcome") == "failed"]


@pytest.fixture
async def served(tmp_path: Path, make_idp, fresh_slapd, lab_backend) -> AsyncIterator[Served]:
    url = f"http://127.0.0.1:{free_port()}"
    idp = make_idp([rolegate_client(url)], slapd=fresh_slapd)
    config = token_config(url, idp, fresh_slapd, lab_backend.url, tmp_path)
    loaded = load_config_text(yaml.safe_dump(config, sort_keys=False), base_dir=tmp_path)
    runtime = await Runtime.create(loaded, base_dir=tmp_path)
    holder = RuntimeHolder(runtime)
    server = TestServer(build_app(holder), host="127.0.0.1", port=urllib.parse.urlsplit(url).port)
    await server.start_server()
    served = Served(url, holder, server, fresh_slapd)
    await served.sync(full=True)
    yield served
    for http in served.opened:
        await http.close()
    await server.close()
    await runtime.close()


async def post(
    http: Any, url: str, *, data: Any = None, raw: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    if raw is not None:
        kwargs: dict[str, Any] = {"data": raw, "headers": {"Content-Type": "application/json", **(headers or {})}}
    else:
        kwargs = {"data": data, "headers": headers or {}}
    async with http.post(url, allow_redirects=False, **kwargs) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else {})


async def exchange(served: Served, client: Client) -> tuple[int, dict[str, Any]]:
    """The browser's session grant, as its own page's script sends it."""
    return await post(
        client.http,
        served.url + TOKEN,
        data={"grant_type": SESSION_GRANT},
        headers={"X-Requested-With": "XMLHttpRequest", "Origin": served.url},
    )


async def refresh(served: Served, http: Any, refresh_token: str) -> tuple[int, dict[str, Any]]:
    return await post(http, served.url + TOKEN, data={"grant_type": "refresh_token", "refresh_token": refresh_token})


async def bearer_status(served: Served, http: Any, path: str, token: str) -> int:
    async with http.get(
        served.url + path, headers={**JSON, "Authorization": f"Bearer {token}"}, allow_redirects=False
    ) as resp:
        return resp.status  # not reading the body: /sse streams


async def unknown_refresh_answer(served: Served) -> dict[str, Any]:
    """What a made-up refresh token gets: a refused grant may say no more than this."""
    status, body = await refresh(served, served.app(), "rt1.x-unknown.unknown")
    assert status == 400
    return body


async def issue_pass(served: Served) -> tuple[str, str]:
    """carol (responsible for building a) issues a pass through the admin API: (pass id, code)."""
    carol = await served.login("carol")
    status, issued, _ = await carol.call(
        "POST",
        f"{API}/daypasses",
        json={
            "template": "subcontractor",
            "scope": "building:a",
            "name": "Sam",
            "company": "Fixit",
            "reason": "boiler",
        },
    )
    assert status == 201, issued
    return issued["id"], issued["link"].rsplit("/", 1)[1]


async def test_a_revoked_day_pass_gets_no_tokens_and_its_tokens_stop(served: Served) -> None:
    pass_id, code = await issue_pass(served)
    app = served.app()
    status, grant = await post(app, served.url + TOKEN, data={"grant_type": DAYPASS_GRANT, "code": code})
    assert status == 200, grant
    for path in ("/me", "/sse", f"{API}/me"):
        assert await bearer_status(served, app, path, grant["access_token"]) == 200, path
    # A refresh while the pass works rotates, as always.
    status, grant = await refresh(served, app, grant["refresh_token"])
    assert status == 200, grant

    alice = await served.login("alice")  # the admin revokes it in the admin API
    status, body, _ = await alice.call("DELETE", f"{API}/daypasses/{pass_id}")
    assert status == 200 and body["status"] == "revoked", body

    refused = await unknown_refresh_answer(served)
    for _ in range(3):  # "repeatable": never again
        status, body = await refresh(served, app, grant["refresh_token"])
        assert (status, body) == (400, refused), "a revoked pass's refresh token must be refused like an unknown one"
    # The access token issued before the revocation stops at the next request, everywhere.
    for path in ("/me", "/sse", f"{API}/me", "/buildings/a/dashboard"):
        assert await bearer_status(served, app, path, grant["access_token"]) in (401, 403), path
    status, body = await post(app, served.url + TOKEN, data={"grant_type": DAYPASS_GRANT, "code": code})
    assert status == 400 and body["error"] == "invalid_grant"

    failures = await served.signin_failures()
    mine = [e for e in failures if e["user"] == f"daypass:{pass_id}"]
    assert mine and all("revoked" in e["reason"] for e in mine), failures
    assert not [e for e in failures if code in json.dumps(e) or grant["refresh_token"] in json.dumps(e)]


@pytest.mark.parametrize("change", ["disabled", "deleted"])
async def test_a_user_the_directory_disables_or_forgets_gets_no_tokens(served: Served, change: str) -> None:
    user = {"disabled": "heidi", "deleted": "dave"}[change]
    browser = await served.login(user)
    status, grant = await exchange(served, browser)
    assert status == 200, grant
    status, grant = await refresh(served, browser.http, grant["refresh_token"])
    assert status == 200, grant

    dn = f"uid={user},ou=people,{served.slapd.base_dn}"
    if change == "disabled":
        served.slapd.ldapmodify(f"dn: {dn}\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n")
    else:
        served.slapd.ldapmodify(f"dn: {dn}\nchangetype: delete\n")
    await served.sync(full=True)

    refused = await unknown_refresh_answer(served)
    status, body = await refresh(served, browser.http, grant["refresh_token"])
    assert (status, body) == (400, refused), f"a {change} user's refresh token must be refused"
    status, body = await exchange(served, browser)  # the browser session still exists; the account does not
    assert status == 400 and body["error"] == "invalid_grant", body
    assert "disabled" not in json.dumps(body) and user not in json.dumps(body)
    # The refresh token stays dead once refused (its family is revoked).
    status, _ = await refresh(served, browser.http, grant["refresh_token"])
    assert status == 400
    for path in ("/me", "/buildings/a/dashboard"):
        assert await bearer_status(served, browser.http, path, grant["access_token"]) in (401, 403), path

    reasons = [e["reason"] for e in await served.signin_failures() if e["user"] == user]
    for grant_type in ("refresh_token", SESSION_GRANT):
        assert [r for r in reasons if r.startswith(f"{grant_type}: invalid_grant")], reasons


async def test_a_signed_out_session_ends_its_token_family(served: Served) -> None:
    browser = await served.login("heidi")
    status, grant = await exchange(served, browser)
    assert status == 200, grant
    status, grant = await refresh(served, browser.http, grant["refresh_token"])
    assert status == 200, grant  # the session lives: so does its family

    async with browser.http.get(served.url + "/.rolegate/logout", allow_redirects=False) as resp:
        assert resp.status in (302, 303), await resp.text()
    status, body = await exchange(served, browser)
    assert status == 400 and body["error"] == "invalid_grant"
    refused = await unknown_refresh_answer(served)
    status, body = await refresh(served, browser.http, grant["refresh_token"])
    assert (status, body) == (400, refused), "a family must not outlive the session it was started from"
    assert await bearer_status(served, browser.http, "/me", grant["access_token"]) == 401
    assert [e for e in await served.signin_failures() if e["user"] == "heidi"]


async def test_the_session_grant_takes_a_browser_session_not_a_bearer_token(served: Served) -> None:
    browser = await served.login("heidi")
    status, grant = await exchange(served, browser)
    assert status == 200, grant
    # The same person's access token, from a client without the cookie: not a session to exchange.
    status, body = await post(
        served.app(),
        served.url + TOKEN,
        data={"grant_type": SESSION_GRANT},
        headers={
            "X-Requested-With": "XMLHttpRequest",
            "Origin": served.url,
            "Authorization": f"Bearer {grant['access_token']}",
        },
    )
    assert status == 400 and body["error"] == "invalid_grant", body


async def test_duplicate_json_keys_are_an_invalid_request(served: Served) -> None:
    _pass_id, code = await issue_pass(served)
    app = served.app()
    status, grant = await post(app, served.url + TOKEN, data={"grant_type": DAYPASS_GRANT, "code": code})
    assert status == 200, grant
    rt = grant["refresh_token"]
    bodies = [
        b'{"grant_type": "refresh_token", "refresh_token": "%s", "refresh_token": "%s"}' % (rt.encode(), rt.encode()),
        b'{"grant_type": "password", "grant_type": "refresh_token", "refresh_token": "%s"}' % rt.encode(),
    ]
    for raw in bodies:
        status, body = await post(app, served.url + TOKEN, raw=raw)
        assert status == 400 and body["error"] == "invalid_request", (raw, status, body)
    status, body = await post(app, served.url + REVOKE, raw=b'{"token": "%s", "token": "x"}' % rt.encode())
    assert status == 400 and body["error"] == "invalid_request", body
    # Nothing was consumed or revoked by the refused requests; one key each is fine.
    status, body = await post(
        app, served.url + TOKEN, raw=json.dumps({"grant_type": "refresh_token", "refresh_token": rt}).encode()
    )
    assert status == 200, body


async def test_a_pass_token_is_checked_against_its_pass_at_every_request(tmp_path: Path) -> None:
    """The bearer check itself, apart from the permission version (which a revocation also moves): the
    version stands still here and the revocation does not tell the token service. Real Store, board, key
    ring, and the day-pass module's own issue and revoke."""
    from rolegate.errors import Unauthenticated
    from rolegate.identity.daypass import DaypassPrincipal, issue_pass, revoke_pass
    from rolegate.store.sqlite import SQLiteStore
    from rolegate.store.version_board import VersionBoard
    from rolegate.tokens import KeyRing, TokenService

    url = "https://rolegate.example.com"
    config = load_config_text(
        yaml.safe_dump(
            {
                "server": {"listen": "127.0.0.1:8443", "public_url": url},
                "storage": {"url": f"sqlite:///{tmp_path}/rolegate.db"},
                "session": {"secret": "token-grant-tests-session-secret-" + "t" * 32},
                "scopes": {"building": {}},
                "permissions": ["dashboard:view"],
                "roles": {"subcontractor": {"permissions": ["dashboard:view"]}},
                "upstreams": {"app": {"url": "http://127.0.0.1:9"}},
                "routes": [{"path": "/me", "mode": "authenticated", "upstream": "app"}],
                "daypass": {
                    "templates": {
                        "subcontractor": {
                            "role": "subcontractor",
                            "scopes": ["building"],
                            "expires": "8h",
                            "devices": 1,
                        }
                    }
                },
            }
        ),
        base_dir=tmp_path,
    )
    store = SQLiteStore(f"sqlite:///{tmp_path}/rolegate.db")
    await store.open()
    board = VersionBoard(tmp_path / "rolegate.db.board")
    try:
        keyring = KeyRing.from_config(store, config, board=board)
        service = TokenService(keyring=keyring, store=store, issuer=url, current_version=lambda: 1, board=board)
        issued = await issue_pass(
            store,
            board,
            config,
            template="subcontractor",
            scope="building:a",
            name="Sam",
            company="Fixit",
            reason="boiler",
            issuer="carol",
            issuer_may_issue=None,
            now=time.time(),
        )
        holder = DaypassPrincipal(
            pass_id=issued.id,
            name="Sam",
            company="Fixit",
            scope="building:a",
            session_id=f"{issued.id}.1",
            expires_at=issued.expires_at,
        )
        grant = await service.issue(holder)
        for _ in range(2):  # the second answer comes from the worker's memory of the token
            assert (await service.authenticate(grant.access_token)).daypass_id == issued.id
        await revoke_pass(store, board, issued.id, by="alice", now=time.time())  # no tokens=: not told
        with pytest.raises(Unauthenticated):
            await service.authenticate(grant.access_token)
        with pytest.raises(Exception) as refused:
            await service.refresh(grant.refresh_token)
        assert getattr(refused.value, "code", None) == "invalid_grant"
    finally:
        board.close()
        await store.close()


async def test_a_store_outage_during_a_grant_is_a_503_and_costs_no_refresh_token(
    tmp_path: Path, aiohttp_client
) -> None:
    """Fail closed, without a 500 or a traceback, and without rotating: the client retries the same token."""
    from aiohttp import web

    from rolegate.identity.principal import Principal
    from rolegate.store import StoreUnavailable
    from rolegate.store.sqlite import SQLiteStore
    from rolegate.tokens import KeyRing, TokenEndpoint, TokenService

    class FlakyStore(SQLiteStore):
        """The real SQLite Store, until the test pulls the plug on reads."""

        down = False

        async def get(self, namespace: str, key: str):  # type: ignore[override]
            if self.down and namespace != "keys":
                raise StoreUnavailable("connection refused (test)")
            return await super().get(namespace, key)

    url = "https://rolegate.example.com"
    store = FlakyStore(f"sqlite:///{tmp_path}/rolegate.db")
    await store.open()
    try:
        ring = KeyRing(store, secret="s" * 48)
        await ring.sync()
        service = TokenService(keyring=ring, store=store, issuer=url, current_version=lambda: 1)
        grant = await service.issue(Principal(username="alice", expires_at=time.time() + 3600))
        app = web.Application()
        TokenEndpoint(service, public_url=url).add_routes(app)
        client = await aiohttp_client(app)
        store.down = True
        for path, data in (
            (TOKEN, {"grant_type": "refresh_token", "refresh_token": grant.refresh_token}),
            (REVOKE, {"token": grant.refresh_token}),
        ):
            resp = await client.post(path, data=data)
            assert resp.status == 503 and (await resp.json())["error"] == "server_error", await resp.text()
        store.down = False
        resp = await client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": grant.refresh_token})
        assert resp.status == 200, await resp.text()
    finally:
        await store.close()
