"""Pooled keep-alive HTTP/1.1 connections to one upstream.

The upstream side of the data path is deliberately not aiohttp's client: a
``ClientSession`` request costs about as much as the whole server side of the
proxy. Here a connection is a bare asyncio protocol that feeds aiohttp's C
response parser (llhttp) directly, and a pool keeps idle connections per
upstream so steady traffic never pays a TCP handshake. An ``https://``
upstream is the same protocol over asyncio's TLS transport; its certificate
is always verified (``ca_file`` or the system trust store, and the URL's host).

One :class:`UpstreamConnection` carries one exchange at a time:
``begin()`` → write the request → ``response()`` → read the payload →
``finish()`` tells the pool whether it may be reused.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawResponseMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader

from rolegate.errors import UpstreamTimeout, UpstreamUnavailable

if TYPE_CHECKING:
    # The Cython parser ships no stubs: mypy reads it as its pure-Python twin, whose constructor, feed API and
    # messages it shares (tests/test_private_apis.py feeds both). aiohttp types its own C parser the same way.
    from aiohttp.http_parser import HttpResponseParserPy as _ResponseParser
else:
    try:  # llhttp via Cython; the pure-Python twin has the same constructor and feed API.
        from aiohttp._http_parser import HttpResponseParser as _ResponseParser
    except ImportError:  # pragma: no cover - only on platforms without the extension
        from aiohttp.http_parser import HttpResponseParserPy as _ResponseParser

__all__ = ["Upstream", "UpstreamConnection", "UpstreamPool", "UpstreamClosed"]

# StreamReader pauses the socket once it holds 2x this many unread bytes:
# the per-exchange memory bound for streamed bodies.
READ_LIMIT = 2**16
# Response head limits, larger than aiohttp's client defaults because upstream
# apps routinely send long Set-Cookie / CSP lines; beyond this the answer is a 502.
MAX_LINE_SIZE = 16 * 1024
MAX_FIELD_SIZE = 16 * 1024
MAX_HEADERS = 128


class UpstreamClosed(UpstreamUnavailable):
    """The upstream closed the connection before sending a response head."""


class Upstream:
    """One backend rolegate forwards to, as configured under ``upstreams``."""

    __slots__ = (
        "name",
        "url",
        "scheme",
        "host",
        "port",
        "base_path",
        "host_header",
        "connect_timeout",
        "read_timeout",
        "pool_size",
        "idle_timeout",
        "preserve_host",
        "ssl",
    )

    def __init__(
        self,
        name: str,
        url: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        pool_size: int = 64,
        idle_timeout: float = 30.0,
        preserve_host: bool = False,
        ca_file: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"upstream {name!r}: only http:// and https:// URLs are supported, got {url!r}")
        if ca_file is not None and parts.scheme != "https":
            raise ValueError(f"upstream {name!r}: ca_file is for https:// upstreams, the URL is {url!r}")
        if not parts.hostname:
            raise ValueError(f"upstream {name!r}: URL has no host: {url!r}")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"upstream {name!r}: URL must be scheme://host[:port][/base]")
        self.name = name
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        # https: the upstream's certificate is always verified, against ca_file or the
        # system's trust store, for the URL's host name (or IP address).
        self.ssl = tls_context(name, ca_file) if parts.scheme == "https" else None
        # Base path is prepended verbatim to the already-normalized request path.
        self.base_path = parts.path.rstrip("/")
        netloc = parts.netloc
        self.host_header = netloc.encode("ascii")
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        self.pool_size = int(pool_size)
        self.idle_timeout = float(idle_timeout)
        self.preserve_host = preserve_host

    def __repr__(self) -> str:
        return f"<Upstream {self.name} {self.url}>"


def tls_context(name: str, ca_file: str | None) -> ssl.SSLContext:
    """A client context verifying certificate and host name; ValueError naming a bad ``ca_file``."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(
            f"upstream {name!r}: ca_file {ca_file!r} could not be read as PEM CA certificates: {reason}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class UpstreamConnection(BaseProtocol):
    """One TCP connection to an upstream; parses responses with llhttp.

    Read timeout is "no byte from the upstream for ``read_timeout`` seconds
    while we are waiting for it": one timer per exchange that re-arms itself
    lazily, so ``data_received`` only stores a timestamp.
    """

    __slots__ = (
        "pool",
        "_waiter",
        "_message",
        "_payload",
        "_closed",
        "_idle_since",
        "_timeout",
        "_timer",
        "_last_activity",
        "_suspended",
        "_failure",
        "exchanges",
        "bytes_in_exchange",
        "should_close",
        "_extra_messages",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: "UpstreamPool") -> None:
        super().__init__(loop)
        self.pool = pool
        self._waiter: asyncio.Future[None] | None = None
        self._message: RawResponseMessage | None = None
        self._payload: StreamReader | None = None
        self._closed = False
        self._idle_since = 0.0
        self._timeout = pool.upstream.read_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        self._suspended = False
        self._failure: BaseException | None = None
        self.exchanges = 0
        self.bytes_in_exchange = 0
        self.should_close = False
        self._extra_messages = False

    # -- asyncio protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # sets TCP_NODELAY

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            # Bytes while idle (or after the exchange): the upstream is out of
            # step with us; this connection can never be trusted again.
            if data:
                self.should_close = True
                self._close_transport()
            return
        if data:
            self.bytes_in_exchange += len(data)
            self._last_activity = self._loop.time()
        try:
            messages, _upgraded, _tail = parser.feed_data(data)
        except HttpProcessingError as exc:
            self._fail(UpstreamUnavailable(f"upstream sent a malformed response: {exc.message}"))
            return
        except Exception as exc:  # parser bugs must not escape into the event loop
            self._fail(UpstreamUnavailable(f"upstream response could not be parsed: {exc!r}"))
            return
        for message, payload in messages:
            code = message.code
            if code < 200 and code != 101:
                continue  # 100 Continue / 103 Early Hints: interim, not ours to relay
            if self._message is not None:
                # A second final response to one request: desynchronised upstream.
                self._extra_messages = True
                self.should_close = True
                continue
            if message.should_close:
                self.should_close = True
            self._message = message
            self._payload = payload
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            # A head that arrives while we are still uploading stops the upload.
            self._wake_drain()

    def eof_received(self) -> bool | None:
        self.should_close = True
        return None  # let the transport close; connection_lost finishes the parse

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closed = True
        self.should_close = True
        parser = self._parser
        if parser is not None:
            try:
                parser.feed_eof()  # completes close-delimited bodies
            except Exception as parse_exc:
                payload = self._payload
                if payload is not None and payload is not EMPTY_PAYLOAD and not payload.is_eof():
                    payload.set_exception(UpstreamUnavailable(f"upstream closed mid-body: {parse_exc}"))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            failure = self._failure or UpstreamClosed(
                "upstream closed the connection before responding" + (f": {exc!r}" if exc else "")
            )
            waiter.set_exception(failure)
        payload = self._payload
        if payload is not None and payload is not EMPTY_PAYLOAD and not payload.is_eof():
            if payload.exception() is None:
                payload.set_exception(self._failure or UpstreamUnavailable("upstream closed mid-body"))
        self._cancel_timer()
        super().connection_lost(exc)  # wakes a paused writer
        self._wake_drain()
        self.pool._forget(self)

    # -- exchange ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed or self.transport is None or self.transport.is_closing()

    def begin(self, method: str) -> None:
        """Prepare for one request/response exchange."""
        loop = self._loop
        # A fresh parser per exchange: HEAD changes body expectations and the
        # parser must not carry state from the previous response.
        self._parser = _ResponseParser(
            self,
            loop,
            READ_LIMIT,
            max_line_size=MAX_LINE_SIZE,
            max_headers=MAX_HEADERS,
            max_field_size=MAX_FIELD_SIZE,
            response_with_body=method != "HEAD",
            read_until_eof=True,
            auto_decompress=False,
        )
        self._waiter = loop.create_future()
        self._message = None
        self._payload = None
        self._failure = None
        self._extra_messages = False
        self.bytes_in_exchange = 0
        self._suspended = False
        self._last_activity = loop.time()
        # A timer left armed by the previous exchange is reused: it re-arms
        # itself from _last_activity, so steady traffic costs no timer churn.
        if self._timer is None and self._timeout > 0:
            self._timer = loop.call_at(self._last_activity + self._timeout, self._on_timer)

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self._failure is not None:
            raise self._failure or UpstreamClosed("upstream connection lost while sending")
        transport.write(data)

    async def drain(self) -> None:
        """Wait until the upstream socket accepts more bytes (upload backpressure)."""
        if self._failure is not None:
            raise self._failure
        if self.transport is None:
            raise UpstreamClosed("upstream connection lost while sending")
        if not self._paused or self._message is not None:
            return
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._loop.create_future()
            self._drain_waiter = waiter
        await waiter
        if self._failure is not None:
            raise self._failure
        if self.transport is None:
            raise UpstreamClosed("upstream connection lost while sending")

    @property
    def head_arrived(self) -> bool:
        return self._message is not None

    def suspend_timeout(self, suspended: bool) -> None:
        """Pause the read timeout while *we* wait (client upload, slow client)."""
        self._suspended = suspended
        if not suspended:
            self._last_activity = self._loop.time()

    async def response(self) -> tuple[RawResponseMessage, StreamReader]:
        """Wait for the final response head; returns (RawResponseMessage, payload)."""
        waiter = self._waiter
        assert waiter is not None
        if not waiter.done():
            await waiter
        else:
            waiter.result()  # re-raise a failure recorded before we got here
        message, payload = self._message, self._payload
        assert message is not None and payload is not None  # set together before the waiter's result
        return message, payload

    def finish(self, reusable: bool) -> None:
        """End the exchange: back to the pool if clean, else close."""
        self._parser = None
        self._waiter = None
        payload = self._payload
        self._payload = None
        self._message = None
        if (
            reusable
            and not self.should_close
            and not self._extra_messages
            and self._failure is None
            and not self.closed
            and (payload is None or payload is EMPTY_PAYLOAD or (payload.is_eof() and payload.exception() is None))
        ):
            self.exchanges += 1
            if self._reading_paused:
                self.resume_reading(resume_parser=False)
            self.pool._release(self)
        else:
            self.should_close = True
            self._cancel_timer()
            self._close_transport()

    def abort(self) -> None:
        """Drop the connection without reuse (client went away, error)."""
        self.should_close = True
        self._cancel_timer()
        self._close_transport()

    # -- internals ---------------------------------------------------------

    def _close_transport(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()
        self.pool._forget(self)

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _cancel_timer(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()

    def _on_timer(self) -> None:
        self._timer = None
        if self._parser is None:
            return
        now = self._loop.time()
        # While flow control holds the socket, silence is ours, not the upstream's.
        if self._suspended or self._reading_paused:
            self._last_activity = now
        deadline = self._last_activity + self._timeout
        if now < deadline:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            return
        self._fail(UpstreamTimeout(f"no data from upstream {self.pool.upstream.name} for {self._timeout:g}s"))

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self.should_close = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        payload = self._payload
        if payload is not None and payload is not EMPTY_PAYLOAD and payload.exception() is None:
            payload.set_exception(exc)
        self._wake_drain()
        transport = self.transport
        if transport is not None:
            transport.abort()
        self.pool._forget(self)


class UpstreamPool:
    """Idle keep-alive connections to one upstream, most recently used first."""

    __slots__ = ("upstream", "_idle", "_loop", "_closed", "_all")

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._idle: collections.deque[UpstreamConnection] = collections.deque()
        self._all: set[UpstreamConnection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    async def acquire(self, *, fresh: bool = False) -> UpstreamConnection:
        """An idle healthy connection (unless ``fresh``), else a new one."""
        if self._closed:
            raise UpstreamUnavailable("forwarder is shutting down")
        idle = self._idle
        if not fresh and idle:
            loop = self._loop
            assert loop is not None
            now = loop.time()
            limit = self.upstream.idle_timeout
            while idle:
                conn = idle.pop()
                if conn.closed or now - conn._idle_since > limit:
                    conn.abort()
                    continue
                return conn
        return await self._connect()

    async def _connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        self._loop = loop
        up = self.upstream
        try:
            async with asyncio.timeout(up.connect_timeout):
                _transport, conn = await loop.create_connection(
                    lambda: UpstreamConnection(loop, self),
                    up.host,
                    up.port,
                    family=socket.AF_UNSPEC,
                    ssl=up.ssl,
                    server_hostname=up.host if up.ssl is not None else None,
                )
        except TimeoutError:
            raise UpstreamUnavailable(
                f"connect to upstream {up.name} ({up.host}:{up.port}) timed out after {up.connect_timeout:g}s"
            ) from None
        except OSError as exc:
            raise UpstreamUnavailable(f"connect to upstream {up.name} ({up.host}:{up.port}) failed: {exc}") from None
        self._all.add(conn)
        return conn

    def _release(self, conn: UpstreamConnection) -> None:
        if self._closed or len(self._idle) >= self.upstream.pool_size:
            conn.abort()
            return
        loop = self._loop
        assert loop is not None
        conn._idle_since = loop.time()
        self._idle.append(conn)

    def _forget(self, conn: UpstreamConnection) -> None:
        self._all.discard(conn)
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    async def close(self) -> None:
        """Close every connection, idle or busy."""
        self._closed = True
        conns = list(self._all)
        self._idle.clear()
        for conn in conns:
            conn.abort()
        # Give transports a loop turn to run connection_lost.
        await asyncio.sleep(0)
