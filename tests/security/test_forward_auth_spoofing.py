"""Issue 16, item 1: forward-auth must not let the client choose what is authorized.

nginx, Traefik and Caddy pass the client's own headers on to the forward-auth subrequest. rolegate used to
prefer ``X-Original-URI``/``-Method`` over ``X-Forwarded-Uri``/``-Method`` whatever sat in front, so a client
behind Traefik or Caddy added ``X-Original-URI: /public/x`` and was let through to ``/invoices``. Now the
operator names the front proxy (``server.forward_auth.proxy``); only that proxy's routing headers are read,
only from trusted peers; other conventions' copies are ignored (and logged) when they agree and refused
with 400 when they do not.

These tests speak to ``/.rolegate/auth`` directly, as the proxy would, from 127.0.0.1 (a loopback peer,
trusted while ``server.trusted_proxies`` is empty); tests/security/test_forward_auth_real_proxies.py puts
a real nginx and a real Caddy in front.
"""

from __future__ import annotations

import logging

import pytest

from rolegate.config.loader import load_config_text
from rolegate.errors import ConfigError
from rolegate_lab import lab_client_session
from tests.identity.conftest import HTML, JSON, rolegate_yaml, sign_in, start_rolegate, stop_rolegate

pytestmark = pytest.mark.lab

# Added to the identity tests' routes: one GET-only public route, and invoices that are public on one host.
EXTRA_ROUTES = """
  - {path: /readonly/**, methods: [GET], mode: public, upstream: backend}
  - {path: /invoices/**, host: open.example.test, mode: public, upstream: backend}
"""


def config_text(rg_url, idp, backend_url, db, *, proxy: str | None, trusted: str = "") -> str:
    server_extra = f"  forward_auth: {{proxy: {proxy}}}\n" if proxy else ""
    if trusted:
        server_extra += f"  trusted_proxies: [{trusted}]\n"
    return rolegate_yaml(url=rg_url, idp=idp, backend_url=backend_url, db=db, server_extra=server_extra) + EXTRA_ROUTES


@pytest.fixture
async def serve(lab_idp, lab_backend, rolegate_url, tmp_path):
    """``await serve(proxy=..., trusted=...)``: rolegate in-process on the session's port with that config."""
    started = []

    async def start(*, proxy: str | None, trusted: str = ""):
        rg = await start_rolegate(rolegate_url, lab_idp, lab_backend.url, tmp_path)
        started.append(rg)
        rg.swap(config_text(rg.url, lab_idp, lab_backend.url, tmp_path / "rolegate.db", proxy=proxy, trusted=trusted))
        return rg

    yield start
    for rg in started:
        await stop_rolegate(rg)


@pytest.fixture
async def http():
    async with lab_client_session() as session:
        yield session


def traefik(method: str, uri: str, host: str = "apps.example.test") -> dict[str, str]:
    """What Traefik's forwardAuth and Caddy's forward_auth set."""
    return {
        "X-Forwarded-Method": method,
        "X-Forwarded-Uri": uri,
        "X-Forwarded-Host": host,
        "X-Forwarded-Proto": "https",
    }


def nginx(method: str, uri: str, host: str = "apps.example.test") -> dict[str, str]:
    """What deploy/nginx/rolegate-forward-auth.conf sets on the subrequest."""
    return {"X-Original-Method": method, "X-Original-URI": uri, "X-Forwarded-Host": host, "X-Forwarded-Proto": "https"}


async def status(http, rg, headers: dict[str, str], *, method: str = "GET", path: str = "/.rolegate/auth") -> int:
    async with http.request(method, rg.url + path, headers={**JSON, **headers}, allow_redirects=False) as r:
        await r.read()
        return r.status


@pytest.mark.parametrize("proxy", ["traefik", "caddy"])
async def test_client_x_original_uri_does_not_choose_the_route(serve, http, proxy):
    """The issue's curl: X-Original-URI from the client beside the proxy's X-Forwarded-Uri (was 200)."""
    rg = await serve(proxy=proxy)
    assert await status(http, rg, traefik("GET", "/invoices")) == 401
    assert await status(http, rg, {**traefik("GET", "/invoices"), "X-Original-URI": "/public/x"}) == 400
    # the proxy's own request to a public route still passes
    assert await status(http, rg, traefik("GET", "/public/x")) == 200


