"""``/.rolegate/auth``: forward-auth for nginx ``auth_request``, Traefik ``forwardAuth`` and Caddy ``forward_auth``.

The proxy in front names the original request in headers; those headers are routing input only
(which route, which method) — the identity still comes from the caller's own cookie or token.
Answers: 200 + identity headers, 401 (with ``X-Rolegate-Login`` for browsers, or a 302 for
Traefik/Caddy which pass our answer to the client), 403 for every other refusal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from rolegate.errors import BadRequest, RolegateError, Unauthenticated
from rolegate.identity.challenge import challenge_response, is_browser_navigation, www_authenticate
from rolegate.identity.principal import identity_headers
from rolegate.server.responses import error_response

if TYPE_CHECKING:
    from rolegate.server.runtime import RuntimeHolder

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_MAX_URI = 8192


class ForwardAuth:
    """The forward-auth handler; runs the same ``check_access`` as the proxy pipeline."""

    __slots__ = ("holder",)

    def __init__(self, holder: "RuntimeHolder") -> None:
        self.holder = holder

    async def handle(self, request: web.Request) -> web.StreamResponse:
        from rolegate.server.access import check_access  # late: access imports the runtime, which imports us

        runtime = self.holder.runtime
        headers = request.headers
        nginx = "X-Original-URI" in headers
        try:
            method = (headers.get("X-Original-Method") or headers.get("X-Forwarded-Method") or "GET").upper()
            uri = headers.get("X-Original-URI") if nginx else headers.get("X-Forwarded-Uri")
            host = headers.get("X-Forwarded-Host") or request.host
            if method not in _METHODS:
                raise BadRequest(f"forward-auth: unknown method {method!r}")
            if not uri or not uri.startswith("/") or len(uri) > _MAX_URI or "," in host:
                raise BadRequest("forward-auth: missing or malformed original URI/host")
            scheme = headers.get("X-Forwarded-Proto")
            if scheme not in ("http", "https"):
                scheme = None
            access = await check_access(runtime, request, method, host, uri)
        except RolegateError as exc:
            return self._refuse(request, exc, method="GET", nginx=nginx)
        if access.error is not None:
            return self._refuse(request, access.error, method=method, nginx=nginx, scheme=scheme, host=host, uri=uri)
        out = {"Cache-Control": "no-store"}
        if access.principal is not None:
            out.update(identity_headers(access.principal))
        out.update(access.set_headers)
        return web.Response(status=200, headers=out)

    def _refuse(self, request: web.Request, error: RolegateError, *, method: str, nginx: bool,
                scheme: str | None = None, host: str = "", uri: str = "") -> web.Response:
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
            forbidden.status = 403  # type: ignore[misc]
            return error_response(request, forbidden)
        return error_response(request, error)
