"""Forward-auth: a real nginx (auth_request) in front of the lab backend, rolegate deciding;
and the Traefik/Caddy header convention against /.rolegate/auth directly."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import aiohttp
import pytest

from rolegate_lab import free_port, idp_login, rolegate_client
from rolegate_lab.ports import port_open

from .conftest import HTML, JSON, start_rolegate, stop_rolegate

pytestmark = pytest.mark.lab

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "rolegate-forward-auth.conf"


def nginx_config(workdir: Path, *, listen: int, rolegate_port: int, backend_port: int) -> Path:
    """The shipped example, with its three marked addresses filled in, inside a private nginx.conf."""
    example = EXAMPLE.read_text()
    example = example.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{rolegate_port};")
    example = example.replace("server 127.0.0.1:8081;", f"server 127.0.0.1:{backend_port};")
    example = example.replace("listen 8000;", f"listen 127.0.0.1:{listen};")
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
    return conf


@pytest.fixture
def nginx_bin() -> str:
    path = shutil.which("nginx") or "/usr/sbin/nginx"
    # A required real component: scripts/setup.sh installs it, so its absence is a failure, not a skip.
    assert Path(path).exists(), "nginx is not installed: run scripts/setup.sh (Debian package nginx)"
    return path


@pytest.fixture
async def behind_nginx(nginx_bin, make_idp, lab_backend, tmp_path):
    """nginx on a free port in front of the backend, rolegate on another; the IdP calls nginx back."""
    nginx_port = free_port()
    public = f"http://127.0.0.1:{nginx_port}"
    idp = make_idp([rolegate_client(public)])
    rg_port = free_port()
    rg = await start_rolegate(f"http://127.0.0.1:{rg_port}", idp, lab_backend.url, tmp_path)
    # rolegate listens on rg_port but its public URL is nginx's
    rg.swap(_public_config(rg, public))
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    conf = nginx_config(
        workdir, listen=nginx_port, rolegate_port=rg_port, backend_port=urllib.parse.urlsplit(lab_backend.url).port
    )
    proc = subprocess.Popen(
        [nginx_bin, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(100):
            if port_open(nginx_port) or proc.poll() is not None:
                break
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.fail(f"nginx did not start: {proc.stderr.read().decode()} {(workdir / 'error.log').read_text()}")
        yield public, rg
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        await stop_rolegate(rg)


def _public_config(rg, public: str) -> str:
    from .conftest import rolegate_yaml

    text = rolegate_yaml(
        url=rg.url,
        idp=rg.idp,
        backend_url=rg.config.upstreams["backend"].url,
        db=rg.base_dir / "rolegate.db",
        server_extra="  forward_auth: {proxy: nginx}",
    )
    return text.replace(f"public_url: {rg.url}", f"public_url: {public}")


async def test_nginx_forward_auth(behind_nginx):
    public, rg = behind_nginx
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        # public route: no sign-in
        async with http.get(f"{public}/public/x", headers=JSON) as r:
            assert r.status == 200
        # no session: API 401, browser redirected to sign in and back to the page it asked for
        async with http.get(f"{public}/me-echo/x?y=1", headers=JSON, allow_redirects=False) as r:
            assert r.status == 401
        async with http.get(f"{public}/me-echo/x?y=1", headers=HTML, allow_redirects=False) as r:
            assert r.status == 302
            login = r.headers["Location"]
        assert login == f"{public}/.rolegate/login?rd=" + urllib.parse.quote(f"{public}/me-echo/x?y=1", safe="")
        async with http.get(login, headers=HTML, allow_redirects=False) as r:
            callback = await idp_login(http, r, "alice", "demo")
        assert callback.url.startswith(f"{public}/.rolegate/callback")
        async with http.get(callback.url, headers=HTML, allow_redirects=False) as r:
            assert r.status == 302
            assert r.headers["Location"] == f"{public}/me-echo/x?y=1"
        # signed in: through nginx to the backend, as alice, whatever the client claims
        async with http.get(f"{public}/me-echo/x?y=1", headers={**JSON, "X-Rolegate-User": "mallory"}) as r:
            assert r.status == 200, await r.text()
            echo = await r.json()
        assert echo["headers"]["X-Rolegate-User"] == "alice"
        assert echo["query"] == {"y": "1"}
        # a route that needs a permission nobody is granted yet: 403
        async with http.get(f"{public}/invoices/1", headers=JSON, allow_redirects=False) as r:
            assert r.status == 403
        # signed out: refused again
        async with http.post(f"{public}/.rolegate/logout", headers=JSON) as r:
            assert r.status == 200
        async with http.get(
            f"{public}/me-echo/x", headers={**JSON, "X-Rolegate-User": "alice"}, allow_redirects=False
        ) as r:
            assert r.status == 401


async def test_traefik_style_forward_auth(rolegate, http):
    from .conftest import rolegate_yaml, sign_in

    rolegate.swap(
        rolegate_yaml(
            url=rolegate.url,
            idp=rolegate.idp,
            db=rolegate.base_dir / "rolegate.db",
            backend_url=rolegate.config.upstreams["backend"].url,
            server_extra="  forward_auth: {proxy: traefik}",
        )
    )
    auth = f"{rolegate.url}/.rolegate/auth"
    fwd = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "apps.example.test",
        "X-Forwarded-Uri": "/me-echo/a?b=c",
    }
    async with http.get(auth, headers={**fwd, **JSON}, allow_redirects=False) as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="rolegate"'
    async with http.get(auth, headers={**fwd, **HTML}, allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == f"{rolegate.url}/.rolegate/login?rd=" + urllib.parse.quote(
            "https://apps.example.test/me-echo/a?b=c", safe=""
        )
    # a host nobody allowed is not a return target: sign-in still offered, back to our own URL
    async with http.get(auth, headers={**fwd, **HTML, "X-Forwarded-Host": "evil.test"}, allow_redirects=False) as r:
        assert r.status == 302
        assert "evil.test" not in r.headers["Location"]
    await sign_in(http, rolegate, "alice")
    async with http.get(auth, headers={**fwd, **JSON}) as r:
        assert r.status == 200
        assert r.headers["X-Rolegate-User"] == "alice"
        assert "staff" in r.headers["X-Rolegate-Groups"].split(",")
    async with http.get(auth, headers={**fwd, **JSON, "X-Forwarded-Uri": "/invoices/1"}) as r:
        assert r.status == 403
    async with http.get(auth, headers={**fwd, **JSON, "X-Forwarded-Uri": "/nowhere"}) as r:
        assert r.status == 403  # unmatched: denied
    async with http.get(auth, headers={**fwd, **JSON, "X-Forwarded-Method": "BREW"}) as r:
        assert r.status == 403