@pytest.mark.parametrize("proxy", ["traefik", "caddy"])
async def test_client_x_original_method_does_not_choose_the_method(serve, http, proxy):
    """GET is allowed on /readonly/, DELETE is not: a client's X-Original-Method: GET does not turn it around."""
    rg = await serve(proxy=proxy)
    assert await status(http, rg, traefik("GET", "/readonly/x")) == 200
    assert await status(http, rg, traefik("DELETE", "/readonly/x")) == 403
    assert await status(http, rg, {**traefik("DELETE", "/readonly/x"), "X-Original-Method": "GET"}) == 400


async def test_nginx_reads_only_its_own_headers(serve, http):
    rg = await serve(proxy="nginx")
    assert await status(http, rg, nginx("GET", "/invoices")) == 401
    assert await status(http, rg, nginx("GET", "/public/x")) == 200
    # the client's X-Forwarded-* copies (nginx passes them on) never stand in for nginx's own
    assert await status(http, rg, {**nginx("GET", "/invoices"), "X-Forwarded-Uri": "/public/x"}) == 400
    assert await status(http, rg, {**nginx("DELETE", "/readonly/x"), "X-Forwarded-Method": "GET"}) == 400
    assert await status(http, rg, {**nginx("GET", "/invoices"), "X-Envoy-Original-Path": "/public/x"}) == 400
    # X-Original-URI missing: refused, never taken from another convention
    assert await status(http, rg, traefik("GET", "/public/x")) == 400
    missing_method = nginx("GET", "/public/x")
    del missing_method["X-Original-Method"]
    assert await status(http, rg, missing_method) == 400
    missing_host = nginx("GET", "/public/x")
    del missing_host["X-Forwarded-Host"]
    assert await status(http, rg, missing_host) == 400


async def test_traefik_does_not_read_nginx_headers_alone(serve, http):
    """X-Original-URI alone (no X-Forwarded-Uri) used to be read: with traefik named it is not."""
    rg = await serve(proxy="traefik")
    assert (
        await status(
            http,
            rg,
            {"X-Original-URI": "/public/x", "X-Original-Method": "GET", "X-Forwarded-Host": "apps.example.test"},
        )
        == 400
    )


async def test_client_host_does_not_choose_the_route(serve, http):
    """Invoices are public on open.example.test only; the host is the proxy's to say."""
    rg = await serve(proxy="envoy")
    # Envoy sends the original :authority as Host, the original path after its path_prefix
    assert await status(http, rg, {"Host": "open.example.test"}, path="/.rolegate/auth/invoices/1") == 200
    assert await status(http, rg, {"Host": "apps.example.test"}, path="/.rolegate/auth/invoices/1") == 401
    spoofed = {"Host": "apps.example.test", "X-Forwarded-Host": "open.example.test"}
    assert await status(http, rg, spoofed, path="/.rolegate/auth/invoices/1") == 400


async def test_repeated_routing_headers_are_refused(serve, http):
    rg = await serve(proxy="traefik")
    url = rg.url + "/.rolegate/auth"
    for name, first, second in (
        ("X-Forwarded-Uri", "/invoices", "/public/x"),
        ("X-Forwarded-Method", "DELETE", "GET"),
        ("X-Forwarded-Host", "apps.example.test", "open.example.test"),
    ):
        headers = [(k, v) for k, v in traefik("DELETE", "/invoices").items() if k != name]
        headers += [(name, first), (name, second), ("Accept", "application/json")]
        async with http.get(url, headers=headers, allow_redirects=False) as r:
            assert r.status == 400, name


async def test_envoy_path_prefix_and_own_method(serve, http):
    rg = await serve(proxy="envoy")
    host = {"Host": "apps.example.test", "X-Forwarded-Proto": "https"}
    assert await status(http, rg, host, path="/.rolegate/auth/public/x?y=1") == 200
    assert await status(http, rg, host, path="/.rolegate/auth/readonly/x") == 200
    assert await status(http, rg, host, method="DELETE", path="/.rolegate/auth/readonly/x") == 403
    assert await status(http, rg, host, path="/.rolegate/auth/invoices/1") == 401
    # another convention's copies: refused when they disagree with the path Envoy sent
    for spoof in (
        {"X-Envoy-Original-Path": "/public/x"},
        {"X-Original-URI": "/public/x"},
        {"X-Forwarded-Uri": "/public/x"},
    ):
        assert await status(http, rg, {**host, **spoof}, path="/.rolegate/auth/invoices/1") == 400, spoof
    assert (
        await status(
            http, rg, {**host, "X-Forwarded-Method": "GET"}, method="DELETE", path="/.rolegate/auth/readonly/x"
        )
        == 400
    )
    # the bare endpoint names no request at all
    assert await status(http, rg, host) == 400


