"""Who is administering: the signed-in actor, their compiled rights, and CSRF protection.

A request authenticated by a cookie (a session or a day pass) is a browser request, and a cookie is
sent by any site that makes the browser post to rolegate. State changes from a cookie therefore need
both proof that rolegate's own origin started them (``identity/origin.py``: ``Origin``, else
``Sec-Fetch-Site``) and a CSRF token (header ``X-Rolegate-CSRF`` or form field ``csrf``) derived from
the session. The credential that identified the caller decides, not the headers present: only a
caller identified by a bearer token needs neither (a cross-site page cannot send one), and an
``Authorization`` header that identified nobody (``Basic …`` next to the cookie) exempts nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from aiohttp import web

from rolegate.admin.errors import Denied, Unauthorized
from rolegate.authz import Identity, Policy, decide, effective_permissions, holdings_of
from rolegate.authz.roles import NOTHING, Delegation
from rolegate.identity.origin import identified_by_cookie, started_here

CSRF_HEADER = "X-Rolegate-CSRF"
CSRF_FIELD = "csrf"


class Actor:
    """A signed-in caller of the admin API / UI, with the policy their rights are judged by."""

    __slots__ = ("principal", "identity", "policy", "now", "csrf_token", "_rights")

    def __init__(self, principal: Any, identity: Identity, policy: Policy, csrf_token: str) -> None:
        self.principal = principal
        self.identity = identity
        self.policy = policy
        self.now = time.time()
        self.csrf_token = csrf_token
        self._rights: dict[str, list[str | None]] | None = None

    @property
    def username(self) -> str:
        return self.principal.username

    def holds(self, permission: str, scope: str | None = None, obj: str | None = None) -> bool:
        return decide(self.policy, self.identity, permission, scope, obj, self.now).allowed

    def permissions_at(self, scope: str | None) -> frozenset[str]:
        return effective_permissions(self.policy, self.identity, scope, self.now)

    def holdings_at(self, scope: str | None) -> tuple[Any, ...]:
        """The bindings that apply to this actor at ``scope`` (held there or above)."""
        return holdings_of(self.policy, self.identity, scope, self.now)

    def manages_at(self, scope: str | None) -> Delegation:
        """What the roles this actor holds at ``scope`` (there or above) let them hand out there."""
        manages = NOTHING
        for b in self.holdings_at(scope):
            manages = manages | b.role.manages
        return manages

    def assigns_at(self, scope: str | None) -> Any:
        """What this actor may grant on single objects at ``scope`` (a set, or ALL)."""
        return self.manages_at(scope).assigns

    def roles_held(self) -> frozenset[str]:
        """Every role this actor holds anywhere, now (bindings of the user, their groups, their day pass)."""
        subjects = set(self.identity.subjects)
        return frozenset(b.role.name for b in self.policy.bindings
                         if f"{b.subject_kind[0]}:{b.subject}" in subjects and self.now < b.until)

    def admin_rights(self) -> dict[str, list[str | None]]:
        """rolegate's own permissions and the scopes where this actor holds each (None: everywhere)."""
        if self._rights is None:
            from rolegate.admin.holdings import admin_scopes

            self._rights = admin_scopes(self.policy, self.identity, self.now)
        return self._rights

    def require(self, permission: str, scope: str | None = None, what: str = "do this") -> None:
        if not self.holds(permission, scope):
            where = f"at {scope}" if scope else "everywhere (globally)"
            raise Denied(f"to {what} you need {permission} {where}")


def csrf_token_for(runtime: Any, principal: Any) -> str:
    """A token bound to the session: an attacker can read neither it nor the secret behind it."""
    session = runtime.config.session
    key = session.secret.get_secret_value().encode() if session is not None else b"no-cookie-sessions"
    subject = f"rolegate-admin-csrf\0{principal.session_id or ''}\0{principal.username}"
    return hmac.new(key, subject.encode(), hashlib.sha256).hexdigest()[:43]


async def current_actor(request: web.Request, runtime: Any) -> Actor | None:
    """The signed-in actor, or None (anonymous). A bad bearer token is 401, not anonymous."""
    stage = runtime.identity
    if stage is None:
        return None
    try:
        principal = await stage.authenticate(request)
    except Exception as exc:  # SignInRequired and friends: answered as 401 by the caller
        if getattr(exc, "status", None) == 401:
            raise Unauthorized("the credential was not accepted; sign in again") from None
        raise
    if principal is None:
        return None
    identity = await runtime.identity_for(principal)
    policy = await runtime.current_policy()
    return Actor(principal, identity, policy, csrf_token_for(runtime, principal))


def check_csrf(request: web.Request, runtime: Any, actor: Actor, form_token: str | None = None) -> None:
    """Refuse a state change a cookie session did not knowingly make (403)."""
    if not identified_by_cookie(actor.principal):
        return  # a bearer token identified the caller: no other site can have sent it
    if not started_here(request, runtime.config.server):
        raise Denied("cross-site request refused")
    sent = request.headers.get(CSRF_HEADER) or form_token or ""
    if not hmac.compare_digest(sent.encode(), actor.csrf_token.encode()):
        raise Denied(f"missing or wrong CSRF token (send the {CSRF_HEADER} header from GET /me)")
