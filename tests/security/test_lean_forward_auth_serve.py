"""Issue 21: the lean forward-auth listener through ``rolegate serve`` (2 workers, each binding
``server.forward_auth.listen`` with SO_REUSEPORT) behind a real nginx running the shipped snippet with its
subrequest pointed at the lean listener.

The remembered answer reaches the app (who nginx says is asking), a policy change (a binding removed from the
config, SIGHUP) bites at the next request through nginx, and bytes that are not a forward-auth question —
malformed, invalid UTF-8, oversized — never crash a worker and are never allowed. The workers say at the
drain how many answers they wrote themselves: a run where the lean listener answered nothing fails.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from rolegate_lab import free_port
from tests.security.test_forward_auth_real_proxies import NGINX_EXAMPLE, _fill, _stop, _wait_listening
from tests.support.serve import RolegateProcess

ROOT = Path(__file__).resolve().parents[2]


def config(upstream: str, public: str, lean_port: int, *, granted: bool = True) -> dict:
    return {
        "server": {
            "listen": "127.0.0.1:0",
            "public_url": public,
            "workers": 2,
            "forward_auth": {"proxy": "nginx", "listen": f"127.0.0.1:{lean_port}"},
        },
        "storage": {"url": "sqlite:///rolegate.db"},
        "session": {"secret": "lean-serve-test-secret-" + "s" * 40},
        "permissions": ["app:view"],
        "roles": {"viewer": {"permissions": ["app:view"]}},
        "bindings": [{"group": "staff", "role": "viewer"}] if granted else [],
        "upstreams": {"app": {"url": upstream}},
        "routes": [
            {"path": "/api/**", "mode": "enforce", "permission": "app:view", "upstream": "app"},
            {"path": "/public/**", "mode": "public", "upstream": "app"},
        ],
    }


def start_nginx(workdir: Path, *, listen: int, rolegate_port: int, lean_port: int, backend_port: int):
    example = _fill(
        NGINX_EXAMPLE.read_text(),
        {
            "server 127.0.0.1:8080;": f"server 127.0.0.1:{rolegate_port};",
            "server 127.0.0.1:9091;": f"server 127.0.0.1:{lean_port};",
            "server 127.0.0.1:8081;": f"server 127.0.0.1:{backend_port};",
            "listen 8000;": f"listen 127.0.0.1:{listen};",
            "proxy_pass http://rolegate/.rolegate/auth;": "proxy_pass http://rolegate_auth/.rolegate/auth;",
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
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    include {workdir}/rolegate-forward-auth.conf;
}}
""")
    proc = subprocess.Popen(
        ["nginx", "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_listening(proc, listen, "nginx", workdir / "error.log")
    return proc


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"user": request.headers.get("X-Rolegate-User", ""), "path": request.path})


def session_cookie(config_path: Path, username: str, group: str) -> str:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "session_cookie.py"), str(config_path), username, group],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=config_path.parent,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


async def raw(port: int, data: bytes, wait: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), wait)
            if not chunk:
                break
            out += chunk
    except (asyncio.TimeoutError, ConnectionResetError):
        pass
    writer.close()
    return out


@pytest.fixture
async def stack(tmp_path: Path):
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    backend_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", backend_port).start()
    public_port, lean_port = free_port(), free_port()
    public = f"http://127.0.0.1:{public_port}"
    rg = RolegateProcess(config(f"http://127.0.0.1:{backend_port}", public, lean_port), tmp_path / "rg")
    rg.start()
    nginx = None
    try:
        nginx = start_nginx(
            tmp_path, listen=public_port, rolegate_port=rg.port, lean_port=lean_port, backend_port=backend_port
        )
        yield rg, public, lean_port, backend_port
    finally:
        if nginx is not None:
            _stop(nginx)
        rg.stop()
        await runner.cleanup()


def answered_here(rg: RolegateProcess) -> int:
    return sum(int(n) for n in re.findall(r"lean forward-auth listener draining: (\d+) answered here", rg.log()))


