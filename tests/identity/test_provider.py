"""Living with the provider: refresh keeps a session alive, a refused refresh ends it, an outage
gives a clear page on sign-in while existing sessions keep working."""

from __future__ import annotations

import asyncio
import base64

import pytest

from rolegate.identity.discovery import PROBE_SECONDS
from rolegate.identity.sessions import NAMESPACE, Session
from rolegate_lab import free_port, rolegate_client

from .conftest import HTML, JSON, rolegate_yaml, sign_in, start_rolegate, stop_rolegate

pytestmark = pytest.mark.lab


@pytest.fixture
async def own_idp_rolegate(make_idp, lab_backend, tmp_path, request):
    """A rolegate with an IdP of its own (to stop, or with short token lifetimes)."""
    options = getattr(request, "param", {})
    url = f"http://127.0.0.1:{free_port()}"
    idp = make_idp([rolegate_client(url)], **options.get("idp", {}))
    rg = await start_rolegate(url, idp, lab_backend.url, tmp_path, **options.get("rolegate", {}))
    yield rg
    await stop_rolegate(rg)


async def _only_session(rg) -> Session:
    records = await rg.stage.store.list(NAMESPACE)
    assert len(records) == 1
    return Session(records[0].key, records[0].value, records[0].version)


async def test_idp_down_clear_page_on_login_and_sessions_keep_working(own_idp_rolegate, http):
    rg = own_idp_rolegate
    await sign_in(http, rg, "alice")
    rg.idp.stop()
    async with http.get(f"{rg.url}/me-echo/", headers=JSON) as r:
        assert r.status == 200
    # The running rolegate holds the discovery document (cached for an hour), but a sign-in first makes
    # sure the provider answered lately: a browser gets the clear page, not a link to a dead provider.
    await asyncio.sleep(PROBE_SECONDS + 0.2)
    for _ in range(2):  # the second attempt is answered by the back-off, at once
        async with http.get(
            f"{rg.url}/.rolegate/login", params={"rd": "/me-echo/"}, headers=HTML, allow_redirects=False
        ) as r:
            assert r.status == 503, r.headers.get("Location")
            assert "sign-in service" in await r.text()
    async with http.get(f"{rg.url}/me-echo/", headers=JSON) as r:
        assert r.status == 200  # existing sessions keep working
    # A freshly (re)started rolegate has no cached discovery document: sign-in answers a clear 503 page.
    rg.swap(
        rolegate_yaml(
            url=rg.url, idp=rg.idp, backend_url=rg.config.upstreams["backend"].url, db=rg.base_dir / "rolegate.db"
        )
    )
    async with http.get(
        f"{rg.url}/.rolegate/login", params={"rd": "/me-echo/"}, headers=HTML, allow_redirects=False
    ) as r:
        assert r.status == 503
        assert "text/html" in r.headers["Content-Type"]
        assert "sign-in service" in await r.text()
    async with http.get(f"{rg.url}/.rolegate/login", headers=JSON, allow_redirects=False) as r:
        assert r.status == 503
        assert (await r.json())["error"] == "sign_in_unavailable"
    # ... and the session made before the outage still works on the new runtime (it lives in the store).
    async with http.get(f"{rg.url}/me-echo/", headers=JSON) as r:
        assert r.status == 200


@pytest.mark.parametrize(
    "own_idp_rolegate",
    [{"idp": {"ttl": {"AccessToken": 30}}, "rolegate": {"session_extra": "  refresh_before: 1h"}}],
    indirect=True,
)
async def test_refresh_keeps_the_session_and_a_revoked_refresh_token_ends_it(own_idp_rolegate, http):
    rg = own_idp_rolegate
    await sign_in(http, rg, "dave")
    before = await _only_session(rg)
    async with http.get(f"{rg.url}/me-echo/", headers=JSON) as r:
        assert r.status == 200
    after = await _only_session(rg)
    assert after.version > before.version and after.data["tok_exp"] >= before.data["tok_exp"]
    # The IdP revokes the grant (e.g. an admin ended it): the next refresh is refused, the session ends.
    refresh_token = rg.stage.sessions.refresh_token(after)
    assert refresh_token
    secret = rg.idp.client()["client_secret"]
    basic = base64.b64encode(f"rolegate:{secret}".encode()).decode()
    async with http.post(
        rg.idp.discovery["revocation_endpoint"],
        data={"token": refresh_token, "token_type_hint": "refresh_token"},
        headers={"Authorization": f"Basic {basic}"},
    ) as r:
        assert r.status == 200
    async with http.get(f"{rg.url}/me-echo/", headers=JSON) as r:
        assert r.status == 401
    assert await rg.stage.store.list(NAMESPACE) == []