async def test_envoy_style_path_is_refused_for_other_proxies(serve, http):
    rg = await serve(proxy="caddy")
    assert await status(http, rg, traefik("GET", "/public/x"), path="/.rolegate/auth/public/x") == 400


async def test_agreeing_copies_are_ignored_and_logged_without_values(serve, http, caplog):
    rg = await serve(proxy="nginx")
    caplog.set_level(logging.INFO, logger="rolegate")
    uri = "/public/x?token=s3cr3t-value"
    agreeing = {**nginx("GET", uri), "X-Forwarded-Uri": uri, "X-Forwarded-Method": "get"}
    for _ in range(3):
        assert await status(http, rg, agreeing) == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "rolegate.identity.forward_auth"]
    ignored = [line for line in lines if "ignored" in line]
    assert len(ignored) == 1, lines  # rate-limited: one line for the three requests
    assert "X-Forwarded-Uri" in ignored[0] and "X-Forwarded-Method" in ignored[0]
    assert not any("s3cr3t" in r.getMessage() for r in caplog.records)


async def test_agreeing_copies_still_authenticate_the_caller(serve, http):
    rg = await serve(proxy="caddy")
    await sign_in(http, rg, "alice")
    headers = {**traefik("GET", "/me-echo/a"), "X-Original-URI": "/me-echo/a", "X-Original-Method": "GET"}
    async with http.get(rg.url + "/.rolegate/auth", headers={**JSON, **headers}) as r:
        assert r.status == 200
        assert r.headers["X-Rolegate-User"] == "alice"
    # and the copies disagreeing refuse even a signed-in caller, rather than guess
    async with http.get(rg.url + "/.rolegate/auth", headers={**JSON, **headers, "X-Original-URI": "/invoices/1"}) as r:
        assert r.status == 400


async def test_browser_answers_per_proxy(serve, http):
    """nginx: 401 + X-Rolegate-Login (nginx redirects); Traefik/Caddy/Envoy: 302 to sign in."""
    rg = await serve(proxy="nginx")
    async with http.get(
        rg.url + "/.rolegate/auth", headers={**HTML, **nginx("GET", "/me-echo/a")}, allow_redirects=False
    ) as r:
        assert r.status == 401
        assert r.headers["X-Rolegate-Login"].startswith(f"{rg.url}/.rolegate/login?rd=")
    for proxy in ("traefik", "caddy"):
        rg.swap(
            config_text(rg.url, rg.idp, rg.config.upstreams["backend"].url, rg.base_dir / "rolegate.db", proxy=proxy)
        )
        async with http.get(
            rg.url + "/.rolegate/auth", headers={**HTML, **traefik("GET", "/me-echo/a")}, allow_redirects=False
        ) as r:
            assert r.status == 302
            assert r.headers["Location"].startswith(f"{rg.url}/.rolegate/login?rd=https%3A%2F%2Fapps.example.test")


async def test_untrusted_peer_is_refused(serve, http, caplog):
    """trusted_proxies set: only those peers may ask; this loopback client is not one of them."""
    caplog.set_level(logging.INFO, logger="rolegate")
    rg = await serve(proxy="traefik", trusted="10.255.255.1/32")
    assert await status(http, rg, traefik("GET", "/public/x")) == 403
    assert any("not a trusted proxy" in r.getMessage() for r in caplog.records)


async def test_forward_auth_is_off_until_configured(serve, http):
    rg = await serve(proxy=None)
    assert await status(http, rg, traefik("GET", "/public/x")) == 404
    assert await status(http, rg, nginx("GET", "/public/x")) == 404


def test_config_names_a_known_proxy(tmp_path):
    base = (
        "server: {listen: 127.0.0.1:8080, public_url: http://127.0.0.1:8080, forward_auth: %s}\n"
        "upstreams: {app: {url: http://127.0.0.1:9}}\nroutes: [{path: /x, mode: public, upstream: app}]\n"
    )
    config = load_config_text(base % "{proxy: caddy}", base_dir=tmp_path)
    assert config.server.forward_auth.proxy == "caddy"
    for bad in ("{proxy: apache}", "{}", "{proxy: nginx, trust_client: true}", "nginx"):
        with pytest.raises(ConfigError) as err:
            load_config_text(base % bad, base_dir=tmp_path)
        assert "server.forward_auth" in str(err.value), bad
