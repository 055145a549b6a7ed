"""The request pipeline of DESIGN.md: normalize -> match -> authenticate -> authorize -> forward.

One direction, one handler: each stage is a plain call on the current Runtime, so the path that
was authorized is byte-for-byte the path that is forwarded.
"""

from __future__ import annotations

import logging

from aiohttp import web

from rolegate.errors import (
    Forbidden,
    HeadersTooLarge,
    MethodNotAllowed,
    RolegateError,
    Unauthenticated,
)
from rolegate.proxy.paths import normalize_path, split_segments
from rolegate.proxy.routes import canonical_host
from rolegate.server import metrics
from rolegate.server.responses import error_response
from rolegate.server.runtime import RuntimeHolder

log = logging.getLogger("rolegate.pipeline")

_FORWARDED = metrics.REQUESTS.labels("forwarded")
_DENIED = metrics.REQUESTS.labels("denied")
_ERRORED = metrics.REQUESTS.labels("error")


def check_header_size(request: web.BaseRequest, limit: int) -> None:
    """Raise HeadersTooLarge (431) when the request's header block exceeds ``limit`` bytes."""
    total = 0
    for name, value in request.raw_headers:
        total += len(name) + len(value) + 4
    if total > limit:
        raise HeadersTooLarge(f"{total} header bytes > {limit}")


class Pipeline:
    """The catch-all handler for every path that is not one of rolegate's own."""

    __slots__ = ("holder",)

    def __init__(self, holder: RuntimeHolder) -> None:
        self.holder = holder

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        runtime = self.holder.runtime
        try:
            check_header_size(request, runtime.max_header_size)
            raw = request.raw_path
            raw_path, sep, query = raw.partition("?")
            path = normalize_path(raw_path)
            match = runtime.routes.match(request.method, canonical_host(request.host),
                                         split_segments(path))
            if match is None:
                raise Forbidden(f"unmatched {request.method} {path}")
            if not match.method_allowed:
                allow = ", ".join(sorted(match.allowed_methods or ()))
                err = MethodNotAllowed(f"{request.method} {path}")
                _DENIED.inc()
                return error_response(request, err, headers={"Allow": allow})
            route = match.route
            if route.mode != "public":
                # Authentication and authorization plug in here (identity, authz stages).
                raise Unauthenticated(f"{route.mode} route {route.name} needs a signed-in user")
            response = await runtime.forwarder.forward(request, route.upstream, path + sep + query)
            _FORWARDED.inc()
            return response
        except RolegateError as exc:
            (_DENIED if exc.status < 500 else _ERRORED).inc()
            return error_response(request, exc)
