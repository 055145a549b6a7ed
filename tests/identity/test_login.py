"""Sign-in through the lab's real IdP login form, sessions, logout and back-channel logout."""

from __future__ import annotations

import asyncio
import base64
import urllib.parse

import pytest

from rolegate.identity.sealed_cookie import CookieSealer
from rolegate_lab import LoginFailed, idp_logout

from .conftest import HTML, JSON, SESSION_SECRET, sign_in

pytestmark = pytest.mark.lab


def session_cookie(http) -> str | None:
    for cookie in http.cookie_jar:
        if cookie.key == "rolegate_session":
            return cookie.value
    return None


async def test_full_login_reaches_the_backend_as_the_user(rolegate, http):
    resp = await sign_in(http, rolegate, "alice", rd="/me-echo/hello?x=1")
    assert resp.status == 302
    assert resp.headers["Location"] == f"{rolegate.url}/me-echo/hello?x=1"
    set_cookie = resp.headers.getall("Set-Cookie")
    session = next(c for c in set_cookie if c.startswith("rolegate_session="))
    assert "HttpOnly" in session and "SameSite=Lax" in session and "Path=/" in session
    assert "Secure" not in session  # plain http on loopback
    async with http.get(f"{rolegate.url}/me-echo/hello?x=1", headers=JSON) as r:
        assert r.status == 200, await r.text()
        echo = await r.json()
    assert echo["headers"]["X-Rolegate-User"] == "alice"
    assert echo["headers"]["X-Rolegate-Email"]
    assert echo["headers"]["X-Rolegate-Groups"]
    # the session credential never reaches the backend; the app's own cookies do
    cookie = session_cookie(http)
    http.cookie_jar.clear()  # the jar also holds the IdP's cookies (same host, other port)
    async with http.get(
        f"{rolegate.url}/me-echo/c", headers={**JSON, "Cookie": f"rolegate_session={cookie}; app=1"}
    ) as r:
        echo = await r.json()
    assert echo["headers"].get("Cookie") == "app=1"
    # ... on public routes too: a signed-in browser sends its session cookie everywhere
    async with http.get(
        f"{rolegate.url}/public/c", headers={**JSON, "Cookie": f"app=1; rolegate_session={cookie}"}
    ) as r:
        assert r.status == 200
        echo = await r.json()
    assert echo["headers"].get("Cookie") == "app=1"
    async with http.get(f"{rolegate.url}/public/c", headers={**JSON, "Cookie": f"rolegate_session={cookie}"}) as r:
        echo = await r.json()
    assert "Cookie" not in echo["headers"] and "cookie" not in echo["headers"]
    async with http.get(f"{rolegate.url}/public/c", headers={**JSON, "Cookie": "app=2; theme=dark"}) as r:
        echo = await r.json()
    assert echo["headers"].get("Cookie") == "app=2; theme=dark"  # nothing of ours: passed as sent


async def test_every_login_gets_a_fresh_session_id(rolegate, http):
    await sign_in(http, rolegate, "alice")
    first = session_cookie(http)
    await sign_in(http, rolegate, "alice")
    second = session_cookie(http)
    assert first and second and first != second
    sealer = CookieSealer(SESSION_SECRET, "session-cookie")
    ids = {sealer.unseal(v, name="rolegate_session")["i"] for v in (first, second)}
    assert len(ids) == 2 and all(len(i) >= 22 for i in ids)  # >= 128 bits, base64


async def test_wrong_password_and_unknown_user_are_refused_by_the_idp(rolegate, http):
    with pytest.raises(LoginFailed):
        await sign_in(http, rolegate, "alice", "not-the-password")
    with pytest.raises(LoginFailed):
        await sign_in(http, rolegate, "nobody-here", "demo")
    assert session_cookie(http) is None


@pytest.mark.parametrize("kind", ["tampered", "expired", "foreign"])
async def test_bad_session_cookies_are_refused(rolegate, http, kind):
    await sign_in(http, rolegate)
    good = session_cookie(http)
    sealer = CookieSealer(SESSION_SECRET, "session-cookie")
    payload = sealer.unseal(good, name="rolegate_session")
    if kind == "tampered":
        middle = len(good) // 2
        bad = good[:middle] + ("A" if good[middle] != "A" else "B") + good[middle + 1 :]
    elif kind == "expired":
        bad = sealer.seal(payload, name="rolegate_session", ttl=-10)
    else:
        bad = CookieSealer("another-secret-" + "y" * 40, "session-cookie").seal(
            payload, name="rolegate_session", ttl=600
        )
    http.cookie_jar.clear()
    headers = {**JSON, "Cookie": f"rolegate_session={bad}"}
    async with http.get(f"{rolegate.url}/me-echo/x", headers=headers, allow_redirects=False) as r:
        assert r.status == 401


