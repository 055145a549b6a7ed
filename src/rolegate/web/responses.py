"""Answer errors the way each client understands: HTML for browsers, JSON for APIs.

Only the error's safe public message and a reference id leave rolegate; the detail is logged
under the same reference, so ops can find it when a user quotes the id.
"""

from __future__ import annotations

import html
import json
import logging

from aiohttp import web

from rolegate.errors import RolegateError
from rolegate.web import malformed

log = logging.getLogger("rolegate.errors")
# Answers to requests rolegate could not read: logged on the rate-limited malformed-request logger.
_MALFORMED = frozenset({400, 431})

_TITLES = {
    400: "Bad request",
    401: "Sign-in required",
    403: "Access denied",
    404: "Not found",
    405: "Method not allowed",
    413: "Request too large",
    429: "Too many requests",
    431: "Request headers too large",
    502: "Application unreachable",
    503: "Unavailable",
    504: "Application timed out",
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:12vh auto;padding:0 1rem;color:#222}}
h1{{font-size:1.4rem}}.ref{{color:#666;font-size:.85rem}}a{{color:#0a58ca}}
a.button{{display:inline-block;padding:.7rem 1.2rem;border-radius:.4rem;background:#0a58ca;color:#fff;text-decoration:none}}
.who{{color:#444}}</style></head>
<body><h1>{title}</h1><p>{message}</p>{extra}<p class="ref">Reference: {reference}</p></body></html>
"""


_PASS_LINK = "/.rolegate/pass/"


def loggable_path(path: str) -> str:
    """The path with secrets in it masked: a day-pass link's code is a bearer credential, wherever the link
    appears (at the start, or behind an Envoy ext_authz prefix: ``/.rolegate/auth/.rolegate/pass/<code>``)."""
    at = path.find(_PASS_LINK)
    if at < 0:
        return path
    return path[:at] + _PASS_LINK + "<code>"


def wants_html(request: web.BaseRequest) -> bool:
    """A browser navigation, as opposed to an API or XHR call."""
    headers = request.headers
    if headers.get("X-Requested-With", "").lower() == "xmlhttprequest":
        return False
    accept = headers.get("Accept", "")
    return "text/html" in accept


def log_error(request: web.BaseRequest, error: RolegateError) -> None:
    """Log ``error``'s detail under its reference id: one line, escaped; a malformed request's rate limited."""
    status = error.status
    if status >= 500 or error.detail:
        logger = malformed.log if status in _MALFORMED else log
        logger.log(
            logging.WARNING if status >= 500 else logging.INFO,
            "%s %s -> %d %s ref=%s: %s",
            request.method,
            malformed.printable(loggable_path(request.path)),
            status,
            error.code,
            error.reference,
            malformed.printable(error.detail or "-"),
        )


def error_response(
    request: web.BaseRequest,
    error: RolegateError,
    *,
    extra_html: str = "",
    headers: dict[str, str] | None = None,
    logged: bool = False,
    fields: dict[str, object] | None = None,
) -> web.Response:
    """Render ``error`` for this client; log its detail under its reference id (unless the caller ``logged`` it).

    ``extra_html`` goes below the message on the page, ``fields`` into the JSON answer (the same things)."""
    status = error.status
    if not logged:
        log_error(request, error)
    out_headers = {"Cache-Control": "no-store", "X-Rolegate-Reference": error.reference}
    if headers:
        out_headers.update(headers)
    if wants_html(request):
        title = _TITLES.get(status, "Error")
        body = _PAGE.format(
            title=html.escape(title),
            message=html.escape(error.public_message),
            extra=extra_html,
            reference=html.escape(error.reference),
        )
        return web.Response(status=status, text=body, content_type="text/html", headers=out_headers)
    payload = {**(fields or {}), "error": error.code, "message": error.public_message, "reference": error.reference}
    return web.Response(status=status, text=json.dumps(payload), content_type="application/json", headers=out_headers)
