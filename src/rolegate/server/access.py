"""One access decision for a request target, shared by the proxy pipeline and forward-auth.

normalize -> match -> authenticate -> authorize; the result says what to forward and which
headers to add, or which error to answer.
"""

from __future__ import annotations

from aiohttp import web

from rolegate.errors import Forbidden, MethodNotAllowed, RolegateError, Unauthenticated
from rolegate.proxy.paths import normalize_path, split_segments
from rolegate.proxy.routes import Route, canonical_host
from rolegate.server.runtime import Runtime

_NO_HEADERS: dict[str, str] = {}


class Access:
    """The outcome of check_access: either ``error`` is set, or the request may be forwarded."""

    __slots__ = ("route", "path_qs", "principal", "set_headers", "error", "allow_header", "response_filter")

    def __init__(self) -> None:
        self.route: Route | None = None
        self.path_qs = ""
        self.principal = None
        self.set_headers: dict[str, str] = _NO_HEADERS
        self.error: RolegateError | None = None
        self.allow_header: str | None = None
        self.response_filter = None


async def check_access(runtime: Runtime, request: web.BaseRequest, method: str, host: str,
                       raw_target: str) -> Access:
    """Decide whether ``method raw_target`` on ``host`` may pass, for the caller of ``request``."""
    access = Access()
    try:
        raw_path, sep, query = raw_target.partition("?")
        path = normalize_path(raw_path)
        access.path_qs = path + sep + query
        match = runtime.routes.match(method, canonical_host(host), split_segments(path))
        if match is None:
            raise Forbidden(f"unmatched {method} {path}")
        if not match.method_allowed:
            access.allow_header = ", ".join(sorted(match.allowed_methods or ()))
            raise MethodNotAllowed(f"{method} {path}")
        route = access.route = match.route
        if route.mode == "public":
            return access
        # -- identity stage (issue 3): sessions, bearer tokens; day passes later ----------------
        identity = runtime.identity
        if identity is None:
            raise Unauthenticated(f"{route.mode} route {route.name} needs a signed-in user (no oidc/session configured)")
        principal = await identity.authenticate(request)
        if principal is None:
            raise identity.sign_in_required(f"{route.mode} route {route.name} needs a signed-in user",
                                            scheme=None, host=host, raw_target=raw_target)
        access.principal = principal
        access.set_headers = identity.upstream_headers(request, principal)
        if route.mode == "authenticated":
            return access
        # -- end identity stage; authorization plugs in here (fail closed until it does) ---------
        raise Forbidden(f"{route.mode} route {route.name}: no authorizer wired yet")
    except RolegateError as exc:
        access.error = exc
    return access
