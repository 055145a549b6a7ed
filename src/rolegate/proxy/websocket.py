"""WebSocket pass-through: one upstream socket per client socket, pumped both ways.

The upstream handshake happens first, so an unreachable upstream is a plain
502 to the client instead of an accepted-then-dropped socket. Pings, pongs
and close codes are relayed rather than answered locally, so both ends see
the conversation they would have had without rolegate.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from rolegate.errors import UpstreamTimeout, UpstreamUnavailable

__all__ = ["is_websocket_upgrade", "proxy_websocket"]

# Close codes a peer may not put on the wire (RFC 6455 §7.4.1); relay as 1011/1000.
_NOT_SENDABLE = {1004, 1005, 1006, 1015}
# Either end of the pass-through: frames are pumped from one to the other alike.
_Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


def is_websocket_upgrade(request: web.BaseRequest) -> bool:
    """True for a GET that asks to switch to the websocket protocol."""
    if request.method != "GET":
        return False
    upgrade = request.headers.get("Upgrade", "")
    if upgrade.lower() != "websocket":
        return False
    return "upgrade" in request.headers.get("Connection", "").lower()


def _close_code(code: int | None, fallback: int) -> int:
    if code is None or code in _NOT_SENDABLE or not (1000 <= code <= 4999):
        return fallback
    return code


async def proxy_websocket(
    request: web.BaseRequest,
    session: aiohttp.ClientSession,
    url: str | URL,
    headers: Mapping[str, str],
    *,
    connect_timeout: float,
    max_msg_size: int,
    ssl_context: ssl.SSLContext | None = None,
) -> web.WebSocketResponse:
    """Connect upstream, accept the client, pump frames until either side closes."""
    protocols = tuple(
        p.strip()
        for value in request.headers.getall("Sec-WebSocket-Protocol", ())
        for p in value.split(",")
        if p.strip()
    )
    try:
        async with asyncio.timeout(connect_timeout):
            upstream_ws = await session.ws_connect(
                url,
                headers=headers,
                protocols=protocols,
                autoping=False,
                autoclose=False,
                max_msg_size=max_msg_size,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=connect_timeout),
                compress=0,
                ssl=ssl_context if ssl_context is not None else True,
            )
    except asyncio.TimeoutError:
        raise UpstreamTimeout(f"websocket handshake to {url} timed out") from None
    except aiohttp.WSServerHandshakeError as exc:
        raise UpstreamUnavailable(f"upstream refused websocket upgrade: {exc.status}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnavailable(f"websocket connect to {url} failed: {exc!r}") from None

    client_ws = web.WebSocketResponse(
        protocols=(upstream_ws.protocol,) if upstream_ws.protocol else (),
        autoping=False,
        autoclose=False,
        max_msg_size=max_msg_size,
        compress=False,
    )
    try:
        await client_ws.prepare(request)
    except BaseException:
        await upstream_ws.close()
        raise

    async def pump(src: _Socket, dst: _Socket) -> None:
        # Returns when src closed (or errored), after telling dst how it ended.
        code = 1011
        message = b""
        try:
            while True:
                msg = await src.receive()
                kind = msg.type
                if kind is WSMsgType.TEXT:
                    await dst.send_str(msg.data)
                elif kind is WSMsgType.BINARY:
                    await dst.send_bytes(msg.data)
                elif kind is WSMsgType.PING:
                    await dst.ping(msg.data)
                elif kind is WSMsgType.PONG:
                    await dst.pong(msg.data)
                elif kind is WSMsgType.CLOSE:
                    code = _close_code(msg.data, 1000)
                    extra = msg.extra
                    message = extra.encode("utf-8") if isinstance(extra, str) else (extra or b"")
                    break
                else:  # CLOSING / CLOSED / ERROR: abnormal end
                    break
        except (ConnectionError, RuntimeError, aiohttp.ClientError, asyncio.TimeoutError):
            code = 1011
        finally:
            with contextlib.suppress(Exception):
                await dst.close(code=code, message=message[:123])

    to_upstream = asyncio.ensure_future(pump(client_ws, upstream_ws))
    to_client = asyncio.ensure_future(pump(upstream_ws, client_ws))
    try:
        done, pending = await asyncio.wait((to_upstream, to_client), return_when=asyncio.FIRST_COMPLETED)
        # The other direction has just been told to close; give it a moment to
        # finish the closing handshake, then stop waiting.
        if pending:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 5)
    finally:
        for task in (to_upstream, to_client):
            if not task.done():
                task.cancel()
        with contextlib.suppress(Exception):
            await upstream_ws.close()
        with contextlib.suppress(Exception):
            await client_ws.close()
    return client_ws
