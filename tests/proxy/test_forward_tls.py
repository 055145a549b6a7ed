"""https:// upstreams: the forwarder over real TLS servers signed by a private CA.

The certificate is always verified: an unknown CA or a certificate for another host is a
502 before a byte of the request is sent.
"""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from rolegate.config.loader import load_config_text
from rolegate.errors import ConfigError
from rolegate.proxy.forward import Forwarder
from rolegate.proxy.upstream_pool import Upstream
from rolegate.server.runtime import Compiled
from tests.proxy.test_forward import SMALL_JSON, proxy_app, start_app, upstream_app
from tests.proxy.test_forward_websocket import ws_upstream
from tests.support.tls import TestCA


async def start_tls_app(app: web.Application, context: ssl.SSLContext) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@pytest.fixture
def ca(tmp_path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
async def through():
    """``through(upstream_app, Upstream)``: the upstream served over TLS, a proxy in front."""
    cleanup: list = []

    async def make(app: web.Application, context: ssl.SSLContext, url_of, **up_kw):
        up_runner, up_port = await start_tls_app(app, context)
        fwd = Forwarder({"up": Upstream("up", url_of(up_port), **up_kw)})
        px_runner, px_port = await start_app(proxy_app(fwd))
        cleanup.extend([up_runner.cleanup, fwd.close, px_runner.cleanup])
        return fwd, f"http://127.0.0.1:{px_port}"

    yield make
    for close in reversed(cleanup):
        await close()


async def test_https_upstream_forwards_and_keeps_the_connection_alive(ca, through):
    state: dict = {}
    fwd, base = await through(
        upstream_app(state),
        ca.server_context("127.0.0.1"),
        lambda port: f"https://127.0.0.1:{port}",
        ca_file=str(ca.pem),
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(base + "/small") as r:
                assert r.status == 200 and await r.read() == SMALL_JSON
        body = b"x" * 300_000
        async with http.post(base + "/echo/upload?q=1", data=body) as r:
            echoed = await r.json()
            assert r.status == 200 and echoed["body_len"] == len(body) and echoed["path_qs"] == "/echo/upload?q=1"
            # The Host header names the upstream as its URL does (what its certificate is for).
            assert dict(echoed["headers"])["Host"].startswith("127.0.0.1:")
    assert fwd.pool("up").idle_count == 1  # one TLS connection, reused


@pytest.mark.parametrize(
    "names, trust_ca",
    [
        (("127.0.0.1",), False),  # the system store only: the private CA is not in it
        (("other.example.com",), True),  # a good CA, but the certificate is for another host
    ],
    ids=["unknown-ca", "other-host"],
)
async def test_a_certificate_that_does_not_verify_is_502_and_nothing_is_sent(ca, through, names, trust_ca):
    state: dict = {}
    fwd, base = await through(
        upstream_app(state),
        ca.server_context(*names),
        lambda port: f"https://127.0.0.1:{port}",
        **({"ca_file": str(ca.pem)} if trust_ca else {}),
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/echo/secret", headers={"X-Token": "t"}) as r:
            assert r.status == 502 and (await r.json())["error"] == "bad_gateway"
    assert "seen" not in state


async def test_streamed_and_close_delimited_bodies_over_tls(ca, through):
    fwd, base = await through(
        upstream_app({}), ca.server_context("127.0.0.1"), lambda port: f"https://127.0.0.1:{port}", ca_file=str(ca.pem)
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/stream/3000000") as r:  # chunked, 64 KiB pieces
            assert r.status == 200 and len(await r.read()) == 3_000_000

    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for i in range(20):
            writer.write(b"line %d\n" % i)
            await writer.drain()
        writer.close()  # the TLS close ends the body

    server = await asyncio.start_server(close_delimited, "127.0.0.1", 0, ssl=ca.server_context("127.0.0.1"))
    port = server.sockets[0].getsockname()[1]
    fwd = Forwarder({"up": Upstream("up", f"https://127.0.0.1:{port}", ca_file=str(ca.pem))})
    px_runner, px_port = await start_app(proxy_app(fwd))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{px_port}/") as r:
                assert r.status == 200
                assert await r.read() == b"".join(b"line %d\n" % i for i in range(20))
        assert fwd.pool("up").idle_count == 0
    finally:
        await fwd.close()
        await px_runner.cleanup()
        server.close()


async def test_a_host_name_url_is_verified_against_that_name(ca, through):
    state: dict = {}
    fwd, base = await through(
        upstream_app(state),
        ca.server_context("localhost"),
        lambda port: f"https://localhost:{port}",
        ca_file=str(ca.pem),
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/small") as r:
            assert r.status == 200 and await r.read() == SMALL_JSON


async def test_websocket_to_an_https_upstream_uses_tls(ca, through):
    state: dict = {"closed": asyncio.Event()}
    fwd, base = await through(
        ws_upstream(state),
        ca.server_context("127.0.0.1"),
        lambda port: f"https://127.0.0.1:{port}",
        ca_file=str(ca.pem),
    )
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(base + "/ws", protocols=("chat.v2",)) as ws:
            await ws.send_str("hello")
            msg = await ws.receive(timeout=5)
            assert msg.type is WSMsgType.TEXT and msg.data == "echo:hello"


async def test_websocket_to_an_untrusted_https_upstream_is_refused(ca, through):
    state: dict = {"closed": asyncio.Event()}
    fwd, base = await through(
        ws_upstream(state), ca.server_context("127.0.0.1"), lambda port: f"https://127.0.0.1:{port}"
    )
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(base + "/ws")
        assert info.value.status == 502
    assert "headers" not in state


# --- configuration ------------------------------------------------------------------


def _config(upstream: str) -> str:
    return f"""
server: {{listen: "127.0.0.1:0", public_url: "http://127.0.0.1:8080"}}
upstreams:
  app: {upstream}
routes:
  - {{path: /x, mode: public, upstream: app}}
"""


def test_https_url_and_ca_file_compile(ca):
    config = load_config_text(_config(f"{{url: 'https://app.internal', ca_file: '{ca.pem}'}}"))
    up = Compiled(config).upstreams["app"]
    assert up.port == 443 and up.ssl is not None and up.ssl.verify_mode == ssl.CERT_REQUIRED
    assert up.ssl.check_hostname


@pytest.mark.parametrize(
    "upstream, fragment",
    [
        ("{url: 'http://app.internal', ca_file: 'ca.pem'}", "ca_file is for https:// upstreams"),
        ("{url: 'ftp://app.internal'}", "http(s)://"),
    ],
)
def test_tls_settings_that_cannot_work_are_config_errors(upstream, fragment):
    with pytest.raises(ConfigError) as info:
        load_config_text(_config(upstream), file="rolegate.yaml")
    assert fragment in str(info.value) and "upstreams.app" in str(info.value)


def test_an_unreadable_ca_file_is_named(tmp_path):
    (tmp_path / "not-a-ca.pem").write_text("hello")
    for path in (tmp_path / "missing.pem", tmp_path / "not-a-ca.pem"):
        config = load_config_text(_config(f"{{url: 'https://app.internal', ca_file: '{path}'}}"))
        with pytest.raises(ConfigError) as info:
            Compiled(config)
        assert f"upstreams.app: upstream 'app': ca_file '{path}' could not be read" in str(info.value)
