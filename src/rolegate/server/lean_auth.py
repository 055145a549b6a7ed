"""The lean forward-auth listener (``server.forward_auth.listen``): remembered answers at the cost of a
parse and a dictionary look-up, everything else handed to aiohttp.

A front proxy asks forward-auth about every request, and most of those questions were answered a moment
ago for the same credential. aiohttp's request machinery costs more than that answer (issue 21: ~35 µs an
empty handler, ~74 µs a remembered forward-auth answer, against ~10 µs a bare asyncio protocol). So each
worker may also listen on ``server.forward_auth.listen`` (SO_REUSEPORT, like the main listener), with
an asyncio protocol per connection that parses with ``httptools`` (uvicorn's parser) and decides ONE
thing: is this a plain forward-auth subrequest, from a trusted proxy peer, whose credential and routing
headers hit the AccessMemo with a valid, allowing entry (``access.remembered``: same rule as the proxy,
the version board unchanged, the credential's own end checked)? Then it runs ``check_access`` itself (it
takes the remembered path synchronously: the decision is made and audited as on the main listener) and
writes the answer aiohttp would write (the same status and headers, built once per memo entry).

Everything else is relayed, unchanged, to this worker's own aiohttp application through an in-process
socket pair (no listening port; the caller's address goes with it, so the trusted-peer check sees the
real peer): a miss (which then fills the memo), a refusal, a request with a body or an Upgrade header, a
header that is not plain ASCII, a header block over ``server.max_header_size``, another path, HTTP/1.0 or
``Connection: close``. Bytes that do not parse are answered 400 and a head over ``_MAX_HEAD`` 431, and the
connection closed: never allowed. Pipelined requests are answered in order.

Connections follow ``server.timeouts`` (``header``: until a request's head is complete; ``idle``: a kept-alive
connection waiting for its next request) and ``server.max_connections`` (past it, 503 and close). On SIGTERM
the worker drains it like the main listener: new SYNs dropped, the accept queue emptied, every answer then
says ``Connection: close``, idle connections closed, busy ones given ``server.drain_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from email.utils import formatdate
from typing import Any

import httptools
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from rolegate.identity.forward_auth import _MAX_URI, _METHODS, ENDPOINT, RoutingInputError, read_original, trusted_peer
from rolegate.limits import FORWARD_AUTH_HEADS
from rolegate.memo import BoundedCache
from rolegate.server.access import remembered, remembered_target
from rolegate.server.connections import default_max_connections
from rolegate.server.drain import Listener
from rolegate.server.runtime import Runtime, RuntimeHolder

log = logging.getLogger("rolegate.lean_auth")

# A request head larger than this is answered 431 and the connection closed (aiohttp's own limits on the
# main listener: 16 KiB a request line, 64 KiB a header); bodies relayed are bounded by client_max_size.
_MAX_HEAD = 96 * 1024
_MAX_BODY = 1024 * 1024
_UNKNOWN = object()
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 11\r\n"
    b"Connection: close\r\n\r\nBad Request"
)
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 31\r\nConnection: close\r\n\r\nRequest Header Fields Too Large"
)
_BODY_TOO_LARGE = (
    b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 24\r\nConnection: close\r\n\r\nRequest Entity Too Large"
)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: 37\r\n\r\nToo many connections; try again soon."
)
_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 11\r\nConnection: close\r\n\r\nUnavailable"
)
# Bytes a header may hold on the lean path: visible ASCII, space and tab. Anything else is aiohttp's to judge.
_PLAIN = bytes(range(0x20, 0x7F)) + b"\t"
_ENDPOINT = ENDPOINT.encode()
_SERVER = (
    f"Server: Python/{'.'.join(map(str, __import__('sys').version_info[:2]))} aiohttp/"
    f"{__import__('aiohttp').__version__}\r\n".encode()
)


class _Date:
    """The Date header, formatted once a second (as aiohttp does)."""

    __slots__ = ("second", "line")

    def __init__(self) -> None:
        self.second = -1
        self.line = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.line = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self.line


_DATE = _Date()


class _Subrequest:
    """What ``read_original`` and ``check_access`` read of a request, for the lean path."""

    __slots__ = ("method", "raw_path", "headers", "remote")

    def __init__(self, method: str, raw_path: str, headers: CIMultiDictProxy[str], remote: str) -> None:
        self.method = method
        self.raw_path = raw_path
        self.headers = headers
        self.remote = remote


class _Message:
    __slots__ = ("method", "url", "version", "headers", "head_size", "body", "keep_alive", "upgrade", "chunked")

    def __init__(self) -> None:
        self.method = b""
        self.url = b""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0  # name + value + 4 per header, as check_header_size counts
        self.body: list[bytes] = []
        self.keep_alive = True
        self.upgrade = False
        self.chunked = False

    def wire(self) -> bytes:
        """The request as received (headers in their order, values without surrounding blanks)."""
        out = [self.method, b" ", self.url, b" HTTP/", self.version.encode(), b"\r\n"]
        for name, value in self.headers:
            out += (name, b": ", value, b"\r\n")
        out.append(b"\r\n")
        body = b"".join(self.body)
        if self.chunked:
            if body:
                out += (b"%x\r\n" % len(body), body, b"\r\n")
            out.append(b"0\r\n\r\n")
        else:
            out.append(body)
        return b"".join(out)


class LeanServer:
    """One worker's lean listener: its socket, its connections, its relay into the aiohttp application."""

    def __init__(self, holder: RuntimeHolder, runner: web.AppRunner, host: str, port: int) -> None:
        self.holder = holder
        self.listener = Listener(host, port)
        self.connections: set[_Connection] = set()
        self.draining = False
        # subrequest head -> what it says (see answer)
        self.heads: BoundedCache[tuple[Any, ...], Any] = BoundedCache(FORWARD_AUTH_HEADS)
        self.heads_runtime: Runtime | None = None  # the Runtime ``heads`` was read under
        self._timeouts: tuple[float, float] = (0.0, 0.0)
        self._timeouts_of: Runtime | None = None
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self.answered = 0  # remembered answers written here (tests read these)
        self.relayed = 0  # requests handed to aiohttp
        self.peers: dict[Any, str] = {}  # relay RequestHandler -> the lean connection's peer address
        main = runner.server
        assert main is not None
        make = main.request_factory

        def request_factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> Any:
            # A relayed request carries the address of the peer that sent it to the lean listener.
            return make(message, payload, protocol, writer, task).clone(remote=self.peers.get(protocol, ""))

        kwargs = dict(getattr(main, "_kwargs", {}))
        self.relay_server = web.Server(main.request_handler, request_factory=request_factory, **kwargs)
        self._server: asyncio.AbstractServer | None = None

    def timeouts(self) -> tuple[float, float]:
        """(header, idle) seconds of server.timeouts, read again when a reload brings another Runtime."""
        runtime = self.holder.runtime
        if runtime is not self._timeouts_of:
            timeouts = runtime.config.server.timeouts
            self._timeouts = (timeouts.header.total_seconds(), timeouts.idle.total_seconds())
            self._timeouts_of = runtime
        return self._timeouts

    async def start(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), sock=self.listener.sock, backlog=2048)

    @property
    def port(self) -> int:
        port: int = self.listener.sock.getsockname()[1]
        return port

    async def open_relay(self, owner: _Connection) -> _Relay:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        handler = self.relay_server()
        self.peers[handler] = owner.peer
        try:
            await loop.connect_accepted_socket(lambda: handler, theirs)
            _, relay = await loop.create_connection(lambda: _Relay(self, owner, handler), sock=ours)
        except BaseException:
            self.peers.pop(handler, None)
            ours.close()
            theirs.close()
            raise
        return relay

    async def drain(self, timeout: float) -> None:
        """Stop taking connections (as the main listener does), close the idle ones, give the busy ones
        ``timeout`` to finish, then close what is left."""
        self.draining = True
        log.info("lean forward-auth listener draining: %d answered here, %d relayed", self.answered, self.relayed)
        await self.listener.drain()
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.drain()
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
        await self.relay_server.shutdown(1.0)

    async def close(self) -> None:
        """Stop at once (tests; a worker drains): the socket closed, every connection aborted."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.abort()
        await self.relay_server.shutdown(0.5)

    # -- the one decision made here --------------------------------------------------------------------

    def answer(self, message: _Message, peer: str) -> bytes | None:
        """The bytes of a remembered answer to ``message``, or None: not this listener's to decide."""
        if (
            message.body
            or message.upgrade
            or message.chunked
            or not message.keep_alive
            or message.version != "1.1"
            or message.url != _ENDPOINT
        ):
            return None
        runtime = self.holder.runtime
        server = runtime.config.server
        forward_auth = server.forward_auth
        if forward_auth is None or forward_auth.proxy == "envoy" or message.head_size > server.max_header_size:
            return None
        if not trusted_peer(peer, server.trusted_proxies):
            return None
        # What the subrequest's head says (routing input, credential, route, requirement) depends on that head
        # and the Runtime only: kept per distinct head, so a front proxy asking again for the same credential
        # and target is not parsed and matched again. The peer, the memo entry's validity, the decision and
        # its audit are read at every request.
        if runtime is not self.heads_runtime:  # a reload: new routes, perhaps a new proxy convention
            self.heads.clear()
            self.heads_runtime = runtime
        head = (message.method, tuple(message.headers))
        parsed = self.heads.get(head, _UNKNOWN)
        if parsed is _UNKNOWN:
            parsed = self.heads.put(head, self._parse_head(runtime, message))
        if parsed is None:
            return None
        headers, original, target = parsed
        request = _Subrequest(headers.method, ENDPOINT, headers.headers, peer)
        # check_access's remembered, allowing path (the decision made and audited), or None: aiohttp decides.
        access = remembered(runtime, request, original.method, original.host, original.uri, target)
        if access is None:
            return None
        known = access.known
        assert known is not None  # remembered() answers only from a remembered entry
        wire = known.wire
        if wire is None:
            wire = known.wire = _head(known.answer)
        # aiohttp names no Content-Length in its answer to HEAD (there is no body to measure)
        return wire if message.method == b"HEAD" else wire + b"Content-Length: 0\r\n"

    @staticmethod
    def _parse_head(runtime: Any, message: _Message) -> tuple[Any, Any, Any] | None:
        """(request view, original request, ``remembered_target``) of a subrequest head, or None: not one the
        lean path may answer (a header that is not plain ASCII, routing input the full path refuses or logs)."""
        forward_auth = runtime.config.server.forward_auth
        pairs = []
        for name, value in message.headers:
            if name.translate(None, _PLAIN) or value.translate(None, _PLAIN):
                return None
            pairs.append((name.decode("ascii"), value.decode("ascii")))
        request = _Subrequest(message.method.decode("ascii"), ENDPOINT, CIMultiDictProxy(CIMultiDict(pairs)), "")
        try:
            original = read_original(request, forward_auth.proxy)  # type: ignore[arg-type]
        except RoutingInputError:
            return None
        if original.ignored:
            return None  # logged by the full path
        uri, host = original.uri, original.host
        if original.method not in _METHODS or not uri.startswith("/") or len(uri) > _MAX_URI or "," in host:
            return None
        target = remembered_target(runtime, request, original.method, host, uri)
        if target is None:
            return None
        return request, original, target


