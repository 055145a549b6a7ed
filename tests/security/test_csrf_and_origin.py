"""Issue 16, items 4 and 8: the credential that identified the caller decides the CSRF rule.

A request rolegate's session cookie identified must prove that one of rolegate's own origins started it
(``Origin``, else ``Sec-Fetch-Site``, plus the admin CSRF token), whatever other header it carries: an
``Authorization: Basic`` header next to the cookie identifies nobody and exempts nothing. Only a caller
a bearer token identified (bearer authenticators are asked first) needs no such proof. The same rule
covers logout (a cross-site ``Origin`` does not end the session) and WebSocket upgrades (Cross-Site
WebSocket Hijacking: a cross-site upgrade the cookie identified is 403).

Everything runs over real HTTP against rolegate in-process (the building-safety config), signed in
through the lab's IdP, with the lab's slapd as directory and the lab backend's WebSocket echo upstream.
"""

from __future__ import annotations

import asyncio
import base64
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from rolegate.app import build_app
from rolegate.config.loader import load_config_text
from rolegate.directory import DirectorySync
from rolegate.server.runtime import Runtime, RuntimeHolder
from tests.admin.conftest import API, HTML, JSON, Client, Served, admin_config, sign_in

pytestmark = pytest.mark.lab

EVIL = "https://evil.example"
ALLOWED = "https://apps.example.test"  # server.allowed_hosts: one of rolegate's own origins
BASIC = {"Authorization": "Basic " + base64.b64encode(b"alice:demo").decode()}
BINDING = {"group": "technicians", "role": "user", "scope": "building:a"}
FORM = {"kind": "group", "subject": "technicians", "role": "user", "scope": "building:a"}


