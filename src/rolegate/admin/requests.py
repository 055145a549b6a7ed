"""Access requests: someone refused a page asks for it; the people who may grant it there answer.

A request is one Store document (namespace ``access_requests``), created by the person refused, for a
permission at a scope, with a reason and a wished duration (at most ``access_requests.max_duration``):

    {"id": "r_…", "user": "heidi", "name": "Heidi Hendriks", "permission": "documents:add",
     "scope": "building:a", "method": "POST", "path": "/buildings/a/documents", "reason": "…",
     "duration": 7200, "status": "pending", "created_at": "…", "expires_at": "…",
     "approvers": [{"user": "carol", "name": "Carol Claes", "scope": "building:a"}, …]}

* **Routing** (``admin/approvers.py``): it goes to the holders of a role that manages, at that scope or
  above, a role giving the permission there — closest scope first; they are named on the 403 page, see
  it on their "Requests" page and through the API, and are notified (webhook, e-mail).
* **Approve**: the least such role (or one the approver picks among those they manage), bound to the
  requester at that scope until now + the wished duration (or less), plus the user settings the role
  needs for it, switched on there until the same time. It is made like any admin change — checked by
  the delegation guards, previewed, written, audited as ``admin_change`` and effective at the next
  request — and ends by itself. The request is claimed first (its version), so two approvers never
  both grant it.
* **Deny** with a reason. **Expiry**: a request nobody answered within ``expire_after`` is expired at
  the first look after that (list, open, answer) and can no longer be approved.
* Every step is an ``admin_change`` event on ``access_requests/<id>`` (``request``, ``approve``,
  ``deny``, ``expire``). Creating one is rate limited per user (``rate``, the Store's sliding window).
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import datetime, timezone
from typing import Any

from rolegate.admin.approvers import Approver, Plan, approvers, plans_of
from rolegate.admin.delegation import AUDIT_VIEW, check_binding, check_setting
from rolegate.admin.errors import AdminError, Conflict, Denied, Invalid, Missing
from rolegate.admin.guard import Actor
from rolegate.admin.models import BindingIn
from rolegate.admin.people import People, load_people
from rolegate.admin.request_models import AccessRequestIn, ApproveIn, DenyIn
from rolegate.admin.request_notify import notify
from rolegate.admin.service import AdminService
from rolegate.admin.state import BINDINGS, USER_SETTINGS, compile_state, daypass_bindings
from rolegate.admin.wording import attempt_words, duration_words
from rolegate.audit import admin_change_event
from rolegate.authz import Policy, decide
from rolegate.authz.stored import Switch, switches_of
from rolegate.store.base import Record, VersionConflict

log = logging.getLogger("rolegate.admin.requests")

NAMESPACE = "access_requests"
# A request document is kept this long after it can last matter (its expiry, then the longest grant).
RETENTION = 30 * 86400.0
# How long the approvers found for a 403 page are reused (policy and directory unchanged).
APPROVERS_TTL = 30.0


class TooManyRequests(AdminError):
    status, code = 429, "too_many_requests"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def timestamp(value: Any) -> float:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return 0.0
    return parsed.timestamp() if parsed.tzinfo is not None else 0.0


def section(config: Any) -> Any:
    """The ``access_requests`` config section; 404 when the feature is off."""
    found = getattr(config, "access_requests", None)
    if found is None:
        raise Missing("access requests are not enabled here (no access_requests section in the config)")
    return found


def request_out(config: Any, doc: dict[str, Any], now: float, plans: list[Plan] | None = None) -> dict[str, Any]:
    """A stored request as the API answers it (``AccessRequestOut``)."""
    grant = doc.get("grant")
    until = timestamp(grant.get("until")) if isinstance(grant, dict) else 0.0
    out = {
        k: doc.get(k)
        for k in (
            "id",
            "user",
            "permission",
            "scope",
            "method",
            "path",
            "reason",
            "status",
            "created_at",
            "expires_at",
            "decided_by",
            "decided_at",
            "answer",
        )
    }
    out.update(
        name=doc.get("name") or "",
        duration=int(doc.get("duration") or 0),
        what=attempt_words(config, doc["permission"], doc.get("scope")),
        approvers=list(doc.get("approvers") or ()),
        active=doc.get("status") == "approved" and now < until,
        grant=None,
        plans=None,
    )
    if isinstance(grant, dict):
        out["grant"] = {
            "role": grant.get("role"),
            "scope": grant.get("scope"),
            "settings": list(grant.get("settings") or ()),
            "until": grant.get("until"),
            "binding": grant.get("binding"),
            "seconds_left": max(0, int(until - now)),
        }
    if plans is not None:
        out["plans"] = [p.to_json() for p in plans]
    return out


# -- who may grant it, for the 403 page (cached: a flood of 403s must not rescan the directory) -----------
# (Kept by the Runtime, runtime.people and runtime.approvers: a reload drops them with the policy they read.)


async def people_of(runtime: Any) -> People:
    """Who exists (``load_people``), reused while the directory snapshot is the same (a minute without one)."""
    seen: tuple[Any, People | None, float] = runtime.people  # kept by the Runtime: a reload drops it
    snapshot, people, at = seen
    now = time.monotonic()
    if people is not None and snapshot is runtime.directory and (snapshot is not None or now - at < 60):
        return people
    people = await load_people(runtime)
    runtime.people = (runtime.directory, people, now)
    return people


async def approvers_for(
    runtime: Any, policy: Policy, permission: str, scope: str | None, requester: str
) -> list[Approver]:
    """The approvers of (permission, scope) for ``requester``, closest scope first."""
    people = await people_of(runtime)
    key = (id(policy), policy.version, id(people), permission, scope)
    now = time.time()
    cache = runtime.approvers  # a BoundedCache the Runtime owns (limits.APPROVERS)
    cached = cache.get(key)
    if cached is None or now - cached[0] > APPROVERS_TTL:
        cached = cache.put(key, (now, approvers(policy, people, permission, scope, now)))
    wanted = requester.casefold()
    return [a for a in cached[1] if a.username.casefold() != wanted]


# -- the service --------------------------------------------------------------------------------------------


class AccessRequests:
    """One caller's view of the access requests (built per request; cheap)."""

    def __init__(self, runtime: Any, actor: Actor) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.store = runtime.store
        self.actor = actor

    @property
    def settings(self) -> Any:
        return section(self.config)

    # -- reading -------------------------------------------------------------------------------------------

    async def _record(self, key: str) -> Record:
        record = await self.store.get(NAMESPACE, key)
        if record is None or not isinstance(record.value, dict) or "permission" not in record.value:
            raise Missing(f"no access request {key}")
        return await self._settle(record)

    async def _settle(self, record: Record) -> Record:
        """Expire a pending request nobody answered in time (recorded once, by whoever looks first)."""
        doc = record.value
        if doc.get("status") != "pending" or time.time() < timestamp(doc.get("expires_at")):
            return record
        expired = {**doc, "status": "expired", "decided_at": iso(time.time())}
        try:
            version = await self.store.put(
                NAMESPACE, record.key, expired, expected_version=record.version, expires_at=record.expires_at
            )
        except VersionConflict:  # somebody else settled or answered it meanwhile: read what they wrote
            fresh = await self.store.get(NAMESPACE, record.key)
            return fresh if fresh is not None else record
        await self._audit("expire", record.key, doc, expired, actor=None)
        notify(self.runtime, "access_request.expired", expired)
        return Record(record.key, expired, version, record.expires_at)

    def _may_view(self, doc: dict[str, Any], plans: list[Plan]) -> bool:
        actor = self.actor
        return doc.get("user", "").casefold() == actor.username.casefold() or bool(plans) or actor.holds(AUDIT_VIEW)

    def _plans(self, doc: dict[str, Any], policy: Policy | None = None) -> list[Plan]:
        """What the actor could grant for this request (nothing for the requester themselves)."""
        actor = self.actor
        if doc.get("user", "").casefold() == actor.username.casefold():
            return []
        return plans_of(policy or actor.policy, actor.identity, doc["permission"], doc.get("scope"), actor.now)

    async def get(self, key: str) -> dict[str, Any]:
        self.settings  # noqa: B018 - 404 when off
        record = await self._record(key)
        doc = record.value
        plans = self._plans(doc)
        if not self._may_view(doc, plans):
            raise Denied("this request is not yours, and you may not grant what it asks for")
        return request_out(self.config, doc, time.time(), plans if doc.get("status") == "pending" else None)

    async def listing(self) -> dict[str, Any]:
        """Pending requests the actor may approve, and the actor's own (newest first)."""
        self.settings  # noqa: B018
        me = self.actor.username.casefold()
        to_review, mine = [], []
        now = time.time()
        for record in await self.store.list(NAMESPACE):
            if not isinstance(record.value, dict) or "permission" not in record.value:
                continue
            record = await self._settle(record)
            doc = record.value
            if doc.get("user", "").casefold() == me:
                mine.append(request_out(self.config, doc, now))
            elif doc.get("status") == "pending":
                plans = self._plans(doc)
                if plans:
                    to_review.append(request_out(self.config, doc, now, plans))
        to_review.sort(key=lambda r: r["created_at"])
        mine.sort(key=lambda r: r["created_at"], reverse=True)
        return {"to_review": to_review, "mine": mine}

    async def for_me(self) -> dict[str, list[dict[str, Any]]]:
        """For ``/me`` and "My access": the actor's pending requests and the access they hold on request."""
        if getattr(self.config, "access_requests", None) is None or self.store is None:
            return {"pending_requests": [], "temporary_access": []}
        me, now = self.actor.username.casefold(), time.time()
        mine = []
        for record in await self.store.list(NAMESPACE):
            if (
                isinstance(record.value, dict)
                and record.value.get("user", "").casefold() == me
                and "permission" in record.value
            ):
                mine.append(request_out(self.config, (await self._settle(record)).value, now))
        mine.sort(key=lambda r: r["created_at"], reverse=True)
        temporary = [
            {
                "request": r["id"],
                "what": r["what"],
                "role": r["grant"]["role"],
                "scope": r["grant"]["scope"],
                "until": r["grant"]["until"],
                "seconds_left": r["grant"]["seconds_left"],
            }
            for r in mine
            if r["active"]
        ]
        return {"pending_requests": [r for r in mine if r["status"] == "pending"], "temporary_access": temporary}

    # -- asking --------------------------------------------------------------------------------------------

    def _check_scope(self, scope: str | None) -> None:
        if scope is not None and scope.split(":", 1)[0] not in self.config.scopes:
            raise Invalid.field("scope", f"scope type {scope.split(':', 1)[0]!r} is not declared")

    async def create(self, body: AccessRequestIn) -> tuple[bool, dict[str, Any]]:
        settings = self.settings
        actor, now = self.actor, time.time()
        if getattr(actor.principal, "daypass_id", None) is not None or actor.identity.daypass:
            raise Denied("a day pass cannot ask for more access; ask the person who gave you the pass")
        if actor.identity.disabled:
            raise Denied("your account is disabled")
        policy = actor.policy
        permission, scope = body.permission, body.scope
        if permission not in policy.catalogue:
            raise Invalid.field("permission", f"{permission!r} is not in the catalogue")
        self._check_scope(scope)
        seconds = body.seconds
        longest = settings.max_duration.total_seconds()
        if seconds > longest:
            raise Invalid.field("duration", f"at most {duration_words(longest)} (access_requests.max_duration)")
        if seconds < 60:
            raise Invalid.field("duration", "at least a minute")
        words = attempt_words(self.config, permission, scope)
        if decide(policy, actor.identity, permission, scope, None, now).allowed:
            raise Conflict(f"you may {words.lower()} already")
        for record in await self.store.list(NAMESPACE):  # the same request, still open: answered again
            doc = record.value
            if (
                isinstance(doc, dict)
                and doc.get("status") == "pending"
                and doc.get("permission") == permission
                and doc.get("scope") == scope
                and doc.get("user", "").casefold() == actor.username.casefold()
            ):
                record = await self._settle(record)
                if record.value.get("status") == "pending":
                    return False, request_out(self.config, record.value, now)
        found = await approvers_for(self.runtime, policy, permission, scope, actor.username)
        if not found:
            raise Conflict(f"nobody can grant this ({words}); ask your administrator")
        limit, window = settings.rate_limit
        if not await self.store.hit(f"access-request:{actor.username.casefold()}", limit, window):
            raise TooManyRequests(
                f"you asked {limit} times within {duration_words(window)}; wait a while",
                headers={"Retry-After": str(int(window))},
            )
        key = "r_" + secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")
        expires = now + settings.expire_after.total_seconds()
        doc = {
            "id": key,
            "user": actor.username,
            "name": actor.principal.name or "",
            "email": actor.principal.email or "",
            "permission": permission,
            "scope": scope,
            "method": body.method,
            "path": body.path,
            "reason": body.reason,
            "duration": int(seconds),
            "status": "pending",
            "created_at": iso(now),
            "expires_at": iso(expires),
            "approvers": [a.to_json() for a in found],
            "decided_by": None,
            "decided_at": None,
            "answer": None,
        }
        await self.store.put(NAMESPACE, key, doc, expected_version=0, expires_at=expires + longest + RETENTION)
        await self._audit("request", key, None, doc)
        notify(self.runtime, "access_request.created", doc, found)
        return True, request_out(self.config, doc, now)

    # -- answering -----------------------------------------------------------------------------------------

    def _pending(self, doc: dict[str, Any]) -> None:
        status = doc.get("status")
        if status != "pending":
            by = f" by {doc.get('decided_by')}" if doc.get("decided_by") else ""
            raise Conflict(f"this request is {status}{by}; it can no longer be answered")

    async def approve(self, key: str, body: ApproveIn, *, dry_run: bool) -> dict[str, Any]:
        """Grant it (see the module docstring); ``dry_run`` answers what it would change."""
        self.settings  # noqa: B018
        actor, now = self.actor, time.time()
        record = await self._record(key)
        doc = record.value
        self._pending(doc)
        user, permission, scope = doc["user"], doc["permission"], doc.get("scope")
        words = attempt_words(self.config, permission, scope)
        if user.casefold() == actor.username.casefold():
            raise Denied("nobody approves their own request")
        service = AdminService(self.runtime, actor)
        state, before = await service.snapshot()
        plans = plans_of(before, actor.identity, permission, scope, now)
        where = f"at {scope}" if scope else "everywhere"
        if not plans:
            raise Denied(
                f"you cannot grant this ({words}): no role you hold {where} manages a role that gives {permission}"
            )
        plan = plans[0] if body.role is None else next((p for p in plans if p.role == body.role), None)
        if plan is None:
            raise Denied(
                f"you cannot grant this with role {body.role}; you may grant it with: "
                f"{', '.join(p.role for p in plans)}"
            )
        wished = float(doc.get("duration") or 0)
        seconds = body.seconds if body.seconds is not None else wished
        if seconds > wished:
            raise Invalid.field("duration", f"at most what was asked for ({duration_words(wished)})")
        people = await service.people()
        person = people.user(user)
        if person is not None and person.disabled:
            raise Conflict(f"{user}'s account is disabled")
        identity = people.identity_for(user)
        if decide(before, identity, permission, scope, None, now).allowed:
            raise Conflict(f"{user} may {words.lower()} already")

        until = round(now + seconds)
        until_iso = iso(until)
        binding_in = BindingIn(
            user=user,
            role=plan.role,
            scope=scope,
            until=datetime.fromtimestamp(until, timezone.utc),
            note=f"access request {key}",
        )
        binding = service._validate_binding(binding_in, before)
        check_binding(actor, before, binding)  # the delegation guards, as for any binding
        for setting in plan.settings:
            check_setting(actor, before, setting, scope, "switch on")
        binding_key = "b_" + secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")
        binding_value = service._binding_value(binding_in)
        added = [Switch(s, scope, actor.username, iso(now), until_iso) for s in plan.settings]
        after_state = state.with_doc(BINDINGS, binding_key, binding_value)
        if added:
            old = state.settings.get(user)
            switches = switches_of(old.value if old else None)
            after_state = after_state.with_doc(USER_SETTINGS, user, {"on": [s.to_json() for s in (*switches, *added)]})
        after = compile_state(self.config, after_state, extra=await daypass_bindings(self.store, self.config, now))
        outcome = decide(after, identity, permission, scope, None, now)
        if not outcome.allowed:
            raise Conflict(
                f"approving with role {plan.role} would not let {user} {words.lower()}: {'; '.join(outcome.reasons)}"
            )
        summary = (
            f"{user} gets role {plan.role} {where}"
            + (f" with {', '.join(plan.settings)} on" if plan.settings else "")
            + f", for {duration_words(seconds)}"
        )
        preview = await service.preview(before, after, [("user", user)], summary)
        grant = {
            "role": plan.role,
            "scope": scope,
            "settings": list(plan.settings),
            "until": until_iso,
            "binding": binding_key,
        }
        if dry_run:
            return {
                "applied": False,
                "request": request_out(self.config, doc, now, plans),
                "plan": plan.to_json(),
                "until": until_iso,
                "preview": preview,
            }

        # Claim it first: of two approvers answering at once, one wins and the other is told.
        answered = {
            **doc,
            "status": "approved",
            "decided_by": actor.username,
            "decided_at": iso(now),
            "answer": body.note or None,
            "grant": grant,
        }
        try:
            version = await self.store.put(
                NAMESPACE,
                key,
                answered,
                expected_version=record.version,
                expires_at=max(record.expires_at or 0, until + RETENTION),
            )
        except VersionConflict:
            raise Conflict("someone answered this request meanwhile; open it again") from None
        try:
            await service._apply(
                BINDINGS,
                binding_key,
                state,
                before,
                None,
                binding_value,
                expected=0,
                dry_run=False,
                subjects=[("user", user)],
                action="create",
            )
            if added:
                await self._switch_on(service, user, added)
        except BaseException:
            # Nobody's answer stands on a grant that was not (fully) made; what was written ends by itself.
            try:
                await self.store.put(NAMESPACE, key, doc, expected_version=version, expires_at=record.expires_at)
            except Exception as exc:  # noqa: BLE001 - the original error is the one to report
                log.warning("access request %s: could not put it back to pending: %s", key, exc)
            raise
        await self._audit("approve", key, doc, answered)
        notify(self.runtime, "access_request.approved", answered)
        return {
            "applied": True,
            "request": request_out(self.config, answered, time.time()),
            "plan": plan.to_json(),
            "until": until_iso,
            "preview": {**preview, "dry_run": False},
        }

    async def _switch_on(self, service: AdminService, user: str, added: list[Switch]) -> None:
        """Switch the plan's settings on for ``user`` until the grant ends (other switches kept)."""
        for _attempt in range(3):  # a concurrent change to the same user's settings: read again
            state, before = await service.snapshot()
            old = state.settings.get(user)
            switches = switches_of(old.value if old else None)
            value = {"on": [s.to_json() for s in (*switches, *added)]}
            version = old.version if old else 0
            try:
                await service._apply(
                    USER_SETTINGS,
                    user,
                    state,
                    before,
                    old.value if old else None,
                    value,
                    expected=version,
                    dry_run=False,
                    subjects=[("user", user)],
                    action="update",
                    current=version,
                    summary=f"user settings of {user}: {', '.join(s.setting for s in added)} on until {added[0].until}",
                )
                return
            except AdminError as exc:
                if exc.status != 412:
                    raise
        raise Conflict(f"{user}'s settings kept changing; try again")

    async def deny(self, key: str, body: DenyIn) -> dict[str, Any]:
        self.settings  # noqa: B018
        actor, now = self.actor, time.time()
        record = await self._record(key)
        doc = record.value
        self._pending(doc)
        if doc["user"].casefold() == actor.username.casefold():
            raise Denied("nobody answers their own request")
        if not self._plans(doc):
            raise Denied(
                f"you cannot answer this request: no role you hold there manages a role that gives {doc['permission']}"
            )
        reason = " ".join(body.reason.split())
        if not reason:
            raise Invalid.field("reason", "say why")
        answered = {**doc, "status": "denied", "decided_by": actor.username, "decided_at": iso(now), "answer": reason}
        try:
            await self.store.put(
                NAMESPACE, key, answered, expected_version=record.version, expires_at=record.expires_at
            )
        except VersionConflict:
            raise Conflict("someone answered this request meanwhile; open it again") from None
        await self._audit("deny", key, doc, answered)
        notify(self.runtime, "access_request.denied", answered)
        return request_out(self.config, answered, now)

    # -- the trail -----------------------------------------------------------------------------------------

    async def _audit(
        self,
        action: str,
        key: str,
        before: dict[str, Any] | None,
        after: dict[str, Any],
        actor: str | None | bool = True,
    ) -> None:
        audit = self.runtime.audit
        if audit is None:
            return
        who = self.actor.username if actor is True else actor
        await audit.emit_durable(
            admin_change_event(
                actor=who, target=f"{NAMESPACE}/{key}", action=action, before=before, after=after, via="access-request"
            )
        )


__all__ = ["NAMESPACE", "AccessRequests", "TooManyRequests", "approvers_for", "people_of", "request_out", "section"]