async def test_replayed_callback_is_refused(rolegate, http):
    async with http.get(
        f"{rolegate.url}/.rolegate/login", params={"rd": "/me-echo/"}, headers=HTML, allow_redirects=False
    ) as resp:
        location = resp.headers["Location"]
    from rolegate_lab import idp_login

    callback = await idp_login(http, location, "alice", "demo")
    login_cookies = [(c.key, c.value) for c in http.cookie_jar if c.key.startswith("rolegate_login_")]
    async with http.get(callback.url, headers=HTML, allow_redirects=False) as r:
        assert r.status == 302
    # Replay with the very same login cookie and URL: refused, no second session.
    http.cookie_jar.clear()
    cookie_header = "; ".join(f"{k}={v}" for k, v in login_cookies)
    async with http.get(callback.url, headers={**HTML, "Cookie": cookie_header}, allow_redirects=False) as r:
        assert r.status == 400
        assert "text/html" in r.headers["Content-Type"]
        assert "Set-Cookie" not in r.headers


async def test_state_mismatch_is_refused(rolegate, http):
    async with http.get(f"{rolegate.url}/.rolegate/login", headers=HTML, allow_redirects=False) as resp:
        location = resp.headers["Location"]
    from rolegate_lab import idp_login

    callback = await idp_login(http, location, "alice", "demo")
    forged = callback.url.replace(f"state={callback.state}", "state=forged-state-value")
    async with http.get(forged, headers=HTML, allow_redirects=False) as r:
        assert r.status == 400
    # Without the browser's login cookie (another browser), the genuine state fails too.
    login_cookies = [c.key for c in http.cookie_jar if c.key.startswith("rolegate_login_")]
    assert login_cookies
    http.cookie_jar.clear()
    async with http.get(callback.url, headers=HTML, allow_redirects=False) as r:
        assert r.status == 400


async def test_nonce_mismatch_is_refused(rolegate, http):
    async with http.get(f"{rolegate.url}/.rolegate/login", headers=HTML, allow_redirects=False) as resp:
        location = resp.headers["Location"]
    from rolegate_lab import idp_login

    callback = await idp_login(http, location, "alice", "demo")
    ((name, value),) = [(c.key, c.value) for c in http.cookie_jar if c.key.startswith("rolegate_login_")]
    sealer = CookieSealer(SESSION_SECRET, "login-state")
    login = sealer.unseal(value, name=name)
    login["n"] = "a-different-nonce"
    http.cookie_jar.clear()
    forged = sealer.seal(login, name=name, ttl=600)
    async with http.get(callback.url, headers={**HTML, "Cookie": f"{name}={forged}"}, allow_redirects=False) as r:
        assert r.status == 400
        assert "Set-Cookie" not in r.headers or "rolegate_session=" not in r.headers.get("Set-Cookie", "")


@pytest.mark.parametrize(
    "rd",
    [
        "//evil.com/x",
        "https:evil.com",
        "\\\\evil.com",
        "/\\evil.com",
        "https://evil.com/",
        "https://127.0.0.1@evil.com/",
        "javascript:alert(1)",
        "data:text/html,hi",
        "ftp://127.0.0.1/",
        "http://apps.example.test.evil.com/",
        " /x",
        "http://127.0.0.1:1/",
        "/x\r\nSet-Cookie: a=b",
    ],
)
async def test_open_redirect_attempts_are_refused(rolegate, http, rd):
    async with http.get(f"{rolegate.url}/.rolegate/login", params={"rd": rd}, headers=HTML, allow_redirects=False) as r:
        if r.status == 302:
            # only ever to the IdP, carrying nothing but our own callback
            location = r.headers["Location"]
            assert location.startswith(rolegate.idp.issuer), location
            pytest.fail(f"{rd!r} was accepted as a return target")
        assert r.status == 400


async def test_allowed_host_return_target(rolegate, http):
    async with http.get(
        f"{rolegate.url}/.rolegate/login",
        params={"rd": "https://apps.example.test/a?b=c"},
        headers=HTML,
        allow_redirects=False,
    ) as r:
        assert r.status == 302


async def test_logout_then_old_cookie_is_refused(rolegate, http):
    await sign_in(http, rolegate)
    old = session_cookie(http)
    async with http.get(f"{rolegate.url}/me-echo/", headers=JSON) as r:
        assert r.status == 200
    # Another site sending the browser here (a link, a redirect: the Lax cookie comes along) signs
    # nobody out: the user gets a page whose own POST would.
    for site in ("cross-site", "same-site"):
        async with http.get(
            f"{rolegate.url}/.rolegate/logout", headers={**HTML, "Sec-Fetch-Site": site}, allow_redirects=False
        ) as r:
            assert r.status == 200
            page = await r.text()
        assert '<form method="post" action="/.rolegate/logout">' in page
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        async with http.get(f"{rolegate.url}/me-echo/", headers=JSON) as r:
            assert r.status == 200  # still signed in
    async with http.get(
        f"{rolegate.url}/.rolegate/logout", headers={**HTML, "Sec-Fetch-Site": "same-origin"}, allow_redirects=False
    ) as r:
        assert r.status == 302
        location = r.headers["Location"]
    end_session = rolegate.idp.discovery["end_session_endpoint"]
    assert location.startswith(end_session)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    assert query["post_logout_redirect_uri"] == [f"{rolegate.url}/.rolegate/logged-out"]
    assert query["id_token_hint"][0].count(".") == 2
    done = await idp_logout(http, location)
    assert done is not None and done.url.startswith(f"{rolegate.url}/.rolegate/logged-out")
    http.cookie_jar.clear()
    async with http.get(f"{rolegate.url}/me-echo/", headers={**JSON, "Cookie": f"rolegate_session={old}"}) as r:
        assert r.status == 401


