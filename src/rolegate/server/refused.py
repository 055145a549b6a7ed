"""The 403 a signed-in person gets: who they are, what they tried in words, whom to ask — not a dead end.

    Access denied
    You do not have access to this page.
    Signed in as Heidi Hendriks (heidi) · Sign out · Sign in as someone else
    You tried to: Add documents in Building A
    Carol Claes can grant it.            [Request access]
    Reference: 3f2a…

JSON clients get the same as fields (``signed_in_as``, ``sign_out``, ``tried``, ``request_access``).
Only for a person the proxy identified (session or bearer token) and refused by the policy on an
``enforce`` route: anyone not signed in — or refused before anyone was identified (no route) — gets the
usual page that says nothing about the policy. It names the permission and scope of the page they
opened and the approvers it offers (those at the closest scope, at most three on the page), never who
else holds what. "Request access" appears only with ``access_requests`` on and someone to ask.
A disabled account's page gets its sign-out link. Day-pass holders have their own page
(``identity/daypass/refusal.py``). Anything unexpected here falls back to the usual page.
"""

from __future__ import annotations

import html
import logging
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from rolegate.authz import Policy, decide
from rolegate.config import Config
from rolegate.errors import Forbidden
from rolegate.identity.errors import AccountDisabled
from rolegate.proxy.routes import Route
from rolegate.server.access import Access
from rolegate.server.runtime import Runtime
from rolegate.web.responses import error_response

log = logging.getLogger("rolegate.errors")

LOGOUT = "/.rolegate/logout"
REQUEST_FORM = "/.rolegate/admin/requests/new"
REQUEST_API = "/.rolegate/api/v1/access-requests"
SHOWN = 3  # approvers named on the page
e = html.escape


def _sign_out_links() -> str:
    return (
        f'<a href="{LOGOUT}" id="sign-out">Sign out</a> · '
        f'<a href="{LOGOUT}" id="switch-account">Sign in as someone else</a>'
    )


async def refusal_page_for(runtime: Runtime, request: web.BaseRequest, access: Access) -> web.Response | None:
    """The 403 for a signed-in person (see the module docstring), or None for the usual answer."""
    try:
        return await _refusal(runtime, request, access)
    except Exception as exc:  # noqa: BLE001 - never worse than the plain 403
        log.warning(
            "%s %s: the signed-in 403 page failed (%s: %s); answered the plain one",
            request.method,
            request.path[:200],
            type(exc).__name__,
            exc,
        )
        return None


async def _refusal(runtime: Runtime, request: web.BaseRequest, access: Access) -> web.Response | None:
    error, principal = access.error, access.principal
    if principal is None or getattr(principal, "daypass_id", None) is not None:
        return None
    if isinstance(error, AccountDisabled):
        return error_response(request, error, extra_html=f"<p>{_sign_out_links()}</p>", fields={"sign_out": LOGOUT})
    route, identity = access.route, access.identity
    if (
        type(error) is not Forbidden
        or route is None
        or identity is None
        or route.mode != "enforce"
        or route.permission is None
    ):
        return None
    from rolegate.admin.wording import attempt_words  # server -> admin: a known exception (tests/test_layers.py)

    policy = runtime.policy_now() or await runtime.current_policy()
    permission, scope = route.permission, access.scope
    if decide(policy, identity, permission, scope, None, runtime.clock()).allowed:
        return None  # refused for something else (a cross-site WebSocket): nothing to ask for
    config = runtime.config
    what = attempt_words(config, permission, scope)
    name = principal.name or principal.username
    fields: dict[str, Any] = {
        "signed_in_as": {"user": principal.username, "name": name},
        "sign_out": LOGOUT,
        "tried": {
            "permission": permission,
            "scope": scope,
            "what": what,
            "method": request.method,
            "path": access.path_qs.partition("?")[0],
        },
    }
    extra = (
        f'<p class="who">Signed in as <strong>{e(name)}</strong> ({e(principal.username)}) · '
        f'{_sign_out_links()}</p><p>You tried to: <strong id="tried">{e(what)}</strong></p>'
    )
    offer = await _offer(runtime, policy, principal.username, permission, scope, route, request, access)
    if offer is not None:
        names, link, approvers = offer
        fields["request_access"] = {
            "url": REQUEST_API,
            "form": link,
            "approvers": approvers,
            "max_duration": _max_duration(config),
            "body": {"permission": permission, "scope": scope},
        }
        extra += (
            f'<p id="approvers">{e(names)} can grant it.</p>'
            f'<p><a class="button" id="request-access" href="{e(link)}">Request access</a></p>'
        )
    return error_response(request, error, extra_html=extra, fields=fields)


async def _offer(
    runtime: Runtime,
    policy: Policy,
    username: str,
    permission: str,
    scope: str | None,
    route: Route,
    request: web.BaseRequest,
    access: Access,
) -> tuple[str, str, list[dict[str, Any]]] | None:
    """Whom to ask and where: only with access requests on, a store, someone to ask, and no object."""
    if getattr(runtime.config, "access_requests", None) is None or runtime.store is None or route.object:
        return None
    from rolegate.admin.requests import approvers_for  # server -> admin: a known exception (tests/test_layers.py)

    found = await approvers_for(runtime, policy, permission, scope, username)
    if not found:
        return None
    closest = [a for a in found if a.scope == found[0].scope]
    names = ", ".join(a.name or a.username for a in closest[:SHOWN]) + (" and others" if len(closest) > SHOWN else "")
    query = {"permission": permission, "method": request.method, "path": access.path_qs.partition("?")[0][:2000]}
    if scope is not None:
        query["scope"] = scope
    return names, f"{REQUEST_FORM}?{urlencode(query)}", [a.to_json() for a in closest[:10]]


def _max_duration(config: Config) -> str:
    requests = config.access_requests
    assert requests is not None  # an offer is made only with access requests on
    seconds = int(requests.max_duration.total_seconds())
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % factor == 0:
            return f"{seconds // factor}{unit}"
    return f"{seconds}s"


__all__ = ["refusal_page_for"]
