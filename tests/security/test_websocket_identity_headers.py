"""A WebSocket upgrade carries no identity header of the client's to the backend (issue 26: the strip on the
upgrade path was held by no test, since the one test sent only a header rolegate overwrites anyway)."""

from __future__ import annotations

import asyncio

import aiohttp

from rolegate.proxy.forward import Forwarder
from rolegate.proxy.upstream_pool import Upstream
from tests.proxy.test_forward_websocket import proxy_app, start_app, ws_upstream

SPOOFED = {
    "X-Rolegate-Roles": "admin",
    "X-Rolegate-Email": "mallory@example.com",
    "X-Rolegate-Assertion": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
    "X-Rolegate-Anything": "x",
}


async def test_upgrade_drops_every_client_identity_header():
    state: dict = {"closed": asyncio.Event()}
    up_runner, up_port = await start_app(ws_upstream(state))
    fwd = Forwarder({"up": Upstream("up", f"http://127.0.0.1:{up_port}")})
    px_runner, px_port = await start_app(proxy_app(fwd))  # rolegate sets only X-Rolegate-User
    try:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{px_port}/ws", headers=SPOOFED) as ws:
                await ws.send_str("hello")
                assert (await ws.receive(timeout=10)).data == "echo:hello"
        await asyncio.wait_for(state["closed"].wait(), 10)
    finally:
        await fwd.close()
        await px_runner.cleanup()
        await up_runner.cleanup()
    received = {k.lower(): v for k, v in state["headers"].items()}
    assert received["x-rolegate-user"] == "alice"
    leaked = sorted(k for k in received if k.startswith("x-rolegate-") and k != "x-rolegate-user")
    assert not leaked, f"client identity headers reached the backend on an upgrade: {leaked}"
