"""The 403 a day-pass holder's browser gets: what the pass covers and the way back to the pass home.

Never the staff page ("Access denied" and a reference, which leaves a subcontractor nowhere to go),
and never more about the policy than the pass's own coverage: its scope, its end, the pages it opens.
The pipeline asks ``outside_pass_page`` first for every plain 403; anything that is not a browser
holding a working pass gets ``None`` and the usual answer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from rolegate.errors import Forbidden, RolegateError
from rolegate.identity.daypass.endpoints import links_of, pass_zone
from rolegate.identity.daypass.pages import outside_pass_page
from rolegate.identity.daypass.service import daypass_service
from rolegate.web.malformed import printable
from rolegate.web.responses import wants_html

if TYPE_CHECKING:
    from rolegate.server.access import Access
    from rolegate.server.runtime import Runtime

log = logging.getLogger("rolegate.errors")


async def outside_pass_page_for(runtime: "Runtime", request: web.BaseRequest, access: "Access") -> web.Response | None:
    """The pass-aware 403 for ``access.error``, or None when the caller is not a browser holding a pass."""
    error = access.error
    if type(error) is not Forbidden or runtime.config.daypass is None or runtime.identity is None:
        return None
    if not wants_html(request):
        return None  # APIs keep the JSON error
    principal = access.principal
    pass_id: str | None = getattr(principal, "daypass_id", None)  # set on a pass holder (DaypassPrincipal)
    if principal is not None and pass_id is None:
        return None  # staff, signed in: their own 403
    service = daypass_service(runtime.identity)
    if principal is None and service.cookie_name not in request.cookies:
        return None  # refused before anyone was identified (no route), and no pass on this device
    try:
        # Refused before authentication (no route matches), or to show the pass: its record, checked.
        held = await service.holder(request)
        if held is None or (principal is not None and held[0].daypass_id != pass_id):
            return None
        _holder, record = held
        links = await links_of(runtime, service, record)
    except RolegateError:
        return None  # the pass ended meanwhile, or the store is away: the usual answer
    # The line error_response would have written: the detail under the reference the holder can quote.
    log.info(
        "%s %s -> 403 %s ref=%s: %s",
        request.method,
        printable(request.path),
        error.code,
        error.reference,
        printable(error.detail or "-"),
    )
    return outside_pass_page(
        record, pass_zone(runtime.config, record.template), links, contact=service.contact, reference=error.reference
    )