def _head(answer: Any) -> bytes:
    """The status line and headers aiohttp writes for ``web.Response(status=200, headers=answer)``,
    up to its Content-Length, Date and Server headers."""
    lines = [b"HTTP/1.1 200 OK\r\n"]
    for name, value in answer.items():
        lines.append(f"{name}: {value}\r\n".encode("utf-8"))
    return b"".join(lines)


class _Connection(asyncio.Protocol):
    """One client connection on the lean listener."""

    def __init__(self, server: LeanServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.parser = httptools.HttpRequestParser(self)
        self.message: _Message | None = None
        self.field = b""
        self.value = b""
        self.size = 0
        self.queue: deque[_Message] = deque()
        self.relay: _Relay | None = None
        self.busy = False  # a request is with aiohttp
        self.tunnel = False  # upgraded: every byte goes to aiohttp unparsed
        self.failed: bytes | None = None  # the answer to bytes that did not parse, after those queued before
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False

    # -- asyncio ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        server.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, (list, tuple)) and peer else ""
        limits = server.holder.runtime.config.server
        if len(server.connections) > (limits.max_connections or _default_max()):
            self._finish(_BUSY)
            return
        self._arm(limits.timeouts.header.total_seconds())

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.tunnel:
            assert self.relay is not None
            self.relay.write(data)
            return
        if self.message is None and self.timer_kind == "idle":
            self._arm(self.server.timeouts()[0])
        if not self.in_body:
            # httptools gathers a header whole before handing it over: bound what a head may hold.
            self.head_fed += len(data)
            if self.head_fed > _MAX_HEAD + len(data) and self.failed is None:
                self.failed = _TOO_LARGE
                self.parser = httptools.HttpRequestParser(self)  # never fed again
                self._serve()
                return
        if self.failed is not None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            rest = data[upgrade.args[0] :] if upgrade.args and isinstance(upgrade.args[0], int) else b""
            if self.message is not None:  # the upgrade request's head: relayed, then the rest unparsed
                self.message.upgrade = True
                self.queue.append(self.message)
                self.message = None
            self.pending_tunnel = rest
        except httptools.HttpParserError:
            if self.failed is None:
                self.failed = (
                    _TOO_LARGE if self.size > _MAX_HEAD else (_BODY_TOO_LARGE if self.size < 0 else _BAD_REQUEST)
                )
        self._serve()

    def eof_received(self) -> bool | None:
        return None  # close our side too, after what is written

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closing = True
        self._stop_timer()
        self.server.connections.discard(self)
        if self.relay is not None:
            self.relay.close()
            self.relay = None

    # -- httptools callbacks ---------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.message = _Message()
        self.field = self.value = b""
        self.size = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self.message.url += url  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:  # httptools >= 0.6: whole headers
        self._count(len(name) + len(value) + 4)
        message = self.message
        assert message is not None
        message.headers.append((name, value))
        message.head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        message = self.message
        assert message is not None
        parser = self.parser
        message.method = parser.get_method()
        message.version = parser.get_http_version()
        message.keep_alive = parser.should_keep_alive()
        message.upgrade = parser.should_upgrade()
        message.chunked = any(name.lower() == b"transfer-encoding" for name, _ in message.headers)
        self.in_body = True
        if self.timer_kind == "header":
            self._disarm()

    def on_body(self, body: bytes) -> None:
        message = self.message
        assert message is not None
        if sum(map(len, message.body)) + len(body) > _MAX_BODY:
            self.size = -1
            raise ValueError("body too large")
        message.body.append(body)

    def on_message_complete(self) -> None:
        self.in_body = False
        self.head_fed = 0
        if self.message is not None:
            self.queue.append(self.message)
            self.message = None

    def _count(self, size: int) -> None:
        self.size += size
        if self.size > _MAX_HEAD:
            raise ValueError("request head too large")

    # -- serving ---------------------------------------------------------------------------------------

    pending_tunnel: bytes | None = None
    timer_kind = ""
    in_body = False
    head_fed = 0

    def _serve(self) -> None:
        transport = self.transport
        server = self.server
        while self.queue and not self.busy and not self.closing:
            message = self.queue.popleft()
            try:
                answer = server.answer(message, self.peer)
            except Exception:  # noqa: BLE001 - never allow on a surprise; aiohttp decides it instead
                log.exception("lean forward-auth: could not look the answer up; relayed")
                answer = None
            if answer is None:
                server.relayed += 1
                self.busy = True
                transport.pause_reading()  # type: ignore[union-attr]
                asyncio.ensure_future(self._relay(message))
                return
            if answer is _UNAVAILABLE:
                self._finish(answer)
                return
            if server.draining:
                transport.write(answer + _DATE.get() + _SERVER + b"Connection: close\r\n\r\n")  # type: ignore
                self._finish(b"")
                return
            transport.write(answer + _DATE.get() + _SERVER + b"\r\n")  # type: ignore[union-attr]
            server.answered += 1
        if self.busy or self.closing:
            return
        if self.failed is not None:
            self._finish(self.failed)
            return
        if self.message is None and not self.queue:
            if server.draining:
                self._finish(b"")
                return
            self._arm(server.timeouts()[1], "idle")

    async def _relay(self, message: _Message) -> None:
        try:
            if self.relay is None or self.relay.closed:
                self.relay = await self.server.open_relay(self)
        except OSError as exc:
            log.warning("lean forward-auth: cannot reach the worker's own application (%s); answered 503", exc)
            self._finish(_UNAVAILABLE)
            return
        if self.closing:
            self.relay.close()
            return
        self.relay.send(message, tunnel=message.upgrade)
        if message.upgrade:
            self.tunnel = True
            rest = self.pending_tunnel
            self.pending_tunnel = None
            if rest:
                self.relay.write(rest)
            self.busy = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def relayed(self, keep_alive: bool) -> None:
        """aiohttp answered the relayed request (its bytes are written already)."""
        self.busy = False
        if not keep_alive:
            self._finish(b"")
            return
        if not self.closing:
            self.transport.resume_reading()  # type: ignore[union-attr]
            self._serve()

    def relay_lost(self) -> None:
        if self.busy or self.tunnel:
            self._finish(b"")
        self.relay = None

    # -- timers and ends -------------------------------------------------------------------------------

    # One timer per connection, moved lazily: a kept-alive connection answering thousands of requests a
    # second sets a deadline per request, and only a deadline earlier than the timer's reschedules it.
    deadline: float | None = None
    timer_at = 0.0

    def _arm(self, seconds: float, kind: str = "header") -> None:
        self.timer_kind = kind
        loop = self.server.loop
        deadline = self.deadline = loop.time() + seconds
        if self.timer is None or deadline < self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer_at = deadline
            self.timer = loop.call_at(deadline, self._expired)

    def _disarm(self) -> None:
        self.deadline = None
        self.timer_kind = ""

    def _stop_timer(self) -> None:
        self._disarm()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        deadline = self.deadline
        if deadline is None or self.busy or self.closing:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < deadline:
            self.timer_at = deadline
            self.timer = loop.call_at(deadline, self._expired)
            return
        self.abort()

    def _finish(self, last: bytes) -> None:
        if self.closing:
            return
        self.closing = True
        self._stop_timer()
        transport = self.transport
        if transport is not None:
            if last:
                transport.write(last)
            transport.close()

    def drain(self) -> None:
        """The worker is draining: an idle connection is closed now, a busy one after its answer."""
        if not self.busy and self.message is None and not self.queue:
            self._finish(b"")

    def abort(self) -> None:
        self.closing = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()


def _default_max() -> int:
    return default_max_connections()


class _Relay(asyncio.Protocol):
    """The lean connection's channel to aiohttp: one request at a time, its answer copied back as is."""

    def __init__(self, server: LeanServer, owner: _Connection, handler: Any) -> None:
        self.server = server
        self.owner = owner
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.tunnel = False
        self.head_only = False
        self.parser: Any = None
        self.keep_alive = True
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, message: _Message, *, tunnel: bool) -> None:
        self.tunnel = tunnel
        self.head_only = message.method == b"HEAD"
        self.parser = httptools.HttpResponseParser(self)
        self.transport.write(message.wire())  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner.transport is not None and not owner.closing:
            owner.transport.write(data)
        if self.tunnel or self.parser is None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.parser = None  # 101: the connection is a tunnel from here on
        except httptools.HttpParserError:
            self.parser = None
            owner.relay_lost()
            self.close()

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        if self.status >= 200 and (self.head_only or self.status in (204, 304)):
            self._done()

    def on_message_complete(self) -> None:
        # An interim answer (100 Continue) is passed on; the final one follows on the same parser.
        if self.parser is not None and not 100 <= self.status < 200:
            self._done()

    def _done(self) -> None:
        self.parser = None
        self.owner.relayed(self.keep_alive)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.server.peers.pop(self.handler, None)
        if self.owner.relay is self:
            self.owner.relay_lost()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.close()
        self.closed = True


async def start_lean(holder: RuntimeHolder, runner: web.AppRunner) -> LeanServer | None:
    """The worker's lean listener when ``server.forward_auth.listen`` is set (read at start: a reload that
    changes it takes a restart), else None."""
    forward_auth = holder.runtime.config.server.forward_auth
    if forward_auth is None or forward_auth.listen is None:
        return None
    host, port = forward_auth.listen
    lean = LeanServer(holder, runner, host, port)
    await lean.start()
    return lean
