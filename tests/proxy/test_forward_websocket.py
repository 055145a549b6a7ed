"""WebSocket pass-through through the Forwarder: frames, pings, close codes, both ways."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from rolegate.proxy.forward import Forwarder
from rolegate.proxy.upstream_pool import Upstream
from rolegate.errors import RolegateError


async def start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def proxy_app(forwarder: Forwarder) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await forwarder.forward(request, "up", request.raw_path, set_headers={"X-Rolegate-User": "alice"})
        except RolegateError as exc:
            return web.json_response({"error": exc.code}, status=exc.status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def ws_upstream(state: dict) -> web.Application:
    async def ws(request: web.Request) -> web.WebSocketResponse:
        state["headers"] = dict(request.headers)
        sock = web.WebSocketResponse(protocols=("chat.v2",), autoping=False)
        await sock.prepare(request)
        async for msg in sock:
            if msg.type is WSMsgType.TEXT:
                if msg.data.startswith("close:"):
                    await sock.close(code=int(msg.data[6:]), message=b"bye from upstream")
                    break
                await sock.send_str("echo:" + msg.data)
            elif msg.type is WSMsgType.BINARY:
                await sock.send_bytes(msg.data[::-1])
            elif msg.type is WSMsgType.PING:
                state["ping"] = msg.data
                await sock.pong(msg.data)
            elif msg.type is WSMsgType.PONG:
                state["pong"] = msg.data
        state["close_code"] = sock.close_code
        state["closed"].set()
        return sock

    async def ping_me(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse(autoping=False)
        await sock.prepare(request)
        await sock.ping(b"are-you-there")
        msg = await sock.receive()
        state["client_pong"] = (msg.type, msg.data)
        await sock.close(code=4001, message=b"done")
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    app.router.add_get("/ping-me", ping_me)
    return app


@pytest.fixture
async def ws_stack():
    state: dict = {"closed": asyncio.Event()}
    up_runner, up_port = await start_app(ws_upstream(state))
    fwd = Forwarder({"up": Upstream("up", f"http://127.0.0.1:{up_port}")})
    px_runner, px_port = await start_app(proxy_app(fwd))
    session = aiohttp.ClientSession()
    yield state, f"http://127.0.0.1:{px_port}", session
    await session.close()
    await fwd.close()
    await px_runner.cleanup()
    await up_runner.cleanup()


async def test_text_binary_and_headers(ws_stack):
    state, base, session = ws_stack
    async with session.ws_connect(
        base + "/ws", protocols=("chat.v2", "chat.v1"), headers={"X-Rolegate-User": "mallory"}
    ) as ws:
        assert ws.protocol == "chat.v2"
        await ws.send_str("hello")
        assert (await ws.receive(timeout=10)).data == "echo:hello"
        await ws.send_bytes(b"\x00\x01\x02")
        assert (await ws.receive(timeout=10)).data == b"\x02\x01\x00"
    await asyncio.wait_for(state["closed"].wait(), 10)
    assert state["headers"]["X-Rolegate-User"] == "alice"
    assert state["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert state["close_code"] == 1000


async def test_ping_pong_relayed_client_to_upstream(ws_stack):
    state, base, session = ws_stack
    async with session.ws_connect(base + "/ws", autoping=False) as ws:
        await ws.ping(b"p1")
        msg = await ws.receive(timeout=10)
        assert msg.type is WSMsgType.PONG and msg.data == b"p1"
    assert state["ping"] == b"p1"


async def test_ping_from_upstream_reaches_client(ws_stack):
    state, base, session = ws_stack
    async with session.ws_connect(base + "/ping-me", autoping=False) as ws:
        msg = await ws.receive(timeout=10)
        assert msg.type is WSMsgType.PING and msg.data == b"are-you-there"
        await ws.pong(msg.data)
        msg = await ws.receive(timeout=10)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 4001
    assert state["client_pong"] == (WSMsgType.PONG, b"are-you-there")


async def test_upstream_close_code_reaches_client(ws_stack):
    state, base, session = ws_stack
    async with session.ws_connect(base + "/ws") as ws:
        await ws.send_str("close:4005")
        msg = await ws.receive(timeout=10)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 4005
        assert msg.extra == "bye from upstream"


async def test_client_close_code_reaches_upstream(ws_stack):
    state, base, session = ws_stack
    ws = await session.ws_connect(base + "/ws")
    await ws.send_str("x")
    await ws.receive(timeout=10)
    await ws.close(code=4321, message=b"client leaving")
    await asyncio.wait_for(state["closed"].wait(), 10)
    assert state["close_code"] == 4321


async def test_upstream_without_websocket_is_502(ws_stack):
    state, base, session = ws_stack
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(base + "/not-a-ws")
    assert info.value.status == 502
