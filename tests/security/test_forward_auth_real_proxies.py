"""Issue 16, item 1, with real front proxies: a client that sends spoofed ``X-Original-*`` /
``X-Forwarded-*`` headers through nginx (``auth_request``) and Caddy (``forward_auth``) never chooses
what rolegate authorizes.

Each proxy runs the snippet shipped in ``deploy/`` with only its marked addresses filled in (scripts/setup.sh
installs the Debian packages ``nginx`` and ``caddy``). A second variant drops the snippet's header hygiene
(the lines that strip the other proxies' routing headers), as an operator's hand-written config might: then
the client's copies reach rolegate, which refuses them (400) rather than letting them choose.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from rolegate_lab import free_port, idp_login, lab_client_session, rolegate_client
from rolegate_lab.ports import port_open
from tests.identity.conftest import HTML, JSON, rolegate_yaml, start_rolegate, stop_rolegate

pytestmark = pytest.mark.lab

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NGINX_EXAMPLE = DEPLOY / "nginx" / "rolegate-forward-auth.conf"
CADDY_EXAMPLE = DEPLOY / "caddy" / "Caddyfile"

# Beside the identity tests' routes: a GET-only public route, and invoices that are public on one host.
EXTRA_ROUTES = """
  - {path: /readonly/**, methods: [GET], mode: public, upstream: backend}
  - {path: /invoices/**, host: open.example.test, mode: public, upstream: backend}
"""
# Every routing header some proxy convention uses, all naming a request the client may make.
SPOOF_PUBLIC = {
    "X-Original-URI": "/public/x",
    "X-Original-Method": "GET",
    "X-Forwarded-Uri": "/public/x",
    "X-Forwarded-Method": "GET",
    "X-Envoy-Original-Path": "/public/x",
    "X-Forwarded-Host": "open.example.test",
    "X-Forwarded-Proto": "https",
}


def _without_lines(text: str, *needles: str) -> str:
    kept = [line for line in text.splitlines(keepends=True) if not any(n in line for n in needles)]
    assert len(kept) < len(text.splitlines()), f"none of {needles} found: the snippet changed"
    return "".join(kept)


def _fill(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"{old!r} is no longer in the shipped snippet"
        text = text.replace(old, new)
    return text


def _wait_listening(proc: subprocess.Popen, port: int, what: str, log: Path) -> None:
    for _ in range(200):  # 10 s at most
        if port_open(port) or proc.poll() is not None:
            break
        time.sleep(0.05)
    if proc.poll() is not None or not port_open(port):
        proc.kill()
        pytest.fail(f"{what} did not start:\n{log.read_text() if log.exists() else ''}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def start_nginx(workdir: Path, *, listen: int, rolegate_port: int, backend_port: int, hygiene: bool):
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(binary).exists(), "nginx is not installed: run scripts/setup.sh (Debian package nginx)"
    example = NGINX_EXAMPLE.read_text()
    if not hygiene:
        example = _without_lines(example, 'X-Forwarded-Uri ""', 'X-Forwarded-Method ""', 'X-Envoy-Original-Path ""')
    example = _fill(
        example,
        {
            "server 127.0.0.1:8080;": f"server 127.0.0.1:{rolegate_port};",
            "server 127.0.0.1:8081;": f"server 127.0.0.1:{backend_port};",
            "listen 8000;": f"listen 127.0.0.1:{listen};",
        },
    )
    (workdir / "rolegate-forward-auth.conf").write_text(example)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / sub).mkdir(exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
master_process off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {workdir}/access.log;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    include {workdir}/rolegate-forward-auth.conf;
}}
""")
    proc = subprocess.Popen(
        [binary, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_listening(proc, listen, "nginx", workdir / "error.log")
    return proc


def start_caddy(workdir: Path, *, listen: int, rolegate_port: int, backend_port: int, hygiene: bool):
    binary = shutil.which("caddy") or "/usr/bin/caddy"
    assert Path(binary).exists(), "caddy is not installed: run scripts/setup.sh (Debian package caddy)"
    example = CADDY_EXAMPLE.read_text()
    if not hygiene:
        example = _without_lines(example, "header_up -X-", "request_header -X-Rolegate-")
    example = _fill(
        example,
        {
            "127.0.0.1:8080": f"127.0.0.1:{rolegate_port}",
            "127.0.0.1:8081": f"127.0.0.1:{backend_port}",
            "http://:8000 {": f"http://:{listen} {{\n\tbind 127.0.0.1",
        },
    )
    # A private instance: no admin endpoint (its default port is shared), no state outside workdir.
    conf = workdir / "Caddyfile"
    conf.write_text("{\n\tadmin off\n\tskip_install_trust\n}\n\n" + example)
    env = {
        **os.environ,
        "HOME": str(workdir),
        "XDG_DATA_HOME": str(workdir / "data"),
        "XDG_CONFIG_HOME": str(workdir / "config"),
    }
    log = workdir / "caddy.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [binary, "run", "--config", str(conf), "--adapter", "caddyfile"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    _wait_listening(proc, listen, "caddy", log)
    return proc


PROXIES = {"nginx": start_nginx, "caddy": start_caddy}


@pytest.fixture
async def behind(make_idp, lab_idp, lab_backend, tmp_path):
    """``await behind(proxy, hygiene=..., sign_in=...)`` -> the proxy's public URL; rolegate decides
    behind it with ``server.forward_auth.proxy`` naming it (and a fresh IdP that calls the proxy back
    when ``sign_in``)."""
    running: list = []

    async def start(proxy: str, *, hygiene: bool = True, sign_in: bool = False) -> str:
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        idp = make_idp([rolegate_client(public)]) if sign_in else lab_idp
        rg_port = free_port()
        rg = await start_rolegate(f"http://127.0.0.1:{rg_port}", idp, lab_backend.url, tmp_path)
        running.append(rg)
        text = (
            rolegate_yaml(
                url=rg.url,
                idp=idp,
                backend_url=lab_backend.url,
                db=tmp_path / "rolegate.db",
                server_extra=f"  forward_auth: {{proxy: {proxy}}}\n",
            )
            + EXTRA_ROUTES
        )
        rg.swap(text.replace(f"public_url: {rg.url}", f"public_url: {public}"))
        workdir = tmp_path / proxy
        workdir.mkdir()
        running.append(
            PROXIES[proxy](
                workdir,
                listen=port,
                rolegate_port=rg_port,
                hygiene=hygiene,
                backend_port=urllib.parse.urlsplit(lab_backend.url).port,
            )
        )
        return public

    yield start
    for item in reversed(running):
        if isinstance(item, subprocess.Popen):
            _stop(item)
        else:
            await stop_rolegate(item)


async def fetch(http, method: str, url: str, headers: dict[str, str] | None = None):
    async with http.request(method, url, headers={**JSON, **(headers or {})}, allow_redirects=False) as r:
        body = await r.read()
        return r.status, r.headers, body


async def assert_client_chooses_nothing(http, public: str) -> None:
    """Anonymous: every spoof ends where the real request does, never at the backend."""
    assert (await fetch(http, "GET", f"{public}/public/x"))[0] == 200
    assert (await fetch(http, "GET", f"{public}/invoices"))[0] == 401
    assert (await fetch(http, "GET", f"{public}/invoices", SPOOF_PUBLIC))[0] == 401
    for name in ("X-Original-URI", "X-Forwarded-Uri", "X-Envoy-Original-Path"):
        assert (await fetch(http, "GET", f"{public}/invoices", {name: "/public/x"}))[0] == 401, name
    # the host is the one the client asked the proxy for, not one it names in a header
    assert (await fetch(http, "GET", f"{public}/invoices", {"X-Forwarded-Host": "open.example.test"}))[0] == 401
    # GET-only route: a DELETE stays a DELETE whatever method header the client adds
    assert (await fetch(http, "GET", f"{public}/readonly/x"))[0] == 200
    assert (await fetch(http, "DELETE", f"{public}/readonly/x"))[0] == 403
    for name in ("X-Original-Method", "X-Forwarded-Method"):
        assert (await fetch(http, "DELETE", f"{public}/readonly/x", {name: "GET"}))[0] == 403, name
    assert (await fetch(http, "DELETE", f"{public}/readonly/x", SPOOF_PUBLIC))[0] == 403
    # the forward-auth endpoint is the proxy's to ask, not the client's
    assert (await fetch(http, "GET", f"{public}/.rolegate/auth", SPOOF_PUBLIC))[0] == 404


async def sign_in_through(http, public: str, username: str) -> None:
    status, headers, _ = await fetch(http, "GET", f"{public}/me-echo/start", HTML)
    assert status == 302, "a browser is sent to sign in"
    login = headers["Location"]
    assert login.startswith(f"{public}/.rolegate/login?rd=")
    async with http.get(login, headers=HTML, allow_redirects=False) as r:
        callback = await idp_login(http, r, username, "demo")
    async with http.get(callback.url, headers=HTML, allow_redirects=False) as r:
        assert r.status == 302


@pytest.mark.parametrize("proxy", ["nginx", "caddy"])
async def test_shipped_snippet_with_spoofing_client(behind, proxy):
    public = await behind(proxy, sign_in=True)
    async with lab_client_session() as http:
        await assert_client_chooses_nothing(http, public)
        await sign_in_through(http, public, "alice")
        # signed in: the backend hears who rolegate says, whatever the client claims
        status, _, body = await fetch(
            http, "GET", f"{public}/me-echo/x", {**SPOOF_PUBLIC, "X-Rolegate-User": "mallory"}
        )
        assert status == 200, body
        assert json.loads(body)["headers"]["X-Rolegate-User"] == "alice"
        status, _, body = await fetch(http, "GET", f"{public}/public/x", {"X-Rolegate-User": "mallory"})
        assert status == 200, body
        assert json.loads(body)["headers"].get("X-Rolegate-User", "") == ""
        # alice holds no invoices:view; naming a route she may use does not change that
        assert (await fetch(http, "GET", f"{public}/invoices/1"))[0] == 403
        assert (await fetch(http, "GET", f"{public}/invoices/1", SPOOF_PUBLIC))[0] == 403
        for name in ("X-Original-URI", "X-Forwarded-Uri"):
            assert (await fetch(http, "GET", f"{public}/invoices/1", {name: "/me-echo/x"}))[0] == 403, name


@pytest.mark.parametrize("proxy", ["nginx", "caddy"])
async def test_rolegate_refuses_client_copies_the_proxy_passes_on(behind, proxy):
    """Without the snippet's header hygiene the client's copies reach rolegate: refused, not obeyed."""
    public = await behind(proxy, hygiene=False)
    # nginx turns a 400 from auth_request into a 500; Caddy hands rolegate's 400 to the client.
    refused = 500 if proxy == "nginx" else 400
    async with lab_client_session() as http:
        assert (await fetch(http, "GET", f"{public}/public/x"))[0] == 200
        assert (await fetch(http, "GET", f"{public}/invoices"))[0] == 401
        assert (await fetch(http, "GET", f"{public}/readonly/x"))[0] == 200
        other_set = {"X-Forwarded-Uri": "/public/x"} if proxy == "nginx" else {"X-Original-URI": "/public/x"}
        assert (await fetch(http, "GET", f"{public}/invoices", other_set))[0] == refused
        assert (await fetch(http, "GET", f"{public}/invoices", SPOOF_PUBLIC))[0] == refused
        other_method = {"X-Forwarded-Method": "GET"} if proxy == "nginx" else {"X-Original-Method": "GET"}
        assert (await fetch(http, "DELETE", f"{public}/readonly/x", other_method))[0] == refused
        assert (await fetch(http, "GET", f"{public}/invoices", {"X-Envoy-Original-Path": "/public/x"}))[0] == refused
        # copies that name the very request the proxy names are ignored (and logged)
        same = {"X-Forwarded-Uri": "/public/x"} if proxy == "nginx" else {"X-Original-URI": "/public/x"}
        assert (await fetch(http, "GET", f"{public}/public/x", same))[0] == 200
