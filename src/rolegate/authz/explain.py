"""Explain a decision: which route matched, what it needs, and every grant or deny behind the outcome.

Shared by ``rolegate explain`` and the admin API; also gives the request pipeline
``decide_route`` so that what is explained is exactly what is enforced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rolegate.authz.decision import Decision
from rolegate.authz.evaluate import decide, decide_in, decide_object_only, roles_of, timestamp
from rolegate.authz.identity import Identity
from rolegate.authz.policy import Policy
from rolegate.authz.requirement import Getter, Requirement, absent, requirement_of
from rolegate.authz.scopes import is_scope
from rolegate.authz.where import where_held

__all__ = ["Explanation", "Requirement", "decide_route", "explain", "explain_route", "requirement_of"]

_AUTHENTICATED = Decision(True, "", None, ("allow: any signed-in user (mode authenticated)",))


def decide_route(
    policy: Policy, identity: Identity | None, requirement: Requirement, now: float | datetime | None = None
) -> Decision:
    """The decision for a route requirement (``log`` mode: the would-be decision; the caller allows)."""
    perm = requirement.permission
    if perm is None:
        perm = f"(any permission on {requirement.object})" if requirement.object else ""
    if requirement.mode == "public":
        return Decision(True, perm, requirement.scope, ("allow: public route",))
    if identity is None:
        return Decision(False, perm, requirement.scope, ("deny: not signed in",))
    if requirement.mode == "authenticated":
        if identity.disabled:
            return Decision(False, perm, requirement.scope, ("deny: the account is disabled",))
        if not perm and requirement.scope is None:
            return _AUTHENTICATED  # the common case: one shared, immutable answer
        return Decision(True, perm, requirement.scope, ("allow: any signed-in user (mode authenticated)",))
    if requirement.problem is not None:
        return Decision(False, perm, requirement.scope, (f"deny: {requirement.problem}",))
    if requirement.placed and requirement.scope is not None and requirement.scope not in policy.scopes.complete:
        return decide_unplaced(policy, identity, requirement, now)
    if requirement.object is not None:
        unplaced = policy.scopes.unplaced(requirement.object)
        if unplaced is not None:  # an object whose scope is unknown is refused, whatever is held globally
            return Decision(False, perm, requirement.scope, (f"deny: {unplaced}",))
    if requirement.permission is None:
        if requirement.object is None:
            return Decision(False, perm, requirement.scope, ("deny: the route names no permission",))
        return decide_object_only(policy, identity, requirement.object, requirement.scope, now)
    decision = decide(policy, identity, requirement.permission, requirement.scope, requirement.object, now)
    if requirement.listed and not decision.allowed and requirement.scope is None and requirement.object is None:
        return decide_listed(policy, identity, requirement.permission, decision, now)
    return decision


def decide_listed(
    policy: Policy, identity: Identity, permission: str, everywhere: Decision, now: float | datetime | None = None
) -> Decision:
    """A list route (``lists: true``) for a caller who lacks ``permission`` globally: allowed when they hold it
    somewhere - at a scope, or on an assigned object - for the backend shows only what the assertion's
    ``where`` claim names (rolegate.authz.where). Held nowhere: denied, with why it is not held globally."""
    ts = timestamp(now)
    key = (identity.key, "\0lists", permission)  # no scope holds a NUL: memoized beside the policy's decisions
    memo = policy._decisions.get(key)
    if memo is not None and memo[4] <= ts < memo[5]:
        return memo
    where = where_held(policy, identity, permission, ts)
    held = [*where["scopes"], *where["assigned"]]
    # Valid until the first binding or setting of this identity that ends (the policy is replaced on any change).
    subjects = set(identity.subjects)
    ends = [b.until for b in policy.bindings if b.until > ts and f"{b.subject_kind[0]}:{b.subject}" in subjects]
    ends += [s.until for s in policy.setting_grants if s.username == identity.username and s.until > ts]
    until = min(ends, default=math.inf)
    if not held:
        decision = Decision(
            False,
            permission,
            None,
            (
                *everywhere.reasons,
                f"note: {permission} is held nowhere, not at any scope nor on any assigned object (a list route)",
            ),
            ts,
            until,
        )
    else:
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        shown += " and more (truncated)" if where.get("truncated") else ""
        decision = Decision(
            True,
            permission,
            None,
            (
                f"allow: a list route (lists: true): {identity.username} holds "
                f"{permission} at {shown}; the backend shows only what the "
                f"assertion's where claim names",
            ),
            ts,
            until,
        )
    policy.memoize(key, decision)
    return decision


def decide_unplaced(
    policy: Policy, identity: Identity, requirement: Requirement, now: float | datetime | None = None
) -> Decision:
    """An ``of`` route's object the object directory does not place: refused with the reason, unless a
    lookup on the miss placed it for this request (``requirement.parent``); never judged at a broader scope."""
    perm = requirement.permission or f"(any permission on {requirement.object})"
    scope = requirement.scope
    parent = requirement.parent
    if parent is None or not is_scope(scope):
        why = policy.scopes.unregistered(scope) if is_scope(scope) else f"{scope!r} is not a valid scope (type:id)"
        return Decision(False, perm, scope, (f"deny: {why}",))
    missing = policy.scopes.unregistered(parent) if parent.split(":", 1)[0] in policy.scopes.parent_types else None
    if missing is not None:
        return Decision(False, perm, scope, (f"deny: {scope} lies in {parent} (by the lookup), but {missing}",))
    placed = f"note: {scope} lies in {parent} (answered by the object lookup, not registered)"
    if requirement.permission is None:
        return Decision(False, perm, scope, ("deny: the route names no permission", placed))
    decision = decide_in(policy, identity, requirement.permission, scope, parent, timestamp(now))
    return Decision(decision.allowed, perm, scope, (*decision.reasons, placed))


@dataclass(slots=True)
class Explanation:
    """A structured answer to "why was this allowed / denied?"."""

    allowed: bool
    outcome: str
    permission: str | None
    scope: str | None
    object: str | None
    user: str
    groups: list[str]
    daypass: str | None
    roles: list[str]
    mode: str | None = None
    route: dict[str, Any] | None = None
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    policy_version: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "outcome": self.outcome,
            "permission": self.permission,
            "scope": self.scope,
            "object": self.object,
            "mode": self.mode,
            "route": self.route,
            "user": self.user,
            "groups": self.groups,
            "daypass": self.daypass,
            "roles": self.roles,
            "reasons": self.reasons,
            "notes": self.notes,
            "policy_version": self.policy_version,
        }

    def to_text(self) -> str:
        lines = [f"{'ALLOWED' if self.allowed else 'DENIED'}: {self.outcome}"]
        who = self.user + (f" (day pass {self.daypass})" if self.daypass else "")
        lines.append(f"  who:        {who}; groups: {', '.join(self.groups) or '(none)'}")
        if self.route is not None:
            r = self.route
            source = r.get("source")
            lines.append(
                f"  route:      {r['label']}" + (f"  [{source}]" if source and source not in r["label"] else "")
            )
            lines.append(f"  mode:       {self.mode}; upstream: {r.get('upstream')}")
        if self.permission:
            lines.append(
                f"  needs:      {self.permission} at {self.scope or '(global)'}"
                + (f" on {self.object}" if self.object else "")
            )
        lines.append(f"  roles here: {', '.join(self.roles) or '(none)'}")
        for reason in self.reasons:
            lines.append(f"  - {reason}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)


def _explanation(
    policy: Policy, identity: Identity, decision: Decision, scope: str | None, obj: str | None, now: float
) -> Explanation:
    return Explanation(
        allowed=decision.allowed,
        outcome="allowed" if decision.allowed else "denied",
        permission=decision.permission or None,
        scope=scope,
        object=obj,
        user=identity.username,
        groups=sorted(identity.groups),
        daypass=identity.daypass,
        roles=list(roles_of(policy, identity, scope if scope is None or isinstance(scope, str) else None, now)),
        reasons=list(decision.reasons),
        policy_version=policy.version,
    )


def explain(
    policy: Policy,
    identity: Identity,
    permission: str,
    scope: str | None = None,
    object: str | None = None,
    now: float | datetime | None = None,
) -> Explanation:
    """Explain ``decide(policy, identity, permission, scope, object, now)``."""
    ts = timestamp(now)
    decision = decide(policy, identity, permission, scope, object, ts)
    result = _explanation(policy, identity, decision, scope, object, ts)
    if permission not in policy.catalogue:
        result.notes.append(f"{permission!r} is not in the permission catalogue")
    return result


def explain_route(
    policy: Policy,
    identity: Identity,
    match: Any | None,
    method: str = "GET",
    path: str = "",
    query_get: Getter = absent,
    header_get: Getter = absent,
    now: float | datetime | None = None,
) -> Explanation:
    """Explain the decision for a request that matched ``match`` (a route table ``Match``, or None)."""
    ts = timestamp(now)
    if match is None:
        return Explanation(
            False,
            f"no route matches {method} {path}; unmatched requests are denied",
            None,
            None,
            None,
            identity.username,
            sorted(identity.groups),
            identity.daypass,
            [],
            policy_version=policy.version,
        )
    route = match.route
    route_info = {
        "label": getattr(route, "label", route.path),
        "path": route.path,
        "name": route.name or None,
        "methods": sorted(route.methods) if route.methods else None,
        "host": route.host,
        "upstream": route.upstream,
        "source": getattr(route, "source", None),
        "params": dict(match.params),
        "redact": list(route.redact.fields) if route.redact else None,
        "redact_unless": route.redact.unless if route.redact else None,
    }
    if not match.method_allowed:
        allowed = sorted(match.allowed_methods or ())
        return Explanation(
            False,
            f"method {method} is not allowed on this route (405; allowed: {allowed})",
            route.permission,
            None,
            None,
            identity.username,
            sorted(identity.groups),
            identity.daypass,
            [],
            mode=route.mode,
            route=route_info,
            policy_version=policy.version,
        )
    req = requirement_of(match, query_get, header_get)
    decision = decide_route(policy, identity, req, ts)
    result = _explanation(policy, identity, decision, req.scope, req.object, ts)
    result.mode, result.route = req.mode, route_info
    if req.placed and req.parent is None and req.scope is not None and req.scope not in policy.scopes.complete:
        declared = getattr(getattr(policy, "config", None), "scopes", {}).get(req.scope.split(":", 1)[0])
        lookup = getattr(declared, "lookup", None)
        if lookup is not None:  # explain and `rolegate test` judge what is registered; they never ask the app
            result.notes.append(
                f"{req.scope} is not registered: rolegate serve would ask the object lookup "
                f"({lookup.upstream} {lookup.path}) on this miss; explain and rolegate test never "
                f"ask it"
            )
    if req.mode == "log" and not decision.allowed:
        result.allowed = True
        result.outcome = "allowed (mode log: would have been denied; recorded in the audit trail)"
    elif req.mode in ("public", "authenticated"):
        result.outcome = f"{'allowed' if decision.allowed else 'denied'} (mode {req.mode})"
    if route.redact is not None and result.allowed:
        unless = route.redact.unless
        if unless is None or not decide(policy, identity, unless, req.scope, None, ts).allowed:
            result.notes.append(
                f"response fields {list(route.redact.fields)} will be removed"
                + (f" (caller lacks {unless})" if unless else "")
            )
        else:
            result.notes.append(f"response not redacted: caller holds {unless}")
    return result
