"""Did one of rolegate's own origins start this request? The proof a cookie-identified change needs.

A cookie is an ambient credential: the browser attaches rolegate's session (or day-pass) cookie to
requests that any site starts — a form post, a fetch, a WebSocket — so a request it identified says
nothing about who started it. Such a request may change state, or open a WebSocket, only with proof
that a page of rolegate's own started it (``started_here``):

* ``Origin``, when the browser sends one, is that proof: it must be ``server.public_url``'s origin or
  an origin on one of ``server.allowed_hosts`` (over https, or http when the public URL is http; an
  entry without a port allows any port). ``null`` (a sandboxed frame, a redirect chain, a page under
  ``no-referrer``) never is.
* Without ``Origin``, ``Sec-Fetch-Site`` must be ``same-origin`` or ``none`` — or absent: a client
  that is no browser, or an old one. Browsers send ``Origin`` with every cross-origin POST and every
  WebSocket handshake, so its absence is not another site's request.

A bearer token is not ambient: another site's page can send one only after reading it, and a
cross-origin request carrying ``Authorization`` needs a CORS preflight that rolegate never grants.
So only the credential that identified the caller decides (``identified_by_cookie``): an
``Authorization`` header that no authenticator took (``Basic …``) next to the cookie changes nothing.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from rolegate.config.sections.server import ServerConfig

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Principal.auth of the credentials a browser does not attach by itself (see identity/principal.py).
_BEARER_KINDS = frozenset({"bearer", "rolegate_token"})
_MAX_ORIGIN = 512
_NOT_IN_NETLOC = frozenset("/?#@\\")


def identified_by_cookie(principal: Any) -> bool:
    """True unless a bearer token identified ``principal``; any other kind counts as a cookie (fail closed).

    Bearer authenticators are asked before the cookie ones (``identity/registry.py``): with both a
    bearer token one of them accepts and a cookie, the token identified the caller. A token that none
    of them takes as its own (not a JWT, another issuer) identifies nobody: then the cookie did, and
    its rule applies (with no cookie either, such a token is a 401).
    """
    return not (getattr(principal, "rolegate_bearer", False) or getattr(principal, "auth", None) in _BEARER_KINDS)


def _host_port(netloc: str) -> tuple[str, int | None] | None:
    """``(host, port)`` of ``netloc`` (port None: not given), or None when it is not a plain host[:port]."""
    if not netloc or any(c in _NOT_IN_NETLOC or ord(c) <= 0x20 or ord(c) >= 0x7F for c in netloc):
        return None
    try:
        parts = urlsplit(f"//{netloc}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    return (host, port) if host else None


class Origins:
    """rolegate's own origins: ``public_url``'s, and those on ``allowed_hosts``."""

    __slots__ = ("_public", "_schemes", "_hosts")

    def __init__(self, public_url: str, allowed_hosts: tuple[str, ...] = ()) -> None:
        parts = urlsplit(public_url)
        scheme = parts.scheme.lower()
        self._public = (scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme))
        self._schemes = frozenset({"https", scheme})
        hosts: dict[str, set[int | None]] = {}
        for entry in allowed_hosts:
            found = _host_port(entry.strip().lower())
            if found is not None:
                hosts.setdefault(found[0], set()).add(found[1])
        self._hosts = {host: frozenset(ports) for host, ports in hosts.items()}

    def allows(self, origin: str) -> bool:
        """Whether the ``Origin`` header value ``origin`` is one of rolegate's own origins."""
        if len(origin) > _MAX_ORIGIN:
            return False
        scheme, sep, netloc = origin.partition("://")
        scheme = scheme.lower()
        if not sep or scheme not in _DEFAULT_PORTS:
            return False  # "null", or not a serialized http(s) origin
        found = _host_port(netloc)
        if found is None:
            return False
        host, port = found
        port = port or _DEFAULT_PORTS[scheme]
        if (scheme, host, port) == self._public:
            return True
        ports = self._hosts.get(host)
        if ports is None or scheme not in self._schemes:
            return False
        return None in ports or port in ports

    def started_here(self, request: web.BaseRequest) -> bool:
        """Whether the browser says one of rolegate's own origins started ``request`` (see the module doc)."""
        origin = request.headers.get("Origin")
        if origin is not None:
            return self.allows(origin)
        return request.headers.get("Sec-Fetch-Site", "same-origin").strip().lower() in ("same-origin", "none")


@lru_cache(maxsize=16)
def _origins(public_url: str, allowed_hosts: tuple[str, ...]) -> Origins:
    return Origins(public_url, allowed_hosts)


def origins_for(server: ServerConfig) -> Origins:
    """The Origins of a ``server`` config section (built once per public URL and host list)."""
    return _origins(server.public_url, tuple(server.allowed_hosts))


def started_here(request: web.BaseRequest, server: ServerConfig) -> bool:
    """``origins_for(server).started_here(request)``."""
    return origins_for(server).started_here(request)
