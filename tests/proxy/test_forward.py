"""Forwarder against real servers: a tiny aiohttp proxy app in front of a real upstream.

Hostile upstreams that aiohttp would refuse to be are raw asyncio servers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from rolegate.errors import RolegateError
from rolegate.proxy.forward import Forwarder
from rolegate.proxy.upstream_pool import Upstream

SMALL_JSON = json.dumps({"id": 1, "name": "x" * 170}).encode()


# -- servers --------------------------------------------------------------


async def start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def start_raw(handler: RawHandler) -> tuple[asyncio.Server, int]:
    async def wrapped(reader, writer):
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def upstream_app(state: dict) -> web.Application:
    app = web.Application(client_max_size=2**40)

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        state.setdefault("seen", []).append(request)
        return web.json_response(
            {
                "method": request.method,
                "path_qs": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_len": len(body),
                "body_sha": hashlib.sha256(body).hexdigest(),
                "chunked": "chunked" in request.headers.get("Transfer-Encoding", ""),
            }
        )

    async def small(request: web.Request) -> web.Response:
        return web.Response(body=SMALL_JSON, content_type="application/json")

    async def sized(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.Response(body=b"a" * n, content_type="text/plain", headers={"X-Up": "1"})

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.Response(status=code, headers={"ETag": '"v1"'})

    async def stream(request: web.Request) -> web.StreamResponse:
        # chunked, n bytes in 64 KiB pieces, generated on the fly
        n = int(request.match_info["n"])
        resp = web.StreamResponse()
        resp.content_type = "application/octet-stream"
        await resp.prepare(request)
        block = b"z" * 65536
        sent = 0
        try:
            while sent < n:
                piece = block[: min(65536, n - sent)]
                await resp.write(piece)
                sent += len(piece)
        except (ConnectionError, asyncio.CancelledError):
            state["stream_aborted"] = sent
            raise
        await resp.write_eof()
        return resp

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        await state["sse_gate"].wait()
        await resp.write(b"data: second\n\n")
        await resp.write_eof()
        return resp

    async def upload(request: web.Request) -> web.Response:
        h = hashlib.sha256()
        n = 0
        async for chunk in request.content.iter_any():
            h.update(chunk)
            n += len(chunk)
        return web.json_response({"n": n, "sha": h.hexdigest()})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def slow_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"begin")
        await asyncio.sleep(5)
        await resp.write(b"end")
        return resp

    async def early_413(request: web.Request) -> web.Response:
        # Answers without reading the body, as real upstreams do.
        return web.Response(status=413, text="too big for me")

    app.router.add_route("*", "/echo{tail:.*}", echo)
    app.router.add_get("/small", small)
    app.router.add_get("/sized/{n}", sized)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/stream/{n}", stream)
    app.router.add_get("/sse", sse)
    app.router.add_route("*", "/upload", upload)
    app.router.add_get("/slow", slow)
    app.router.add_get("/slow-body", slow_body)
    app.router.add_post("/early413", early_413)
    return app


def proxy_app(forwarder: Forwarder, name: str = "up", options: dict | None = None) -> web.Application:
    options = options if options is not None else {}

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await forwarder.forward(
                request,
                name,
                request.raw_path,
                set_headers={
                    "X-Rolegate-Assertion": "minted",
                    "X-Rolegate-User": "alice",
                    **options.get("set_headers", {}),
                },
                response_filter=options.get("filter"),
            )
        except RolegateError as exc:
            # stands in for the pipeline's error rendering
            return web.json_response({"error": exc.code}, status=exc.status)

    app = web.Application(client_max_size=2**40)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


class Stack:
    def __init__(self) -> None:
        self.state: dict = {"sse_gate": asyncio.Event()}
        self.runners: list[web.AppRunner] = []
        self.forwarder: Forwarder | None = None
        self.session: aiohttp.ClientSession | None = None
        self.base = ""

    async def start(self, upstream_port: int | None = None, *, max_body=None, **up_kw) -> "Stack":
        if upstream_port is None:
            runner, upstream_port = await start_app(upstream_app(self.state))
            self.runners.append(runner)
        self.upstream_port = upstream_port
        self.forwarder = Forwarder(
            {"up": Upstream("up", f"http://127.0.0.1:{upstream_port}", **up_kw)},
            max_body=max_body,
        )
        self.options: dict = {}
        self.app = proxy_app(self.forwarder, options=self.options)
        runner, port = await start_app(self.app)
        self.runners.append(runner)
        self.base = f"http://127.0.0.1:{port}"
        self.port = port
        self.session = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def close(self) -> None:
        if self.session:
            await self.session.close()
        if self.forwarder:
            await self.forwarder.close()
        for r in reversed(self.runners):
            await r.cleanup()


@pytest.fixture
async def stack():
    s = Stack()
    await s.start(read_timeout=5)
    yield s
    await s.close()


@pytest.fixture
async def make_stack():
    made: list[Stack] = []

    async def make(upstream_port=None, **kw) -> Stack:
        s = await Stack().start(upstream_port, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()


def header_list(data: dict, name: str) -> list[str]:
    return [v for k, v in data["headers"] if k.lower() == name.lower()]


# -- basic forwarding -------------------------------------------------------


async def test_small_json_fast_path_and_keepalive_reuse(stack: Stack):
    for _ in range(5):
        async with stack.session.get(stack.base + "/small") as r:
            assert r.status == 200
            assert await r.read() == SMALL_JSON
            assert r.headers["Content-Type"] == "application/json"
            assert r.headers["Content-Length"] == str(len(SMALL_JSON))
    pool = stack.forwarder.pool("up")
    # sequential requests share one kept-alive upstream connection
    assert pool.idle_count == 1


async def test_path_qs_is_sent_verbatim(stack: Stack):
    async with stack.session.get(stack.base + "/echo/a%2Fb/c?x=1&y=%20") as r:
        data = await r.json()
    assert data["path_qs"] == "/echo/a%2Fb/c?x=1&y=%20"


async def test_upstream_base_path_is_prefixed(make_stack):
    s = await make_stack()
    await s.forwarder.close()
    s.forwarder = Forwarder({"up": Upstream("up", f"http://127.0.0.1:{s.upstream_port}/echo/base/")})
    # rebuild the proxy around the new forwarder
    runner, port = await start_app(proxy_app(s.forwarder))
    s.runners.append(runner)
    async with s.session.get(f"http://127.0.0.1:{port}/x?q=1") as r:
        data = await r.json()
    assert data["path_qs"] == "/echo/base/x?q=1"


async def test_forwarded_headers(stack: Stack):
    async with stack.session.get(
        stack.base + "/echo", headers={"X-Forwarded-For": "203.0.113.9", "Host": "app.example"}
    ) as r:
        data = await r.json()
    # The peer is not a trusted proxy: its claimed chain is dropped, not extended.
    assert header_list(data, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_list(data, "X-Forwarded-Proto") == ["http"]
    assert header_list(data, "X-Forwarded-Host") == ["app.example"]
    # Host is the upstream's own, like nginx's default
    assert header_list(data, "Host") == [f"127.0.0.1:{stack.upstream_port}"]


async def test_forwarded_for_is_extended_only_for_trusted_proxies(stack: Stack):
    stack.forwarder.trusted_proxies = (__import__("ipaddress").ip_network("127.0.0.0/8"),)
    async with stack.session.get(
        stack.base + "/echo",
        headers={"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=1.2.3.4", "X-Real-IP": "1.2.3.4"},
    ) as r:
        data = await r.json()
    assert header_list(data, "X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]
    assert header_list(data, "Forwarded") == [] and header_list(data, "X-Real-IP") == []


async def test_set_headers_replace_the_clients_and_empty_removes(stack: Stack):
    stack.options["set_headers"] = {"Cookie": "app=1", "X-Drop": ""}
    async with stack.session.get(
        stack.base + "/echo", headers={"Cookie": "rolegate_session=s; app=1", "X-Drop": "secret"}
    ) as r:
        data = await r.json()
    assert header_list(data, "Cookie") == ["app=1"]
    assert header_list(data, "X-Drop") == []


async def test_spoofed_rolegate_headers_are_replaced(stack: Stack):
    # raw socket: duplicates and odd casing exactly as a hostile client sends them
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    writer.write(
        b"GET /echo HTTP/1.1\r\nHost: x\r\n"
        b"X-Rolegate-User: mallory\r\nx-rolegate-user: mallory2\r\n"
        b"x-rolegate-assertion: forged1\r\nX-ROLEGATE-ASSERTION: forged2\r\n"
        b"X-Rolegate-Anything: z\r\n"
        b"Connection: keep-alive, X-Rolegate-User, X-Rolegate-Assertion, X-Forwarded-For, Content-Length\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nTrailer: X\r\n"
        b"Upgrade: h2c\r\nProxy-Connection: keep-alive\r\n"
        b"X-Custom: kept\r\n\r\n"
    )
    await writer.drain()
    head = await read_head(reader)
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
    data = json.loads(await reader.readexactly(length))
    writer.close()
    names = [k.lower() for k, _ in data["headers"]]
    assert header_list(data, "X-Rolegate-User") == ["alice"]
    assert header_list(data, "X-Rolegate-Assertion") == ["minted"]
    assert "x-rolegate-anything" not in names
    for hop in ("keep-alive", "te", "proxy-authorization", "trailer", "upgrade", "proxy-connection"):
        assert hop not in names, hop
    # rolegate's own X-Forwarded-For survives a Connection header that names it
    assert header_list(data, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_list(data, "X-Custom") == ["kept"]
    assert header_list(data, "Connection") == ["keep-alive"]


async def test_connection_named_headers_are_dropped(stack: Stack):
    async with stack.session.get(
        stack.base + "/echo", headers={"Connection": "X-Secret-Hop", "X-Secret-Hop": "1", "X-Other": "2"}
    ) as r:
        data = await r.json()
    assert header_list(data, "X-Secret-Hop") == []
    assert header_list(data, "X-Other") == ["2"]


async def test_response_hop_by_hop_headers_dropped():
    async def handler(reader, writer):
        await read_head(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Hop\r\nX-Hop: 1\r\n"
            b"Keep-Alive: timeout=3\r\nX-Kept: 1\r\nProxy-Authenticate: Basic\r\n\r\nok"
        )
        await writer.drain()
        await asyncio.sleep(0.2)

    server, port = await start_raw(handler)
    s = await Stack().start(port)
    try:
        async with s.session.get(s.base + "/") as r:
            assert await r.read() == b"ok"
            assert "X-Hop" not in r.headers
            assert "Keep-Alive" not in r.headers
            assert "Proxy-Authenticate" not in r.headers
            assert r.headers["X-Kept"] == "1"
    finally:
        await s.close()
        server.close()


async def test_head_has_no_body_but_keeps_length(stack: Stack):
    for _ in range(2):  # second HEAD proves the connection was left in a clean state
        async with stack.session.head(stack.base + "/sized/1000") as r:
            assert r.status == 200
            assert r.headers["Content-Length"] == "1000"
            assert await r.read() == b""
    async with stack.session.get(stack.base + "/sized/1000") as r:
        assert len(await r.read()) == 1000


@pytest.mark.parametrize("code", [204, 304])
async def test_no_body_statuses(stack: Stack, code: int):
    async with stack.session.get(stack.base + f"/status/{code}") as r:
        assert r.status == code
        assert await r.read() == b""
        assert r.headers["ETag"] == '"v1"'
    async with stack.session.get(stack.base + "/small") as r:
        assert await r.read() == SMALL_JSON


async def test_error_statuses_pass_through(stack: Stack):
    async with stack.session.get(stack.base + "/status/503") as r:
        assert r.status == 503


async def test_interim_1xx_responses_are_skipped():
    async def handler(reader, writer):
        await read_head(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")
        await writer.drain()
        await asyncio.sleep(0.2)

    server, port = await start_raw(handler)
    s = await Stack().start(port)
    try:
        async with s.session.post(s.base + "/", data=b"x") as r:
            assert r.status == 201
            assert await r.read() == b"done"
    finally:
        await s.close()
        server.close()


# -- request bodies ------------------------------------------------------------


async def test_request_body_content_length(stack: Stack):
    body = b"0123456789" * 100_000
    async with stack.session.post(stack.base + "/echo", data=body) as r:
        data = await r.json()
    assert data["body_len"] == len(body)
    assert data["body_sha"] == hashlib.sha256(body).hexdigest()
    assert not data["chunked"]


async def test_request_body_chunked(stack: Stack):
    async def gen():
        for i in range(50):
            yield bytes([65 + i % 26]) * 1000

    async with stack.session.post(stack.base + "/echo", data=gen()) as r:
        data = await r.json()
    expected = b"".join(bytes([65 + i % 26]) * 1000 for i in range(50))
    assert data["body_len"] == len(expected)
    assert data["body_sha"] == hashlib.sha256(expected).hexdigest()
    assert data["chunked"]


async def test_max_body_declared_length(make_stack):
    s = await make_stack(max_body=1000)
    async with s.session.post(s.base + "/echo", data=b"x" * 1001) as r:
        assert r.status == 413
    async with s.session.post(s.base + "/echo", data=b"x" * 1000) as r:
        assert (await r.json())["body_len"] == 1000


async def test_max_body_chunked_exceeded_mid_stream(make_stack):
    s = await make_stack(max_body=100_000)

    async def gen():
        for _ in range(100):
            yield b"y" * 10_000

    async with s.session.post(s.base + "/upload", data=gen()) as r:
        assert r.status == 413
    assert s.forwarder.pool("up").idle_count == 0  # half-sent request: connection dropped
    async with s.session.get(s.base + "/small") as r:
        assert await r.read() == SMALL_JSON


async def test_upstream_answers_before_reading_body(stack: Stack):
    async with stack.session.post(stack.base + "/early413", data=b"q" * 4_000_000) as r:
        assert r.status == 413
        assert await r.text() == "too big for me"
    async with stack.session.get(stack.base + "/small") as r:
        assert await r.read() == SMALL_JSON


# -- response bodies -----------------------------------------------------------


async def test_streamed_chunked_response(stack: Stack):
    async with stack.session.get(stack.base + "/stream/1000000") as r:
        assert r.headers.get("Transfer-Encoding") == "chunked"
        body = await r.read()
    assert body == b"z" * 1_000_000


async def test_streamed_content_length_response(stack: Stack):
    async with stack.session.get(stack.base + "/sized/3000000") as r:
        assert r.headers["Content-Length"] == "3000000"
        assert len(await r.read()) == 3_000_000
    async with stack.session.get(stack.base + "/small") as r:
        assert await r.read() == SMALL_JSON
    assert stack.forwarder.pool("up").idle_count == 1


async def test_close_delimited_response():
    async def handler(reader, writer):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for i in range(20):
            writer.write(b"line %d\n" % i)
            await writer.drain()
        # closing the connection ends the body

    server, port = await start_raw(handler)
    s = await Stack().start(port)
    try:
        async with s.session.get(s.base + "/") as r:
            assert r.status == 200
            assert await r.read() == b"".join(b"line %d\n" % i for i in range(20))
        assert s.forwarder.pool("up").idle_count == 0
    finally:
        await s.close()
        server.close()


async def test_sse_is_not_buffered(stack: Stack):
    async with stack.session.get(stack.base + "/sse") as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 10)
        assert first == b"data: first\n\n"
        # the upstream has not even been allowed to produce the second event yet
        stack.state["sse_gate"].set()
        second = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 10)
        assert second == b"data: second\n\n"


async def test_upstream_connection_close_is_not_reused():
    conns = 0

    async def handler(reader, writer):
        nonlocal conns
        conns += 1
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.5)  # keep the socket open: only the header says "close"

    server, port = await start_raw(handler)
    s = await Stack().start(port)
    try:
        for _ in range(3):
            async with s.session.get(s.base + "/") as r:
                assert await r.read() == b"ok"
        assert conns == 3
        assert s.forwarder.pool("up").idle_count == 0
    finally:
        await s.close()
        server.close()


async def test_http10_upstream_without_keepalive_is_not_reused():
    conns = 0

    async def handler(reader, writer):
        nonlocal conns
        conns += 1
        await read_head(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.3)

    server, port = await start_raw(handler)
    s = await Stack().start(port)
    try:
        for _ in range(2):
            async with s.session.get(s.base + "/") as r:
                assert await r.read() == b"ok"
        assert conns == 2
    finally:
        await s.close()
        server.close()


# -- idle close / retry ---------------------------------------------------------


def _idle_close_upstream(log: list):
    """Answers the first request of each connection; silently closes on the second."""

    async def handler(reader, writer):
        n = 0
        while True:
            head = await read_head(reader)
            n += 1
            log.append((n, head.split(b" ", 2)[0]))
            if n == 2:
                return  # the keep-alive race: gone without a byte
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    return handler


async def test_idempotent_request_retried_once_on_fresh_connection():
    log: list = []
    server, port = await start_raw(_idle_close_upstream(log))
    s = await Stack().start(port)
    try:
        for _ in range(2):
            async with s.session.get(s.base + "/") as r:
                assert r.status == 200
                assert await r.read() == b"ok"
        # second GET hit the dying connection, then succeeded on a new one
        assert [n for n, _ in log] == [1, 2, 1]
    finally:
        await s.close()
        server.close()


async def test_non_idempotent_request_is_not_retried():
    log: list = []
    server, port = await start_raw(_idle_close_upstream(log))
    s = await Stack().start(port)
    try:
        async with s.session.post(s.base + "/") as r:
            assert r.status == 200
        async with s.session.post(s.base + "/", data=b"body") as r:
            assert r.status == 502
        assert [n for n, _ in log] == [1, 2]
    finally:
        await s.close()
        server.close()


async def test_connection_closed_while_idle_is_not_used():
    conns = 0

    async def handler(reader, writer):
        nonlocal conns
        conns += 1
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # then close while the proxy keeps it idle

    server, port = await start_raw(handler)
    s = await Stack().start(port)
    try:
        async with s.session.post(s.base + "/", data=b"x") as r:
            assert await r.read() == b"ok"
        await asyncio.sleep(0.1)
        assert s.forwarder.pool("up").idle_count == 0  # noticed the close
        async with s.session.post(s.base + "/", data=b"x") as r:
            assert r.status == 200  # non-idempotent, yet fine: the dead one was never used
        assert conns == 2
    finally:
        await s.close()
        server.close()


# -- failures -------------------------------------------------------------------


async def test_upstream_refused_is_502(make_stack):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    s = await make_stack(port)
    async with s.session.get(s.base + "/x") as r:
        assert r.status == 502
        assert (await r.json())["error"] == "bad_gateway"


async def test_connect_timeout_is_502_within_bound(make_stack):
    # A listener whose accept queue is full drops SYNs: connect hangs.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(c)
    s = await make_stack(port, connect_timeout=0.3)
    try:
        async with asyncio.timeout(20):  # bounded, not a timing assertion
            async with s.session.get(s.base + "/x") as r:
                assert r.status == 502
    finally:
        for c in fillers:
            c.close()
        lsock.close()


async def test_read_timeout_is_504(make_stack):
    s = await make_stack(read_timeout=0.3)
    async with s.session.get(s.base + "/slow") as r:
        assert r.status == 504
        assert (await r.json())["error"] == "gateway_timeout"


async def test_read_timeout_mid_body_cuts_client(make_stack):
    s = await make_stack(read_timeout=0.3)
    async with s.session.get(s.base + "/slow-body") as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()


@pytest.mark.parametrize(
    "garbage",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nBad Header Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nxx\r\n",
        b"\x00\x01\x02\x03" * 100,
    ],
)
async def test_upstream_garbage_is_502(garbage: bytes):
    async def handler(reader, writer):
        await read_head(reader)
        writer.write(garbage)
        await writer.drain()
        await asyncio.sleep(0.3)

    server, port = await start_raw(handler)
    s = await Stack().start(port)
    try:
        async with s.session.get(s.base + "/") as r:
            # either refused outright, or (garbage after a valid head) cut off mid-body
            if r.status == 200:
                with pytest.raises(aiohttp.ClientPayloadError):
                    await r.read()
            else:
                assert r.status == 502
        assert s.forwarder.pool("up").idle_count == 0
    finally:
        await s.close()
        server.close()


async def test_huge_response_headers_are_502():
    async def handler(reader, writer):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"a" * 200_000 + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)

    server, port = await start_raw(handler)
    s = await Stack().start(port)
    try:
        async with s.session.get(s.base + "/") as r:
            assert r.status == 502
    finally:
        await s.close()
        server.close()


async def test_too_many_response_headers_are_502():
    async def handler(reader, writer):
        await read_head(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(1000)) + b"Content-Length: 0\r\n\r\n"
        )
        await writer.drain()
        await asyncio.sleep(0.3)

    server, port = await start_raw(handler)
    s = await Stack().start(port)
    try:
        async with s.session.get(s.base + "/") as r:
            assert r.status == 502
    finally:
        await s.close()
        server.close()


async def test_upstream_closes_mid_body():
    async def handler(reader, writer):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"p" * 300_000)
        await writer.drain()
        # then vanish

    server, port = await start_raw(handler)
    s = await Stack().start(port)
    try:
        async with s.session.get(s.base + "/") as r:
            assert r.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()
        assert s.forwarder.pool("up").idle_count == 0
    finally:
        await s.close()
        server.close()


async def test_upstream_closes_before_head_is_502():
    async def handler(reader, writer):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 O")

    server, port = await start_raw(handler)
    s = await Stack().start(port)
    try:
        async with s.session.get(s.base + "/") as r:
            assert r.status == 502
    finally:
        await s.close()
        server.close()


async def test_upstream_sends_extra_bytes_after_response_not_reused():
    conns = 0

    async def handler(reader, writer):
        nonlocal conns
        conns += 1
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
        await writer.drain()
        await asyncio.sleep(0.5)

    server, port = await start_raw(handler)
    s = await Stack().start(port)
    try:
        for _ in range(2):
            async with s.session.get(s.base + "/") as r:
                assert await r.read() == b"ok"
        assert conns == 2  # the smuggled second response never answered anyone
    finally:
        await s.close()
        server.close()


async def test_client_disconnect_mid_stream_closes_upstream(stack: Stack):
    r = await stack.session.get(stack.base + "/stream/1000000000")
    await r.content.readexactly(1_000_000)
    r.close()  # drop the client connection mid-body
    for _ in range(200):
        if "stream_aborted" in stack.state:
            break
        await asyncio.sleep(0.05)
    assert "stream_aborted" in stack.state
    assert stack.state["stream_aborted"] < 1_000_000_000
    assert stack.forwarder.pool("up").idle_count == 0


async def test_bad_path_qs_is_refused(stack: Stack):
    with pytest.raises(RolegateError) as info:
        await stack.forwarder.forward(None, "up", "/a b")  # type: ignore[arg-type]
    assert info.value.status == 400
    with pytest.raises(RolegateError):
        await stack.forwarder.forward(None, "up", "/a\r\nX-Evil: 1")  # type: ignore[arg-type]
    with pytest.raises(RolegateError):
        await stack.forwarder.forward(None, "up", "http://other/")  # type: ignore[arg-type]


async def test_unknown_upstream_is_502(stack: Stack):
    with pytest.raises(RolegateError) as info:
        await stack.forwarder.forward(None, "nope", "/")  # type: ignore[arg-type]
    assert info.value.status == 502


# -- response filter -------------------------------------------------------------


class UpperTransform:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls = 0

    def __call__(self, body: bytes) -> bytes:
        self.calls += 1
        return body.upper() + b"!"


async def test_response_filter_transforms_small_json(stack: Stack):
    seen = []
    transform = UpperTransform(10_000)

    def response_filter(status, headers):
        seen.append((status, headers.get("Content-Type")))
        return transform if headers.get("Content-Type", "").startswith("application/json") else None

    stack.options["filter"] = response_filter
    async with stack.session.get(stack.base + "/small") as r:
        body = await r.read()
    assert body == SMALL_JSON.upper() + b"!"
    assert r.headers["Content-Length"] == str(len(body))
    async with stack.session.get(stack.base + "/echo", headers={"Accept-Encoding": "gzip"}) as r:
        data = json.loads((await r.read())[:-1].lower())
    assert header_list(data, "accept-encoding") == ["identity"]
    # non-JSON passes untouched (and streamed)
    async with stack.session.get(stack.base + "/stream/200000") as r:
        assert await r.read() == b"z" * 200_000
    assert seen[0] == (200, "application/json")


async def test_response_filter_oversize_fails_closed(stack: Stack):
    stack.options["filter"] = lambda status, headers: UpperTransform(1000)
    async with stack.session.get(stack.base + "/sized/5000") as r:  # declared too big
        assert r.status == 502
    async with stack.session.get(stack.base + "/stream/5000") as r:  # chunked, grows too big
        assert r.status == 502
    async with stack.session.get(stack.base + "/sized/10") as r:
        assert await r.read() == b"AAAAAAAAAA!"
