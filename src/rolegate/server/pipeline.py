"""The request pipeline: normalize -> match -> authenticate -> authorize -> forward.

One direction, one handler: the path that was authorized is byte-for-byte the path forwarded.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from rolegate.errors import (
    HeadersTooLarge,
    RolegateError,
    ServiceUnavailable,
    Unauthenticated,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from rolegate.identity.challenge import challenge_response
from rolegate.identity.daypass.refusal import outside_pass_page_for
from rolegate.proxy.headers import check_host
from rolegate.proxy.routes import Route
from rolegate.server import metrics
from rolegate.server.access import check_access, record_outcome, record_write
from rolegate.web.malformed import RateLimit, printable
from rolegate.server.refused import refusal_page_for
from rolegate.web.responses import error_response, loggable_path
from rolegate.server.runtime import RuntimeHolder
from rolegate.store import StoreUnavailable

log = logging.getLogger("rolegate.pipeline")
log.addFilter(RateLimit(5))  # a bug a request can reach must not let its sender fill the log with tracebacks

_FORWARDED = metrics.buffered(metrics.REQUESTS.labels("forwarded"))
_DENIED = metrics.buffered(metrics.REQUESTS.labels("denied"))
_ERRORED = metrics.buffered(metrics.REQUESTS.labels("error"))


def check_header_size(request: web.BaseRequest, limit: int) -> None:
    """Raise HeadersTooLarge (431) when the request's header block exceeds ``limit`` bytes."""
    total = 0
    for name, value in request.raw_headers:
        total += len(name) + len(value) + 4
    if total > limit:
        raise HeadersTooLarge(f"{total} header bytes > {limit}")


def _upstream_of(route: Route) -> str:
    """The upstream a route forwards to. A route may name none (forward-auth answers for it; the front proxy
    forwards): the proxy path then answers as the forwarder does for a name it does not know."""
    if route.upstream is None:
        raise UpstreamUnavailable(f"no upstream named {route.upstream!r}")
    return route.upstream


class Pipeline:
    """The catch-all handler for every path that is not one of rolegate's own."""

    __slots__ = ("holder",)

    def __init__(self, holder: RuntimeHolder) -> None:
        self.holder = holder

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        runtime = self.holder.runtime
        access = None
        try:
            check_header_size(request, runtime.max_header_size)
            check_host(request.host)
            access = await check_access(runtime, request, request.method, request.host, request.raw_path)
            if access.error is not None:
                _DENIED.inc()
                if isinstance(access.error, Unauthenticated):
                    # Browsers go to sign-in; APIs get 401 + WWW-Authenticate, never a redirect.
                    return challenge_response(request, access.error)
                if (page := await outside_pass_page_for(runtime, request, access)) is not None:
                    return page  # a day-pass holder's browser: what the pass covers, the way back
                if (
                    access.principal is not None
                    and (page := await refusal_page_for(runtime, request, access)) is not None
                ):
                    return page  # a signed-in person: who they are, what they tried, whom to ask
                headers = {"Allow": access.allow_header} if access.allow_header else None
                return error_response(request, access.error, headers=headers)
            route = access.route
            assert route is not None  # check_access answers without an error only for a matched route
            if access.write:
                started = time.perf_counter()
                await record_write(runtime, request, access, request.method)
            response = await runtime.forwarder.forward(
                request, _upstream_of(route), access.path_qs, access.set_headers, access.response_filter
            )
            _FORWARDED.inc()
            if access.write:
                record_outcome(runtime, request, access, request.method, response.status, started)
            return response
        except RolegateError as exc:
            (_DENIED if exc.status < 500 else _ERRORED).inc()
            if (
                isinstance(exc, (UpstreamUnavailable, UpstreamTimeout))
                and access is not None
                and (access.route is not None)
            ):
                metrics.UPSTREAM_ERRORS.labels(access.route.upstream, exc.code).inc()
            retry = getattr(exc, "retry_after", None)  # e.g. AuditUnavailable: the audit store is away
            return error_response(request, exc, headers={"Retry-After": str(retry)} if retry else None)
        except StoreUnavailable as exc:
            # An outage the code on the way did not expect to meet (each part that reads the Store rides it out
            # from what it holds, for storage.max_staleness): fail closed as what it is, an outage - 503 with
            # Retry-After and one line naming the cause - never a 500 with a traceback.
            if request.writer.output_size:
                raise
            _ERRORED.inc()
            return error_response(request, ServiceUnavailable(str(exc)), headers={"Retry-After": "5"})
        except Exception as exc:
            if request.writer.output_size:
                raise  # the response has begun: aiohttp closes the connection
            # A bug, not the client's doing: the traceback is logged (rate limited) under the reference
            # the client gets, in rolegate's own error page rather than aiohttp's bare 500.
            _ERRORED.inc()
            error = RolegateError(f"unexpected {type(exc).__name__}")
            log.exception(
                "%s %s -> 500 ref=%s", request.method, printable(loggable_path(request.path)), error.reference
            )
            return error_response(request, error, logged=True)
