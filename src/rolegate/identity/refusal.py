"""Clear pages for people who signed in but may not pass at all (e.g. a disabled account).

The pipeline calls ``account_disabled_response`` when the directory says the user is disabled;
browsers get an HTML page (with a way to sign out), APIs a JSON error. Never a backend response.
"""

from __future__ import annotations

import html

from aiohttp import web

from rolegate.identity.errors import AccountDisabled
from rolegate.server.responses import error_response

LOGOUT_PATH = "/.rolegate/logout"


def account_disabled_response(request: web.BaseRequest, *, detail: str = "") -> web.Response:
    """403 "your account is disabled" for this client (HTML page or JSON)."""
    error = AccountDisabled(detail or "account disabled in the directory")
    extra = f'<p><a href="{html.escape(LOGOUT_PATH)}">Sign out</a></p>'
    return error_response(request, error, extra_html=extra)
