"""Answer "who are you?" the way each client understands (Oathkeeper's ``pipeline/errors/when.go``):
a browser navigation is redirected to sign in; API calls, XHR and non-GET requests get 401 with
``WWW-Authenticate: Bearer realm="rolegate"`` and never a redirect."""

from __future__ import annotations

import html

from aiohttp import web

from rolegate.errors import Unauthenticated
from rolegate.web.responses import error_response, wants_html

REALM = "rolegate"
_NAVIGATION_METHODS = frozenset({"GET", "HEAD"})


def www_authenticate(error: Unauthenticated) -> str:
    value = f'Bearer realm="{REALM}"'
    bearer_error = getattr(error, "bearer_error", None)
    if bearer_error:
        value += f', error="{bearer_error}"'
        description = getattr(error, "bearer_error_description", None)
        if description:
            value += f', error_description="{description}"'
    return value


def is_browser_navigation(request: web.BaseRequest, method: str | None = None) -> bool:
    """A top-level GET/HEAD from a browser (Accept: text/html, not XHR)."""
    return (method or request.method).upper() in _NAVIGATION_METHODS and wants_html(request)


def challenge_response(
    request: web.BaseRequest, error: Unauthenticated, *, method: str | None = None, redirect: bool = True
) -> web.Response:
    """302 to the login URL for a browser navigation, else 401 + WWW-Authenticate (HTML or JSON body)."""
    login_url = getattr(error, "login_url", None)
    if redirect and login_url and is_browser_navigation(request, method):
        return web.Response(status=302, headers={"Location": login_url, "Cache-Control": "no-store"})
    extra = ""
    if login_url:
        extra = f'<p><a href="{html.escape(login_url)}">Sign in</a></p>'
    return error_response(request, error, extra_html=extra, headers={"WWW-Authenticate": www_authenticate(error)})
