"""``/.rolegate/api/v1/access-requests``: ask for access, list, open, approve (with a preview), deny.

Registered on the admin API's operation table (``admin/api.py`` imports this module last), so the
router, CSRF checks, error answers and the OpenAPI document treat these like every other endpoint.
"""

from __future__ import annotations

from aiohttp import web

from rolegate.admin.api import Call, _json, op
from rolegate.admin.models import DryRun
from rolegate.admin.request_models import (
    AccessRequestCreated,
    AccessRequestIn,
    AccessRequestList,
    AccessRequestOut,
    ApprovalOut,
    ApproveIn,
    DenyIn,
)
from rolegate.admin.requests import AccessRequests


def _service(call: Call) -> AccessRequests:
    assert call.actor is not None
    return AccessRequests(call.runtime, call.actor)


@op(
    "POST",
    "/access-requests",
    "Ask for access you were refused (a permission at a scope, for a while)",
    "access requests",
    body=AccessRequestIn,
    response=AccessRequestCreated,
    status=201,
    description="Goes to the people who may grant it there (closest scope first). 409 when you have it already "
    "or nobody can grant it; the same request still pending is answered again (created: false, "
    "200); 429 past access_requests.rate; 404 when access requests are off.",
)
async def create_access_request(call: Call) -> web.Response:
    created, request = await _service(call).create(call.body)
    return _json({"created": created, "request": request}, 201 if created else 200)


@op("GET", "/access-requests", "Requests you may approve, and your own", "access requests", response=AccessRequestList)
async def list_access_requests(call: Call) -> web.Response:
    return _json(await _service(call).listing())


@op(
    "GET",
    "/access-requests/{id}",
    "One access request (yours, one you may approve, or as an auditor)",
    "access requests",
    response=AccessRequestOut,
)
async def get_access_request(call: Call) -> web.Response:
    return _json(await _service(call).get(call.param("id")))


@op(
    "POST",
    "/access-requests/{id}/approve",
    "Approve: bind the least role that gives it there, until a time",
    "access requests",
    body=ApproveIn,
    response=ApprovalOut,
    query=DryRun,
    description="Needs a role at the request's scope (or above) that manages a role giving the permission "
    "(and the settings it needs). ?dry_run=1 answers the preview: who gains what. role picks "
    "another of the request's plans; duration shortens it. 403 for anyone else, 409 once answered.",
)
async def approve_access_request(call: Call) -> web.Response:
    return _json(await _service(call).approve(call.param("id"), call.body, dry_run=call.dry_run))


@op("POST", "/access-requests/{id}/deny", "Deny, saying why", "access requests", body=DenyIn, response=AccessRequestOut)
async def deny_access_request(call: Call) -> web.Response:
    return _json(await _service(call).deny(call.param("id"), call.body))