async def test_remembered_answers_and_a_policy_change_through_nginx(stack) -> None:
    rg, public, lean_port, backend_port = stack
    cookie = session_cookie(rg.config_path, "dora", "staff")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for _ in range(40):
            async with http.get(f"{public}/api/x", headers={"Cookie": cookie}) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["user"] == "dora"
        async with http.get(f"{public}/api/x") as resp:
            assert resp.status == 401
        workers = rg.worker_pids()
        # the binding that gives dora the route is removed: the next request is refused
        reloads = rg.log().count("config reloaded")
        rg.write_config(config(f"http://127.0.0.1:{backend_port}", public, lean_port, granted=False))
        rg.signal(signal.SIGHUP)
        for _ in range(200):
            if rg.log().count("config reloaded") >= reloads + 2:  # both workers
                break
            await asyncio.sleep(0.05)
        for _ in range(10):
            async with http.get(f"{public}/api/x", headers={"Cookie": cookie}) as resp:
                assert resp.status == 403, await resp.text()
        assert rg.worker_pids() == workers
    rg.stop()
    assert answered_here(rg) > 0, "the lean listener answered nothing itself:\n" + rg.log()[-2000:]


async def test_malformed_bytes_never_crash_a_worker_nor_allow(stack) -> None:
    rg, public, lean_port, _ = stack
    cookie = session_cookie(rg.config_path, "dora", "staff")
    head = (
        f"X-Original-URI: /api/x\r\nX-Original-Method: GET\r\nX-Forwarded-Host: {public[7:]}\r\n"
        f"X-Forwarded-Proto: http\r\nCookie: {cookie}\r\n"
    ).encode()
    good = b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for _ in range(10):  # remembered by both workers, whichever nginx's connections reach
            async with http.get(f"{public}/api/x", headers={"Cookie": cookie}) as resp:
                assert resp.status == 200
    workers = rg.worker_pids()
    # invalid UTF-8 in a header beside a valid credential: relayed, answered as the main port answers it
    odd = b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\nX-Note: \xff\xfe\xc0\xaf\r\n" + head + b"\r\n"
    on_lean, on_main = await raw(lean_port, odd, wait=0.5), await raw(rg.port, odd, wait=0.5)
    assert on_lean.split(b"\r\n")[0] == on_main.split(b"\r\n")[0] != b""
    attempts = [
        b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\nCookie: rolegate_session=\xff\xff\r\nX-Original-URI: /api/x\r\n"
        b"X-Original-Method: GET\r\nX-Forwarded-Host: x\r\n\r\n",
        b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 300_000 + b"\r\n" + head + b"\r\n",
        b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1\r\n" * 5000 + head + b"\r\n",
        b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n"
        + head
        + b"\r\nzzz\r\n",
        b"\x00\x01\x02\x03" * 100,
        b"GET /.rolegate/auth\x00 HTTP/1.1\r\n" + head + b"\r\n",
        b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\n" + head,  # a head that never ends
    ]
    for data in attempts:
        answer = await raw(lean_port, data, wait=1.0)
        assert not answer.startswith(b"HTTP/1.1 200"), (data[:60], answer[:200])
    assert rg.worker_pids() == workers, "a worker died:\n" + rg.log()[-2000:]
    assert (await raw(lean_port, good, wait=0.5)).startswith(b"HTTP/1.1 200 ")
    assert "Traceback" not in rg.log(), rg.log()[-3000:]


async def test_sigterm_drains_the_lean_listener(stack) -> None:
    rg, public, lean_port, _ = stack
    cookie = session_cookie(rg.config_path, "dora", "staff")
    head = (
        f"X-Original-URI: /api/x\r\nX-Original-Method: GET\r\nX-Forwarded-Host: {public[7:]}\r\n"
        f"X-Forwarded-Proto: http\r\nCookie: {cookie}\r\n"
    ).encode()
    request = b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", lean_port)
    writer.write(request)
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
    rg.signal(signal.SIGTERM)
    # the kept-alive, idle connection is closed by the drain (not reset mid-answer), and the server exits cleanly
    rest = await asyncio.wait_for(reader.read(), 30)
    assert rest == b""
    writer.close()
    assert rg.proc is not None and rg.proc.wait(30) == 0, rg.log()[-2000:]
    assert "lean forward-auth listener draining" in rg.log()
