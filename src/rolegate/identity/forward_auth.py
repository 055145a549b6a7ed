"""``/.rolegate/auth``: forward-auth for nginx ``auth_request``, Traefik ``forwardAuth``, Caddy
``forward_auth`` and Envoy's ``ext_authz`` (HTTP service).

The proxy in front names the original request; that is routing input only (which route, which method,
which host) — the identity still comes from the caller's own cookie or token. Whoever writes the routing
input chooses what is authorized, and nginx, Traefik and Caddy pass the client's own headers on to the
subrequest, so a header the proxy does not set itself is the client's. Hence:

* the operator names the one front proxy (``server.forward_auth.proxy``) and only the headers that proxy
  sets are read (``CONVENTIONS``); nothing falls back to another proxy's headers;
* only peers in ``server.trusted_proxies`` are answered (loopback peers when that list is empty);
* another convention's headers (the client's copies) are ignored, and logged, when they name the same
  request; when they name another one, or a header of the configured set is missing or repeated, the
  subrequest is refused with 400 — rolegate does not guess which of two targets is the real one.

Answers: 200 + identity headers, 401 (with ``X-Rolegate-Login`` for nginx, or a 302 for the proxies that
pass our answer to the client), 403 for every other refusal (an untrusted peer included), 400 for routing
input that is missing or contradicts itself, 404 while ``server.forward_auth`` is not configured.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from rolegate.errors import BadRequest, Forbidden, NotFound, RolegateError, Unauthenticated
from rolegate.identity.challenge import challenge_response, is_browser_navigation, www_authenticate
from rolegate.identity.principal import identity_headers
from rolegate.web.responses import error_response

if TYPE_CHECKING:
    from rolegate.server.access import Access
    from rolegate.server.runtime import Runtime, RuntimeHolder

    # ``rolegate.server.access.check_access``: the server hands it in (identity does not import server at run time).
    CheckAccess = Callable[[Runtime, web.BaseRequest, str, str, str], Awaitable[Access]]

log = logging.getLogger(__name__)

ENDPOINT = "/.rolegate/auth"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_NOBODY = {"X-Rolegate-User": "", "X-Rolegate-Email": "", "X-Rolegate-Groups": ""}
_MAX_URI = 8192


@dataclass(frozen=True)
class Convention:
    """Where one front proxy puts the original request. ``None``: the subrequest's own method, or its
    path after ``/.rolegate/auth`` (Envoy's ``path_prefix``)."""

    method: str | None
    uri: str | None
    host: str


_X_FORWARDED = Convention("X-Forwarded-Method", "X-Forwarded-Uri", "X-Forwarded-Host")
CONVENTIONS: dict[str, Convention] = {
    # auth_request: the location sets X-Original-URI/-Method and X-Forwarded-Host/-Proto (deploy/nginx/).
    "nginx": Convention("X-Original-Method", "X-Original-URI", "X-Forwarded-Host"),
    # forwardAuth and forward_auth set X-Forwarded-Method/-Uri/-Host/-Proto, replacing the client's.
    "traefik": _X_FORWARDED,
    "caddy": _X_FORWARDED,
    # ext_authz (HTTP service) sends the original method and path_prefix + path, Host = :authority.
    "envoy": Convention(None, None, "Host"),
}
# Every header some convention reads the original target or method from: the ones the configured proxy
# does not set may only agree with it. X-Envoy-Original-Path is Envoy's name for a path before a rewrite.
_URI_HEADERS = ("X-Original-URI", "X-Forwarded-Uri", "X-Envoy-Original-Path")
_METHOD_HEADERS = ("X-Original-Method", "X-Forwarded-Method")


class RoutingInputError(BadRequest):
    """The subrequest does not name exactly one original request."""

    code = "forward_auth_routing"
    public_message = "The forward-auth request does not name one original request."


@dataclass(frozen=True)
class Original:
    method: str
    uri: str
    host: str
    scheme: str | None
    ignored: tuple[str, ...]  # other conventions' headers that agreed and were left unread


def _one(request: web.BaseRequest, name: str, proxy: str) -> str:
    values = request.headers.getall(name, ())
    if len(values) != 1 or not values[0]:
        raise RoutingInputError(
            f"proxy {proxy}: expected one {name} header, got {len(values)}"
            + (" (empty)" if values and not values[0] else "")
        )
    return values[0]


def _path_after_endpoint(request: web.BaseRequest) -> str:
    """What follows ``/.rolegate/auth`` in the raw target ('' for the endpoint itself, query or not)."""
    raw = request.raw_path
    if not raw.startswith(ENDPOINT):
        raise RoutingInputError("forward-auth reached through a non-canonical path")
    rest = raw[len(ENDPOINT) :]
    return rest if rest.startswith("/") else ""


def read_original(request: web.BaseRequest, proxy: str) -> Original:
    """The original request as ``proxy`` names it; ``RoutingInputError`` when it is missing, repeated, or
    contradicted by another convention's headers."""
    convention = CONVENTIONS[proxy]
    headers = request.headers
    suffix = _path_after_endpoint(request)
    if convention.uri is None:
        if not suffix:
            raise RoutingInputError(f"proxy {proxy}: no original path after {ENDPOINT} (ext_authz path_prefix)")
        uri = suffix
    else:
        if suffix:
            raise RoutingInputError(f"proxy {proxy}: a path after {ENDPOINT} is Envoy's convention")
        uri = _one(request, convention.uri, proxy)
    method = request.method if convention.method is None else _one(request, convention.method, proxy).upper()
    host = _one(request, convention.host, proxy)
    scheme_values = headers.getall("X-Forwarded-Proto", ())
    if len(scheme_values) > 1:
        raise RoutingInputError(f"proxy {proxy}: {len(scheme_values)} X-Forwarded-Proto headers")

    ignored: list[str] = []
    for name in _URI_HEADERS:
        if name != convention.uri and name in headers:
            if any(value != uri for value in headers.getall(name)):
                raise RoutingInputError(
                    f"proxy {proxy}: {name} names another target than {convention.uri or 'the path'}"
                )
            ignored.append(name)
    for name in _METHOD_HEADERS:
        if name != convention.method and name in headers:
            if any(value.upper() != method for value in headers.getall(name)):
                raise RoutingInputError(
                    f"proxy {proxy}: {name} names another method than {convention.method or 'the request'}"
                )
            ignored.append(name)
    if convention.host != "X-Forwarded-Host" and "X-Forwarded-Host" in headers:
        if any(value.lower() != host.lower() for value in headers.getall("X-Forwarded-Host")):
            raise RoutingInputError(f"proxy {proxy}: X-Forwarded-Host names another host than {convention.host}")
        ignored.append("X-Forwarded-Host")
    scheme = scheme_values[0] if scheme_values and scheme_values[0] in ("http", "https") else None
    return Original(method=method, uri=uri, host=host, scheme=scheme, ignored=tuple(ignored))


@functools.lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in trusted)