@pytest.fixture
async def served(lab_idp, lab_slapd, lab_backend, rolegate_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    """The admin tests' rolegate (their IdP, directory, store and audit settings) with a small policy of its
    own: alice (bs-admins) may edit bindings and read the audit trail; `/ws` is the lab backend's
    WebSocket echo for any signed-in user."""
    lab = yaml.safe_load(admin_config(rolegate_url, lab_idp, lab_slapd, lab_backend.url, tmp_path))
    config = {key: lab[key] for key in ("server", "storage", "session", "oidc", "directory", "audit", "upstreams")}
    config["server"]["allowed_hosts"] = ["apps.example.test"]
    config.update(
        {
            "scopes": {"building": {"description": "A building"}},
            "permissions": ["dashboard:view"],
            "roles": {
                "user": {"permissions": ["dashboard:view"]},
                "admin": {
                    "inherits": ["user"],
                    "permissions": ["rolegate:bindings:edit", "rolegate:roles:edit", "rolegate:audit:view"],
                    "manages": {"roles": "all", "settings": "all", "assigns": "all"},
                },
            },
            "bindings": [{"group": "bs-admins", "role": "admin"}],
            "routes": [{"path": "/ws", "methods": ["GET"], "mode": "authenticated", "upstream": "app"}],
        }
    )
    loaded = load_config_text(yaml.safe_dump(config, sort_keys=False), base_dir=tmp_path)
    runtime = await Runtime.create(loaded, base_dir=tmp_path)
    sync = DirectorySync(loaded, runtime.store)
    sync.board = runtime.board
    assert (await sync.sync_now(full=True)).ok
    await runtime.refresh(force=True)
    holder = RuntimeHolder(runtime)
    server = TestServer(build_app(holder), host="127.0.0.1", port=urllib.parse.urlsplit(rolegate_url).port)
    await server.start_server()
    yield Served(rolegate_url, holder, server)
    await server.close()
    await runtime.close()


@pytest.fixture
async def alice(served: Served) -> AsyncIterator[Client]:
    client = await sign_in(served.url, "alice")
    yield client
    await client.http.close()


async def technicians_bindings(client: Client) -> list:
    status, body, _ = await client.call("GET", f"{API}/bindings?group=technicians")
    assert status == 200, body
    return body["items"]


async def bearer_token(client: Client) -> str:
    """A rolegate access token for the signed-in user (the session grant, as the admin UI's scripts use it)."""
    async with client.http.post(
        f"{client.base}/.rolegate/token",
        data={"grant_type": "urn:rolegate:session"},
        headers={**JSON, "X-Requested-With": "XMLHttpRequest", "Origin": client.base},
    ) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["access_token"]


async def signed_in(client: Client, cookie: str) -> int:
    """Status of GET /me with exactly this session cookie (not the jar's: logout may have cleared it)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(f"{client.base}{API}/me", headers={**JSON, "Cookie": f"rolegate_session={cookie}"}) as r:
            return r.status


def session_cookie(client: Client) -> str:
    return next(c.value for c in client.http.cookie_jar if c.key == "rolegate_session")


# -- the admin API ----------------------------------------------------------------------------------------


async def test_api_write_with_the_cookie_and_a_basic_header_from_another_site_is_refused(alice):
    # The issue's request: Cookie + Authorization: Basic + cross-site Origin was 201, applied.
    status, body, _ = await alice.call(
        "POST", f"{API}/bindings", json=BINDING, csrf=False, headers={**BASIC, "Origin": EVIL}
    )
    assert status == 403, body
    # Even with the session's CSRF token: the Origin alone refuses a cookie-identified change.
    status, body, _ = await alice.call("POST", f"{API}/bindings", json=BINDING, headers={**BASIC, "Origin": EVIL})
    assert status == 403, body
    # No Origin, but fetch metadata says another site started it; and an Origin of "null".
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        status, body, _ = await alice.call("POST", f"{API}/bindings", json=BINDING, headers={**BASIC, **headers})
        assert status == 403, (headers, body)
    assert await technicians_bindings(alice) == [], "nothing was applied"


async def test_api_write_from_rolegates_own_origins_still_works(alice, served):
    # Same origin, with a Basic header that identifies nobody and the CSRF token: the cookie's rule, met.
    status, body, _ = await alice.call(
        "POST",
        f"{API}/bindings",
        json=BINDING,
        headers={**BASIC, "Origin": served.url, "Sec-Fetch-Site": "same-origin"},
    )
    assert status == 201 and body["applied"], body
    # An origin on server.allowed_hosts counts as rolegate's own.
    status, body, _ = await alice.call(
        "POST",
        f"{API}/bindings",
        json={**BINDING, "scope": "building:b"},
        headers={"Origin": ALLOWED, "Sec-Fetch-Site": "same-site"},
    )
    assert status == 201 and body["applied"], body
    assert len(await technicians_bindings(alice)) == 2


async def test_a_caller_the_bearer_token_identified_needs_no_origin_proof(alice):
    token = await bearer_token(alice)
    # The cookie rides along, but the bearer token is asked first and identified alice: CSRF is not
    # applicable (no other site can send this header without reading the token first).
    status, body, _ = await alice.call(
        "POST",
        f"{API}/bindings",
        json=BINDING,
        csrf=False,
        headers={"Authorization": f"Bearer {token}", "Origin": EVIL},
    )
    assert status == 201 and body["applied"], body
    # A "bearer token" no bearer authenticator takes (not a JWT) identifies nobody: the cookie identified
    # the caller, so the cookie's rule applies.
    status, body, _ = await alice.call(
        "POST",
        f"{API}/bindings",
        json={**BINDING, "scope": "building:b"},
        csrf=False,
        headers={"Authorization": "Bearer not-a-token", "Origin": EVIL},
    )
    assert status == 403, body
    assert len(await technicians_bindings(alice)) == 1


# -- the admin UI's forms ---------------------------------------------------------------------------------


async def test_ui_form_post_with_the_cookie_and_a_basic_header_from_another_site_is_refused(alice, served):
    apply = f"{served.url}/.rolegate/admin/bindings/apply"
    for extra in ({}, {"csrf": alice.csrf}):
        async with alice.http.post(
            apply, data={**FORM, **extra}, headers={**HTML, **BASIC, "Origin": EVIL}, allow_redirects=False
        ) as resp:
            assert resp.status == 403, (extra, resp.status, await resp.text())
    assert await technicians_bindings(alice) == [], "nothing was applied"
    # The form as the admin UI posts it: same origin, with its token.
    async with alice.http.post(
        apply, data={**FORM, "csrf": alice.csrf}, headers={**HTML, "Origin": served.url}, allow_redirects=False
    ) as resp:
        assert resp.status == 303, await resp.text()
    assert len(await technicians_bindings(alice)) == 1


# -- logout -----------------------------------------------------------------------------------------------


async def test_logout_from_another_origin_does_not_end_the_session(alice, served):
    cookie = session_cookie(alice)
    # An old browser (no fetch metadata) posting another site's form, or following its link.
    for method in ("POST", "GET"):
        async with alice.http.request(
            method, f"{served.url}/.rolegate/logout", headers={**HTML, "Origin": EVIL}, allow_redirects=False
        ) as resp:
            assert resp.status == 200, method
            assert '<form method="post" action="/.rolegate/logout">' in await resp.text()
        assert await signed_in(alice, cookie) == 200, f"a cross-site {method} ended the session"
    async with alice.http.post(f"{served.url}/.rolegate/logout", headers={**JSON, "Origin": "null"}) as resp:
        assert resp.status == 200 and "Sign out?" in await resp.text()
    assert await signed_in(alice, cookie) == 200
    # The confirmation page's own POST (same origin) signs out.
    async with alice.http.post(f"{served.url}/.rolegate/logout", headers={**JSON, "Origin": served.url}) as resp:
        assert resp.status == 200 and (await resp.json())["signed_out"] is True
    assert await signed_in(alice, cookie) == 401


# -- WebSocket upgrades -----------------------------------------------------------------------------------


async def echo(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> str:
    async with http.ws_connect(url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
        await ws.send_str("hello")
        msg = await ws.receive(timeout=5)
        return msg.data


async def test_cross_site_websocket_upgrade_identified_by_the_cookie_is_refused(alice, served):
    for headers in ({"Origin": EVIL}, {**BASIC, "Origin": EVIL}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await echo(alice.http, f"{served.url}/ws", headers)
        assert refused.value.status == 403, headers
    # Each refusal is a deny in the audit trail (written by the group-commit writer: wait for it, bounded).
    denies: list = []
    for _ in range(50):
        status, body, _ = await alice.call("GET", f"{API}/audit?kind=decision&decision=deny&path_prefix=/ws")
        assert status == 200, body
        denies = body["items"]
        if len(denies) >= 4:
            break
        await asyncio.sleep(0.1)
    assert len(denies) == 4 and all("cross-site WebSocket" in " ".join(e["reasons"]) for e in denies), denies


async def test_same_origin_and_bearer_websocket_upgrades_still_work(alice, served):
    assert await echo(alice.http, f"{served.url}/ws", {"Origin": served.url}) == "hello"
    assert await echo(alice.http, f"{served.url}/ws", {"Origin": ALLOWED}) == "hello"
    assert await echo(alice.http, f"{served.url}/ws", {}) == "hello"  # no Origin: not a browser's page
    # A bearer token identified the caller: no other site's page can have opened this socket.
    token = await bearer_token(alice)
    assert await echo(alice.http, f"{served.url}/ws", {"Authorization": f"Bearer {token}", "Origin": EVIL}) == "hello"
    # Without any credential the route is still closed (the origin proof is no credential).
    async with aiohttp.ClientSession() as anonymous:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await echo(anonymous, f"{served.url}/ws", {"Origin": served.url})
        assert refused.value.status == 401
