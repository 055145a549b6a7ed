"""Who is administering: the signed-in actor, their compiled rights, and CSRF protection.

A request authenticated by a cookie (a session or a day pass) is a browser request, and a cookie is
sent by any site that makes the browser post to rolegate. State changes from a cookie therefore need
both proof that rolegate's own origin started them (``identity/origin.py``: ``Origin``, else
``Sec-Fetch-Site``) and a CSRF token (header ``X-Rolegate-CSRF`` or form field ``csrf``) derived from
the session. The credential that identified the caller decides, not the headers present: only a
caller identified by a bearer token needs neither (a cross-site page cannot send one), and an
``Authorization`` header that identified nobody (``Basic …`` next to the cookie) exempts nothing.

An app configured under ``apps:`` (``identity/app_credentials.py``: an API key or an IdP client-credentials
token) becomes an Actor of kind ``app``: a bearer credential (no CSRF), no person's rights (it holds nothing),
allowed only on operations marked ``apps=True`` and only for the object types its ``may`` lists. It is
audited as ``app:<name>``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any

from aiohttp import web

from rolegate.admin.errors import Denied, Unauthorized
from rolegate.admin.holdings import admin_scopes
from rolegate.authz import Identity, Policy, decide, effective_permissions, holdings_of
from rolegate.authz.roles import NOTHING, Delegation
from rolegate.identity.app_credentials import (
    KEY_PREFIX,
    AppCaller,
    AppCredentialRefused,
    check_client_token,
    check_key,
    claims_an_app,
)
from rolegate.identity.authenticator import bearer_token
from rolegate.identity.origin import identified_by_cookie, started_here

log = logging.getLogger("rolegate.admin")

CSRF_HEADER = "X-Rolegate-CSRF"
CSRF_FIELD = "csrf"


class AppPrincipal:
    """The principal of an app caller: safe to log (``session_id`` is the key id or a token hash)."""

    __slots__ = ("username", "app", "via", "session_id", "groups", "auth", "name", "email", "rolegate_bearer")

    def __init__(self, caller: AppCaller) -> None:
        self.username = caller.username
        self.app = caller.app
        self.via = caller.via
        self.session_id = caller.ref
        self.groups: frozenset[str] = frozenset()
        self.auth = "app"
        self.name = f"app {caller.app}"
        self.email = ""
        self.rolegate_bearer = False

    def __repr__(self) -> str:
        return f"<AppPrincipal {self.username!r} via {self.via}>"


class Actor:
    """A signed-in caller of the admin API / UI, with the policy their rights are judged by.

    ``kind`` is ``person`` (a user or day-pass holder) or ``app``. For the object directory, the type-level
    gate is ``may_place(type)`` / ``may_assign(type)`` (``require_place`` / ``require_assign`` raise 403
    naming the type): an app only for the types its ``may`` lists; a person is not limited by type (their
    roles decide, per scope, with the existing checks). An app holds no permission anywhere.
    """

    __slots__ = ("principal", "identity", "policy", "now", "csrf_token", "_rights", "app_may")

    def __init__(
        self, principal: Any, identity: Identity, policy: Policy, csrf_token: str, app_may: Any = None
    ) -> None:
        self.principal = principal
        self.identity = identity
        self.policy = policy
        self.now = time.time()
        self.csrf_token = csrf_token
        self._rights: dict[str, list[str | None]] | None = None
        # An app's ``may`` (config AppMay); None for a person.
        self.app_may = app_may

    @classmethod
    def for_app(cls, caller: AppCaller, app_may: Any, policy: Policy) -> "Actor":
        # A disabled identity: every decision about it is a deny, so no person's check can pass for an app.
        return cls(AppPrincipal(caller), Identity(caller.username, disabled=True), policy, "", app_may=app_may)

    @property
    def username(self) -> str:
        return self.principal.username

    @property
    def kind(self) -> str:
        return "app" if self.app_may is not None else "person"

    @property
    def is_app(self) -> bool:
        return self.app_may is not None

    def may_place(self, object_type: str) -> bool:
        """May this actor place objects of ``object_type`` in the directory (type level; see the class doc)?"""
        return self.app_may is None or object_type in self.app_may.place

    def may_assign(self, object_type: str) -> bool:
        """May this actor write assignments on objects of ``object_type`` (type level)?"""
        return self.app_may is None or object_type in self.app_may.assign

    def require_place(self, object_type: str) -> None:
        if not self.may_place(object_type):
            raise Denied(f"{self.username} may not place objects of type {object_type!r} (apps.*.may.place)")

    def require_assign(self, object_type: str) -> None:
        if not self.may_assign(object_type):
            raise Denied(f"{self.username} may not assign objects of type {object_type!r} (apps.*.may.assign)")

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
        return frozenset(
            b.role.name
            for b in self.policy.bindings
            if f"{b.subject_kind[0]}:{b.subject}" in subjects and self.now < b.until
        )

    def admin_rights(self) -> dict[str, list[str | None]]:
        """rolegate's own permissions and the scopes where this actor holds each (None: everywhere)."""
        if self._rights is None:
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


async def app_actor(request: web.Request, runtime: Any) -> Actor | None:
    """The app the bearer credential names (an ``rgk_`` key, or an IdP token addressed to apps), or None when
    the request carries no app credential. An app credential that is not valid is 401, never a person's."""
    config = runtime.config
    if not config.apps:
        return None
    try:
        token = bearer_token(request)
    except Exception:  # a malformed Authorization header: the identity stage answers it
        return None
    if token is None:
        return None
    stage = runtime.identity
    try:
        if token.startswith(KEY_PREFIX):
            caller = await check_key(runtime.store, config, token)
        elif claims_an_app(config, token):
            caller = await check_client_token(getattr(stage, "provider_tokens", None), config, token)
        else:
            return None
    except AppCredentialRefused as exc:
        log.info("app credential refused: %s", exc)  # the detail names a key id at most, never a secret
        raise Unauthorized(
            "the app credential was not accepted",
            headers={"WWW-Authenticate": 'Bearer realm="rolegate", error="invalid_token"'},
        ) from None
    return Actor.for_app(caller, config.apps[caller.app].may, await runtime.current_policy())


async def current_actor(request: web.Request, runtime: Any) -> Actor | None:
    """The signed-in actor, or None (anonymous). A bad bearer token is 401, not anonymous."""
    actor = await app_actor(request, runtime)
    if actor is not None:
        return actor
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
    if actor.is_app:
        return  # an app's credential is a bearer one (an API key or an access token): no other site sends it
    if not identified_by_cookie(actor.principal):
        return  # a bearer token identified the caller: no other site can have sent it
    if not started_here(request, runtime.config.server):
        raise Denied("cross-site request refused")
    sent = request.headers.get(CSRF_HEADER) or form_token or ""
    if not hmac.compare_digest(sent.encode(), actor.csrf_token.encode()):
        raise Denied(f"missing or wrong CSRF token (send the {CSRF_HEADER} header from GET /me)")