@functools.lru_cache(maxsize=1024)
def trusted_peer(peer: str | None, trusted: tuple[str, ...]) -> bool:
    """Whether ``peer`` may ask: one of ``trusted`` (CIDRs), or, when that is empty, a loopback address.
    Remembered per (peer, trusted list): the answer depends on nothing else, and a front proxy asks from
    a handful of addresses (at most 1024 pairs are kept, the least recently asked dropped first)."""
    try:
        address = ipaddress.ip_address(peer or "")
    except ValueError:
        return False  # a Unix socket or no peer at all: nothing to check it against
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not trusted:
        return address.is_loopback
    return any(address in network for network in _networks(trusted))


class _Throttled:
    """At most one log line per kind (a fixed, small set) every ``interval`` seconds; the lines held back
    are counted into the next one. A client sending odd headers in a loop does not flood the log."""

    __slots__ = ("interval", "_next", "_held")

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next.get(kind, 0.0):
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        self._next[kind] = now + self.interval
        held = self._held.pop(kind, 0)
        if held:
            message += " (and %d more like it since the last report)"
            args = (*args, held)
        log.log(level, message, *args)


def _answer(access: "Access") -> dict[str, str]:
    """The headers of an allowing answer: who is asking, and what the upstream may learn."""
    # The identity headers are always named, empty for nobody: a proxy that copies them by name
    # (Caddy 2.6's copy_headers) would otherwise hand the app its unreplaced placeholder.
    out = {"Cache-Control": "no-store", **_NOBODY}
    if access.principal is not None:
        out.update(identity_headers(access.principal))
    out.update(access.set_headers)
    return out


