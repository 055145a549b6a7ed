"""Slow, idle and surplus clients on the proxy listener (``server.timeouts``, ``server.max_connections``).

aiohttp's server closes a kept-alive connection that waits too long for its next request (its
keep-alive timeout: ``idle``), but a client that sends its request head a byte at a time, or a body
that never ends, keeps a connection (and a file descriptor) for as long as it likes. This module adds,
per worker:

- ``header``: from the connection opening, or the first byte of the next request on a kept-alive
  connection, until the request's head is complete;
- ``body``: from a request's head until its whole body has arrived;
- ``max_connections``: past it, a new connection takes the place of the oldest one that has not sent a
  byte yet, or else is answered 503 and closed.

A client that runs out of time is disconnected (no response: it has not finished asking), counted in
``rolegate_connections_closed_total{reason}`` and summed up in one log line every SUMMARY_SECONDS.

It works by giving aiohttp's ``Server`` a ``RequestHandler`` subclass that watches ``data_received``;
the few aiohttp internals it reads (the parsed-message count and queue, the upgrade flag) are named in
``_GuardedHandler`` and covered by tests/faults/test_slow_clients.py.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from rolegate.config.sections.server import ServerConfig
from rolegate.server import metrics

log = logging.getLogger("rolegate.connections")

# Shortest time between two log lines that sum up the connections closed for being slow or surplus.
SUMMARY_SECONDS = 10.0
# What a connection past the cap is told before it is closed.
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: 37\r\n\r\nToo many connections; try again soon."
)


@dataclass(frozen=True, slots=True)
class Limits:
    header: float
    idle: float
    body: float
    max_connections: int

    @classmethod
    def from_config(cls, server: ServerConfig) -> Limits:
        timeouts = server.timeouts
        return cls(
            header=timeouts.header.total_seconds(),
            idle=timeouts.idle.total_seconds(),
            body=timeouts.body.total_seconds(),
            max_connections=server.max_connections or default_max_connections(),
        )


def default_max_connections() -> int:
    """Half the process's open-file limit (a proxied request holds an upstream connection too), 64..16384."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 16384
    return max(64, min(16384, (soft - 64) // 2))


class _Closures:
    """Counts connections closed by this module and logs a summary at most every SUMMARY_SECONDS."""

    def __init__(self) -> None:
        self.pending: Counter[str] = Counter()
        self._flush: asyncio.TimerHandle | None = None

    def count(self, reason: str) -> None:
        metrics.CONNECTIONS_CLOSED.labels(reason).inc()
        self.pending[reason] += 1
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(SUMMARY_SECONDS, self.report)

    def report(self) -> None:
        self._flush = None
        if self.pending:
            log.info(
                "closed %d client connections in the last %.0f s: %s",
                sum(self.pending.values()),
                SUMMARY_SECONDS,
                ", ".join(f"{reason} {n}" for reason, n in sorted(self.pending.items())),
            )
            self.pending.clear()


class _GuardedServer(web.Server):
    """aiohttp's Server, handing out _GuardedHandlers and knowing which connections have not spoken yet."""

    limits: Limits
    closures: _Closures
    silent: dict[_GuardedHandler, None]  # connections that have not sent a byte, oldest first

    def __call__(self) -> RequestHandler:
        return _GuardedHandler(self, loop=self._loop, **self._kwargs)

    def make_room(self, newcomer: _GuardedHandler) -> bool:
        """At the cap: close the oldest connection that has not sent a byte yet. False: there is none."""
        for handler in self.silent:
            if handler is not newcomer:
                del self.silent[handler]
                self.closures.count("evicted")
                handler.force_close()
                return True
        return False


class _GuardedHandler(RequestHandler):
    """One client connection, with the header and body deadlines. aiohttp internals read here:
    ``_request_count`` (request heads parsed so far), ``_messages`` (parsed, not yet handled) and
    ``_upgraded`` (the connection now carries WebSocket frames)."""

    __slots__ = ("_deadline", "_body")

    def __init__(self, manager: _GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._body: Any = None  # the payload whose arrival the body deadline watches

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server: _GuardedServer = self._manager  # type: ignore[assignment]
        super().connection_made(transport)
        if len(server._connections) > server.limits.max_connections and not server.make_room(self):
            server.closures.count("over_capacity")
            transport.write(_BUSY)  # type: ignore[attr-defined]
            self.force_close()
            return
        server.silent[self] = None
        self._arm(server.limits.header, "header_timeout")

    def data_received(self, data: bytes) -> None:
        server: _GuardedServer | None = self._manager  # type: ignore[assignment]
        if server is None or self._upgraded:
            super().data_received(data)
            return
        server.silent.pop(self, None)
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:  # a request head is complete
            self._disarm()
            message, payload = self._messages[-1] if self._messages else (None, None)
            if payload is not None and not payload.is_eof() and not getattr(message, "upgrade", False):
                self._body = payload
                self._arm(server.limits.body, "body_timeout")
                payload.on_eof(self._body_arrived)
        elif self._deadline is None and self._body is None and data and not self._upgraded:
            # The first bytes of the next request on a kept-alive connection: its head has `header` to arrive.
            self._arm(server.limits.header, "header_timeout")

    def connection_lost(self, exc: BaseException | None) -> None:
        server: _GuardedServer | None = self._manager  # type: ignore[assignment]
        if server is not None:
            server.silent.pop(self, None)
        self._disarm()
        self._body = None
        super().connection_lost(exc)

    def _body_arrived(self) -> None:
        self._body = None
        self._disarm()

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._deadline = self._loop.call_later(seconds, self._expired, reason)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, reason: str) -> None:
        self._deadline = None
        server: _GuardedServer | None = self._manager  # type: ignore[assignment]
        if server is None or self.transport is None:
            return
        server.closures.count(reason)
        self.force_close()


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose server applies ``Limits`` (aiohttp's keep-alive timeout is ``idle``)."""

    __slots__ = ("_limits",)

    def __init__(self, app: web.Application, limits: Limits, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=limits.idle, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app builds a plain Server; it becomes ours (same layout, one method more).
        server.__class__ = _GuardedServer
        guarded: _GuardedServer = server  # type: ignore[assignment]
        guarded.limits = self._limits
        guarded.closures = _Closures()
        guarded.silent = {}
        return guarded
