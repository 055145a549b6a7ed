"""Forward one request to its upstream and relay the answer: the data path's core.

The server side stays aiohttp; the upstream side is :mod:`upstream_pool`
(keep-alive asyncio connections parsed by llhttp). Three ways out:

* **fast path** — the whole response arrived with its head (typical small
  API/JSON answers): one plain ``web.Response``, no streaming machinery;
* **filtered** — a ``response_filter`` asked for the body (JSON redaction):
  read up to the transform's limit, transform, answer; bigger bodies fail
  closed with 502 instead of leaking unfiltered;
* **streamed** — everything else (large, chunked, close-delimited, SSE):
  relayed chunk by chunk with backpressure both ways, never buffered.

Errors raised are :mod:`rolegate.errors` members (502/504/413/400) for the
pipeline to render. Once response headers have gone to the client an error can
no longer be rendered; the client connection is then closed so the client
sees a truncated body, never a clean end of a partial one.

The response filter hook
------------------------
``response_filter(status, headers)`` is called once per response, with the
upstream status and response headers (read-only, case-insensitive), before a
single body byte is read. Return ``None`` to let the response through
untouched (it is then never buffered), or a :class:`BodyTransform`:

* ``transform.limit`` — the largest body (bytes) it accepts. When
  ``Content-Length`` exceeds it, or a chunked body grows past it, the exchange
  fails closed with ``UpstreamUnavailable`` (502). A filter that prefers
  pass-through for big bodies returns ``None`` after looking at
  ``Content-Length``.
* ``transform(body) -> bytes`` — the new body. ``Content-Length`` is
  recomputed; ``ETag`` and digest headers (they describe the upstream's bytes,
  and a hash is an oracle for what was removed) are dropped; other headers are
  kept. It may raise a ``RolegateError``.
* ``transform.oversize(size) -> RolegateError | None`` (optional) — called
  when a body of unannounced length grows past ``limit``: the error to answer
  with, or ``None`` to relay the body unfiltered (what was read, then the rest,
  streamed). Without it such a body fails closed with 502.

A bodiless answer (HEAD, 204, 304, ``Content-Length: 0``) is not passed to
the filter, but when a filter is given its ``Content-Length`` and the headers
above are dropped too: they would describe the body the filter was there to
change.

When a filter is given, ``Accept-Encoding: identity`` is sent upstream so the
transform sees plain bytes; a filter should still return ``None`` (or raise)
for a ``Content-Encoding`` it cannot read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import aiohttp
from aiohttp import web
from aiohttp.http_parser import RawResponseMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from rolegate.errors import PayloadTooLarge, RolegateError, UpstreamUnavailable
from rolegate.proxy.headers import (
    check_path_qs,
    downstream_response_headers,
    upstream_request_head,
    websocket_request_headers,
)
from rolegate.proxy.upstream_pool import Upstream, UpstreamClosed, UpstreamConnection, UpstreamPool
from rolegate.proxy.websocket import is_websocket_upgrade, proxy_websocket

__all__ = ["Forwarder", "BodyTransform", "ResponseFilter", "Upstream"]

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_EMPTY: Mapping[str, str] = {}
_CHUNKED = b"transfer-encoding: chunked\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
# What a filtered response (or a bodiless one standing for it) must not carry: see "The response filter hook".
_FILTERED_DROPS = ("ETag", "Content-MD5", "Digest", "Content-Digest", "Repr-Digest")


class BodyTransform(Protocol):
    """What a response filter returns to get (and rewrite) a complete body."""

    limit: int

    def __call__(self, body: bytes) -> bytes: ...


ResponseFilter = Callable[[int, CIMultiDictProxy[str]], BodyTransform | None]


class Forwarder:
    """Sends requests to named upstreams over pooled keep-alive connections."""

    __slots__ = (
        "_upstreams",
        "_pools",
        "max_body",
        "ws_max_msg_size",
        "_ws_session",
        "trusted_proxies",
        "drop_underscore_headers",
    )

    def __init__(
        self,
        upstreams: Mapping[str, Upstream],
        *,
        max_body: int | None = None,
        ws_max_msg_size: int = 4 * 1024 * 1024,
        trusted_proxies: Sequence[str] = (),
        drop_underscore_headers: bool = False,
    ) -> None:
        # Peers whose X-Forwarded-For is extended instead of replaced (load balancers in front).
        self.trusted_proxies = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
        self._upstreams = dict(upstreams)
        self._pools = {name: UpstreamPool(up) for name, up in self._upstreams.items()}
        self.max_body = max_body
        self.ws_max_msg_size = ws_max_msg_size
        self._ws_session: aiohttp.ClientSession | None = None
        # Drop every client header with "_" in its name, not only the look-alikes of rolegate's (see headers).
        self.drop_underscore_headers = drop_underscore_headers

    def pool(self, upstream: str) -> UpstreamPool:
        """The connection pool of one upstream (for metrics and tests)."""
        return self._pools[upstream]

    async def close(self) -> None:
        """Close every pooled and busy upstream connection."""
        for pool in self._pools.values():
            await pool.close()
        if self._ws_session is not None:
            await self._ws_session.close()
            self._ws_session = None

    async def forward(
        self,
        request: web.BaseRequest,
        upstream: str,
        path_qs: str,
        set_headers: Mapping[str, str] = _EMPTY,
        response_filter: ResponseFilter | None = None,
    ) -> web.StreamResponse:
        """Send ``request`` to ``upstream`` as ``path_qs`` and return the response to send back.

        ``path_qs`` is the normalized path plus query; it is sent verbatim after
        the upstream's base path. ``set_headers`` are added after every incoming
        ``X-Rolegate-*`` and hop-by-hop header was removed.
        """
        pool = self._pools.get(upstream)
        if pool is None:
            raise UpstreamUnavailable(f"no upstream named {upstream!r}")
        up = pool.upstream
        target = check_path_qs(path_qs)
        if up.base_path:
            target = up.base_path.encode("ascii") + target

        client_addr = request.remote or "unknown"
        proto = request.scheme
        fwd_host = request.host

        if is_websocket_upgrade(request):
            return await self._forward_websocket(request, up, target, client_addr, proto, fwd_host, set_headers)

        method = request.method
        headers = request.headers
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        length = None if chunked else request.content_length
        max_body = self.max_body
        if length is not None and max_body is not None and length > max_body:
            raise PayloadTooLarge(f"declared body of {length} bytes exceeds {max_body}")
        if chunked:
            framing = _CHUNKED
        elif length is not None:
            framing = b"content-length: %d\r\n" % length
        else:
            framing = b""
        raw_headers = request.raw_headers
        if response_filter is not None:
            # The transform must see plain bytes.
            raw_headers = tuple((n, v) for n, v in raw_headers if n.lower() != b"accept-encoding") + (
                (b"Accept-Encoding", b"identity"),
            )
        head = upstream_request_head(
            method,
            target,
            raw_headers,
            host=fwd_host.encode("latin-1") if up.preserve_host else up.host_header,
            client_addr=client_addr,
            forwarded_proto=proto,
            forwarded_host=fwd_host,
            set_headers=set_headers,
            framing=framing,
            trust_forwarded_for=self._trusts(client_addr),
            drop_underscore=self.drop_underscore_headers,
        )
        has_body = chunked or bool(length)

        conn, message, payload, request_complete = await self._exchange(pool, request, method, head, has_body, chunked)
        return await self._respond(request, conn, message, payload, request_complete, response_filter)

    # -- request side --------------------------------------------------------

    async def _exchange(
        self,
        pool: UpstreamPool,
        request: web.BaseRequest,
        method: str,
        head: bytes,
        has_body: bool,
        chunked: bool,
    ) -> tuple[UpstreamConnection, RawResponseMessage, StreamReader, bool]:
        retried = False
        while True:
            conn = await pool.acquire(fresh=retried)
            reused = conn.exchanges > 0
            conn.begin(method)
            request_complete = True
            try:
                conn.write(head)
                if has_body:
                    request_complete = await self._send_body(conn, request, chunked)
                message, payload = await conn.response()
            except UpstreamClosed:
                conn.abort()
                # The classic keep-alive race: the upstream closed an idle
                # connection just as we reused it. Safe to replay only when
                # nothing of the client's body was consumed and the method is
                # idempotent, and only once, on a brand-new connection.
                if reused and not retried and not has_body and method in _IDEMPOTENT and conn.bytes_in_exchange == 0:
                    retried = True
                    continue
                raise
            except BaseException:
                conn.abort()
                raise
            if message.code == 101:
                conn.abort()
                raise UpstreamUnavailable("upstream switched protocols on a plain request")
            return conn, message, payload, request_complete

    async def _send_body(self, conn: UpstreamConnection, request: web.BaseRequest, chunked: bool) -> bool:
        """Stream the client's body upstream; False if it stopped early (upstream answered)."""
        content = request.content
        max_body = self.max_body
        total = 0
        try:
            while True:
                # Waiting on the client is not the upstream being slow.
                conn.suspend_timeout(True)
                try:
                    chunk = await content.readany()
                finally:
                    conn.suspend_timeout(False)
                if conn.head_arrived:
                    return False
                if not chunk:
                    break
                total += len(chunk)
                if max_body is not None and total > max_body:
                    raise PayloadTooLarge(f"body exceeds {max_body} bytes")
                if chunked:
                    conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                else:
                    conn.write(chunk)
                await conn.drain()
                if conn.head_arrived:
                    return False
            if chunked:
                conn.write(_LAST_CHUNK)
            return True
        except UpstreamUnavailable:
            # The upstream may have answered (e.g. its own 413) and closed.
            if conn.head_arrived:
                return False
            raise

    # -- response side -------------------------------------------------------

    async def _respond(
        self,
        request: web.BaseRequest,
        conn: UpstreamConnection,
        message: RawResponseMessage,
        payload: StreamReader,
        request_complete: bool,
        response_filter: ResponseFilter | None,
    ) -> web.StreamResponse:
        status = message.code
        upstream_headers = message.headers
        bodiless = (
            payload is EMPTY_PAYLOAD
            or status in (204, 304)
            or request.method == "HEAD"
            or upstream_headers.get("Content-Length") == "0"
        )

        if response_filter is not None and not bodiless:
            try:
                transform = response_filter(status, upstream_headers)
            except BaseException:
                conn.abort()
                raise
            if transform is not None:
                return await self._respond_filtered(request, conn, message, payload, request_complete, transform)

        if payload is EMPTY_PAYLOAD or payload.is_eof():
            # Fast path: the body is already here (or there is none).
            try:
                body = payload.read_nowait(-1) if payload is not EMPTY_PAYLOAD else b""
            except BaseException:
                conn.abort()
                raise
            conn.finish(request_complete)
            headers = downstream_response_headers(upstream_headers, keep_length=True)
            if response_filter is not None and bodiless:
                _drop_filtered(headers, "Content-Length")
            return web.Response(
                status=status,
                reason=message.reason or None,
                body=body or None,
                headers=headers,
            )

        return await self._respond_streamed(request, conn, message, payload, request_complete)

    async def _respond_filtered(
        self,
        request: web.BaseRequest,
        conn: UpstreamConnection,
        message: RawResponseMessage,
        payload: StreamReader,
        request_complete: bool,
        transform: BodyTransform,
    ) -> web.StreamResponse:
        limit = transform.limit
        declared = message.headers.get("Content-Length")
        try:
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise UpstreamUnavailable(f"response of {declared} bytes exceeds the filter limit {limit}")
            parts = []
            size = 0
            while True:
                chunk = await payload.readany()
                if not chunk:
                    break
                size += len(chunk)
                parts.append(chunk)
                if size > limit:
                    oversize = getattr(transform, "oversize", None)
                    error = (
                        UpstreamUnavailable(f"response exceeds the filter limit {limit}")
                        if oversize is None
                        else oversize(size)
                    )
                    if error is not None:
                        raise error
                    break  # the filter lets it through unfiltered
        except BaseException:
            conn.abort()
            raise
        if size > limit:
            return await self._respond_streamed(request, conn, message, payload, request_complete, parts)
        conn.finish(request_complete)
        body = transform(b"".join(parts))
        headers = downstream_response_headers(message.headers, keep_length=False)
        _drop_filtered(headers)
        return web.Response(
            status=message.code,
            reason=message.reason or None,
            body=body,
            headers=headers,
        )

    async def _respond_streamed(
        self,
        request: web.BaseRequest,
        conn: UpstreamConnection,
        message: RawResponseMessage,
        payload: StreamReader,
        request_complete: bool,
        prefix: Sequence[bytes] = (),
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=message.code,
            reason=message.reason or None,
            headers=downstream_response_headers(message.headers, keep_length=True),
        )
        try:
            await response.prepare(request)
        except BaseException:
            conn.abort()
            raise
        try:
            for chunk in prefix:  # what a filter read before letting the body through
                await response.write(chunk)
            while True:
                chunk = await payload.readany()
                if not chunk:
                    break
                await response.write(chunk)
        except RolegateError:
            # Upstream failed mid-body (closed, timed out, garbage). Headers are
            # gone already: cut the client off so it cannot mistake the partial
            # body for a complete one.
            conn.abort()
            _cut_client(request)
            return response
        except ConnectionError:
            # Client went away: this upstream connection is mid-response and
            # can never be reused.
            conn.abort()
            return response
        except BaseException:
            conn.abort()
            raise
        conn.finish(request_complete)
        try:
            await response.write_eof()
        except ConnectionError:
            pass
        return response

    # -- websocket -----------------------------------------------------------

    def _trusts(self, peer: str) -> bool:
        if not self.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self.trusted_proxies)

    async def _forward_websocket(
        self,
        request: web.BaseRequest,
        up: Upstream,
        target: bytes,
        client_addr: str,
        proto: str,
        fwd_host: str,
        set_headers: Mapping[str, str],
    ) -> web.StreamResponse:
        headers = websocket_request_headers(
            request.raw_headers,
            trust_forwarded_for=self._trusts(client_addr),
            client_addr=client_addr,
            forwarded_proto=proto,
            forwarded_host=fwd_host,
            set_headers=set_headers,
            drop_underscore=self.drop_underscore_headers,
        )
        headers["Host"] = fwd_host if up.preserve_host else up.host_header.decode("ascii")
        session = self._ws_session
        if session is None or session.closed:
            session = self._ws_session = aiohttp.ClientSession(
                auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        # The target is already validated ASCII; keep it byte-for-byte (no requoting).
        url = URL.build(
            scheme=up.scheme,
            host=up.host,
            port=up.port,
            encoded=True,
            path=target.decode("ascii").split("?", 1)[0],
            query_string=target.decode("ascii").split("?", 1)[1] if b"?" in target else "",
        )
        return await proxy_websocket(
            request,
            session,
            url,
            headers,
            connect_timeout=up.connect_timeout,
            max_msg_size=self.ws_max_msg_size,
            ssl_context=up.ssl,
        )


def _drop_filtered(headers: CIMultiDict[str], *also: str) -> None:
    for name in (*_FILTERED_DROPS, *also):
        headers.popall(name, None)


def _cut_client(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None and not transport.is_closing():
        transport.close()