class ForwardAuth:
    """The forward-auth handler; runs the same ``check_access`` as the proxy pipeline."""

    __slots__ = ("holder", "_check_access", "_log")

    def __init__(self, holder: "RuntimeHolder", check_access: "CheckAccess") -> None:
        self.holder = holder
        self._check_access = check_access  # the proxy pipeline's own decision (the server passes it in)
        self._log = _Throttled()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        check_access = self._check_access
        runtime = self.holder.runtime
        server = runtime.config.server
        if server.forward_auth is None:
            self._log.log(
                logging.WARNING,
                "off",
                "forward-auth asked by %s, but server.forward_auth is not configured: answered 404",
                request.remote,
            )
            return error_response(request, NotFound())
        proxy = server.forward_auth.proxy
        nginx = proxy == "nginx"
        if not trusted_peer(request.remote, server.trusted_proxies):
            self._log.log(
                logging.WARNING,
                "untrusted",
                "forward-auth refused %s: not a trusted proxy (server.trusted_proxies, or loopback when that is empty)",
                request.remote,
            )
            return error_response(request, Forbidden())
        try:
            original = read_original(request, proxy)
        except RoutingInputError as exc:
            return error_response(request, exc)
        if original.ignored:
            self._log.log(
                logging.INFO,
                "ignored",
                "forward-auth (proxy %s): ignored %s from %s, copies that the proxy does not set",
                proxy,
                ", ".join(original.ignored),
                request.remote,
            )
        method, uri, host, scheme = original.method, original.uri, original.host, original.scheme
        try:
            if method not in _METHODS:
                raise BadRequest(f"forward-auth: unknown method {method!r}")
            if not uri.startswith("/") or len(uri) > _MAX_URI or "," in host:
                raise BadRequest("forward-auth: malformed original URI/host")
            access = await check_access(runtime, request, method, host, uri)
        except RolegateError as exc:
            return self._refuse(request, exc, method="GET", nginx=nginx)
        if access.error is not None:
            return self._refuse(request, access.error, method=method, nginx=nginx, scheme=scheme, host=host, uri=uri)
        if access.response_filter is not None:
            # The route hides fields from this caller, and the answer will never pass through rolegate:
            # the front proxy would relay it whole. Refused, never allowed with the fields in it.
            route = access.route
            return self._refuse(
                request,
                Forbidden(
                    f"route {route.name if route is not None else '?'} hides response fields from "
                    f"{access.principal.username if access.principal is not None else 'anonymous callers'}; "
                    "forward-auth cannot redact: serve this route through rolegate's proxy"
                ),
                method=method,
                nginx=nginx,
            )
        known = access.known
        if known is None:
            return web.Response(status=200, headers=_answer(access))
        # A remembered access answer (AccessMemo: valid while nothing moved, see its docstring): the
        # headers of our answer depend on nothing else, so they are built once and live and end with it.
        out = known.answer
        if out is None:
            out = known.answer = CIMultiDict(_answer(access))
        return web.Response(status=200, headers=out)

    def _refuse(
        self,
        request: web.Request,
        error: RolegateError,
        *,
        method: str,
        nginx: bool,
        scheme: str | None = None,
        host: str = "",
        uri: str = "",
    ) -> web.Response:
        if isinstance(error, Unauthenticated):
            if nginx:
                # auth_request only understands 2xx/401/403: the redirect is nginx's to make; we say where.
                response = error_response(request, error, headers={"WWW-Authenticate": www_authenticate(error)})
                login_url = getattr(error, "login_url", None)
                if login_url and is_browser_navigation(request, method):
                    response.headers["X-Rolegate-Login"] = login_url
                return response
            stage = getattr(self.holder.runtime, "identity", None)
            if stage is not None and getattr(error, "login_url", None) and scheme and host and uri:
                error.login_url = stage.login_url_for(scheme, host, uri)  # type: ignore[attr-defined]
            return challenge_response(request, error, method=method)
        if error.status < 500 and error.status != 403:
            # 404/405/400 would be a 500 for nginx; the proxy only needs "no".
            forbidden = error
            forbidden.status = 403
            return error_response(request, forbidden)
        return error_response(request, error)