async def test_backchannel_logout_ends_the_session(rolegate, http):
    """The user signs out at the IdP directly (another app's logout): the IdP tells rolegate."""
    await sign_in(http, rolegate, "bob")
    cookie = session_cookie(http)
    async with http.get(f"{rolegate.url}/me-echo/", headers=JSON) as r:
        assert r.status == 200
    end_session = rolegate.idp.discovery["end_session_endpoint"] + "?client_id=rolegate"
    await idp_logout(http, end_session)
    status = None
    for _ in range(50):  # the IdP delivers the logout token before it answers; allow a little slack
        async with http.get(f"{rolegate.url}/me-echo/", headers={**JSON, "Cookie": f"rolegate_session={cookie}"}) as r:
            status = r.status
        if status == 401:
            break
        await asyncio.sleep(0.1)
    assert status == 401


async def test_backchannel_logout_rejects_garbage(rolegate, http):
    async with http.post(f"{rolegate.url}/.rolegate/logout/backchannel", data={"logout_token": "a.b.c"}) as r:
        assert r.status == 400
    async with http.post(f"{rolegate.url}/.rolegate/logout/backchannel", data={}) as r:
        assert r.status == 400
    # JSON nested past the parser's limit, in the header and in the claims: a 400 like any garbage, not a 500
    deep = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).rstrip(b"=").decode()
    ok = base64.urlsafe_b64encode(b'{"alg":"RS256"}').rstrip(b"=").decode()
    for token in (f"{deep}.{ok}.c2ln", f"{ok}.{deep}.c2ln"):
        async with http.post(f"{rolegate.url}/.rolegate/logout/backchannel", data={"logout_token": token}) as r:
            assert r.status == 400, token[:20]


async def test_api_calls_get_401_never_a_redirect(rolegate, http):
    for method, headers in [("GET", JSON), ("POST", HTML), ("GET", {**HTML, "X-Requested-With": "XMLHttpRequest"})]:
        async with http.request(method, f"{rolegate.url}/me-echo/x", headers=headers, allow_redirects=False) as r:
            assert r.status == 401, (method, headers)


async def test_pipeline_challenges_per_client(rolegate, http):
    """Through the proxy pipeline: an API client gets 401 + WWW-Authenticate, a browser goes to sign-in."""
    async with http.get(f"{rolegate.url}/me-echo/x", headers=JSON, allow_redirects=False) as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="rolegate"'
    async with http.get(f"{rolegate.url}/me-echo/x?y=1", headers=HTML, allow_redirects=False) as r:
        assert r.status == 302
        location = r.headers["Location"]
    assert location == f"{rolegate.url}/.rolegate/login?rd=" + urllib.parse.quote(
        f"{rolegate.url}/me-echo/x?y=1", safe=""
    )
    # ... and the whole round trip lands on the page that was asked for
    from rolegate_lab import idp_login

    async with http.get(location, headers=HTML, allow_redirects=False) as r:
        callback = await idp_login(http, r, "alice", "demo")
    async with http.get(callback.url, headers=HTML, allow_redirects=False) as r:
        assert r.headers["Location"] == f"{rolegate.url}/me-echo/x?y=1"


async def test_public_route_needs_no_sign_in(rolegate, http):
    async with http.get(f"{rolegate.url}/public/x", headers=JSON) as r:
        assert r.status == 200
        assert "X-Rolegate-User" not in (await r.json())["headers"]


async def test_logout_on_one_worker_is_seen_by_another(rolegate, http):
    """Two Runtimes on one store stand in for two workers: the second one's cache must not outlive a logout."""
    from aiohttp.test_utils import make_mocked_request

    from rolegate.config.loader import load_config_text
    from rolegate.server.runtime import Runtime

    from .conftest import rolegate_yaml

    await sign_in(http, rolegate)
    cookie = session_cookie(http)
    other = Runtime.build(
        load_config_text(
            rolegate_yaml(
                url=rolegate.url,
                idp=rolegate.idp,
                backend_url=rolegate.config.upstreams["backend"].url,
                db=rolegate.base_dir / "rolegate.db",
            ),
            base_dir=rolegate.base_dir,
        ),
        base_dir=rolegate.base_dir,
    )
    try:
        request = make_mocked_request("GET", "/me-echo/", headers={"Cookie": f"rolegate_session={cookie}"})
        assert await other.identity.authenticate(request) is not None  # now cached in the other worker
        async with http.post(f"{rolegate.url}/.rolegate/logout", headers=JSON) as r:
            assert r.status == 200
        principal = object()
        for _ in range(50):  # the other worker re-reads the revocation counter at most every 0.25 s
            principal = await other.identity.authenticate(request)
            if principal is None:
                break
            await asyncio.sleep(0.05)
        assert principal is None
    finally:
        await other.close()
