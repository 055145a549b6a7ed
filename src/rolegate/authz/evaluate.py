"""Decisions: ``decide``, ``effective_permissions``, ``roles_of`` against a compiled ``Policy``.

Semantics (the contract explain, tokens and ``/me`` rely on):

* A binding applies at scope S when it is global or at S or at any parent of S, and
  it has not expired (``now < until``). Expired bindings grant and deny nothing.
* allow(S) = union of the flattened allow sets of every role of every applying binding
  of the user, their groups and their day pass, plus, for each such role, the permissions
  it lists under ``if_setting`` for a user setting switched on for the user at S, at a
  parent of S, or everywhere. A setting grants nothing by itself: only with a role held at S.
  Plus, for each such role, what it lists under ``on_assigned`` when an app assigned the user
  to S (the list form and the entry for S's type), or to an object lying directly in S (the entry
  for S's type only: ``customer: [customers:view]`` reaches the customer of an assigned work
  order, never its siblings, never the region above). Nothing else is reached by an assignment.
* deny(S) = union of the flattened deny lists of those same roles. A deny held at S or
  at a parent of S (or globally) removes the permission from *everything* at S: roles,
  settings and object grants. A deny held only at ``building:a`` does not reach
  ``building:b`` or ``client:acme``.
* effective(S) = allow(S) - deny(S).
* ``decide(p, S, object=o)`` allows when p is in effective(S), or when p is not in
  deny(S) and the identity holds an unexpired object grant of p on o whose own scope, if
  any, is o's place: o itself or a scope o lies in (for o of a declared scope type; else S
  or a parent of S). An object whose type lies inside another (a task inside a building)
  but that lies nowhere known is denied, whatever is granted on it.
* A disabled identity, a malformed scope or bad input is denied.
"""

from __future__ import annotations

from datetime import datetime, timezone
from math import inf as INF
from time import time as _time

from rolegate.authz.decision import Decision
from rolegate.authz.identity import Identity
from rolegate.authz.policy import CompiledBinding, Entry, Policy

__all__ = ["decide", "decide_in", "decide_object_only", "effective_permissions", "holdings_of", "roles_of", "timestamp"]

_new = tuple.__new__  # a Decision in one allocation (see Decision)
_DISABLED = ("deny: the account is disabled",)


def timestamp(now: float | int | datetime | None) -> float:
    """``now`` as POSIX seconds; None means the current time. Naive datetimes are read as UTC."""
    if now is None:
        return _time()
    if isinstance(now, datetime):
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        return now.timestamp()
    return float(now)


def decide(
    policy: Policy,
    identity: Identity,
    permission: str,
    scope: str | None = None,
    object: str | None = None,
    now: float | datetime | None = None,
) -> Decision:
    """May ``identity`` use ``permission`` at ``scope`` (on ``object``) at ``now``?

    Every request's decision comes through here, so the two lookups it is made of are
    written out inline: the decision memoized for this (identity shape, scope,
    permission) while still within its time window, else what each subject holds at the
    scope and above (``BindingIndex.holds``). The property tests hold this equal to a
    reference evaluator of the documented semantics, and to ``effective_permissions``. No
    entry is built; reasons are worked out from one only if someone reads them.
    """
    try:
        if now.__class__ is not float:
            now = timestamp(now)
        if identity.disabled:
            return Decision(False, permission, scope, _DISABLED)
        key = (identity.key, scope, permission)
        decision = policy._decisions.get(key)
        if decision is not None and decision[4] <= now < decision[5] and (object is None or decision[0]):
            return decision
        index = policy._index
        if permission.__class__ is not str:
            return Decision(False, repr(permission), scope, ("deny: the permission is not a string",))
        holds = index.holds
        allowed = denied = False
        not_before, expires = -INF, INF
        for subject in identity.subjects:
            here = holds.get((subject, scope))  # what the subject holds here and above
            if here is None:  # nothing here: the nearest scope above where it holds something
                chain = index.chains.get(scope) or index.chain(scope)
                if chain is None:
                    return _decide_malformed_scope(policy, identity, permission, scope, object, now)
                if subject not in index.held_by:  # bound nowhere: nothing to climb for
                    continue
                for at in chain[1:]:
                    here = holds.get((subject, at))
                    if here is not None:
                        break
                else:
                    continue
            if here.__class__ is frozenset:  # no deny, no expiry: the common case
                if permission in here:
                    allowed = True
                    if permission not in index.may_deny:
                        break  # no other subject can take it away
                continue
            # A _Held: mypy does not narrow on ``.__class__ is`` (the cheapest test on this path), hence the ignore.
            verdict, not_before, expires = here.judge(permission, now, not_before, expires)  # type: ignore[union-attr]
            if verdict < 0:  # an explicit deny beats every allow
                allowed, denied = False, True
                break
            if verdict:
                allowed = True
        if not (allowed or denied) and (
            (permission in index.conditional and identity.username in index.settings_by_user)
            or (permission in index.assigned_perms and identity.username in index.assigned_users)
        ):
            # A role may grant it with one of this user's settings, or on an object assigned to this user
            # (on_assigned): the entry pairs them up.
            entry = policy.entry(identity, scope, now)
            allowed, not_before, expires = permission in entry.allow, entry.not_before, entry.expires
        decision = _new(Decision, (allowed, permission, scope, None, not_before, expires, index, identity, now))
        if permission in policy.catalogue:  # memoize catalogue permissions only
            decisions = policy._decisions
            if len(decisions) < policy._decisions_size:
                decisions[key] = decision
            else:
                policy.memoize(key, decision)
        if object is None or allowed:
            return decision
        return _decide_object(policy, policy.entry(identity, scope, now), identity, permission, scope, object, now)
    except Exception as exc:  # fail closed: a bug or hostile input must never become an allow
        return Decision(
            False,
            permission if isinstance(permission, str) else repr(permission),
            scope if isinstance(scope, str) else None,
            (f"deny: could not evaluate ({type(exc).__name__})",),
        )


def decide_in(
    policy: Policy, identity: Identity, permission: str, obj: str, parent: str, now: float | datetime | None = None
) -> Decision:
    """``decide`` at ``obj`` placed in ``parent`` for this decision only (a lookup's answer, not in the
    tree): what is held at ``obj``, at ``parent`` and above, and globally. Not memoized."""
    try:
        now = timestamp(now)
        if identity.disabled:
            return Decision(False, permission, obj, _DISABLED)
        entry = policy.entry_in(identity, obj, parent, now)
        allowed = permission in entry.allow
        return Decision(
            allowed, permission, obj, entry.reasons_for(permission, allowed), entry.not_before, entry.expires
        )
    except Exception as exc:  # fail closed
        return Decision(False, str(permission), obj, (f"deny: could not evaluate ({type(exc).__name__})",))


def _decide_malformed_scope(
    policy: Policy, identity: Identity, permission: str, scope: str | None, object: str | None, now: float
) -> Decision:
    entry = policy.entry(identity, scope, now)  # holds nothing, and a note saying why
    if object is None:
        return Decision(False, permission, scope, entry.reasons_for(permission, False))  # its note
    return _decide_object(policy, entry, identity, permission, scope, object, now)


def _decide_object(
    policy: Policy, entry: Entry, identity: Identity, permission: str | None, scope: str | None, obj: str, now: float
) -> Decision:
    if not isinstance(obj, str):
        return Decision(False, str(permission), scope, ("deny: the object is not a string",))
    label = permission if permission is not None else f"(any permission on {obj})"
    unplaced = policy.scopes.unplaced(obj)
    if unplaced is not None:  # its scope is unknown: never allowed by accident
        return Decision(False, label, scope, (f"deny: {unplaced}",))
    grants = policy.object_grants_for(identity, permission, obj, scope, now)
    if not grants and permission is not None and permission not in entry.deny:
        # The route's object (not its scope) assigned to the user, and a role held here lists it (on_assigned).
        assigned = policy.assigned_on(entry, identity, permission, obj)
        if assigned is not None:
            b, a = assigned
            return Decision(
                True,
                label,
                scope,
                (
                    f"allow: role {b.role.name} grants {permission} on objects "
                    f"assigned to its holder: {a.describe()}; {b.describe()}",
                ),
            )
    if not grants:
        base = entry.reasons_for(label, False) if permission is not None else ()
        return Decision(False, label, scope, (*base, f"deny: no object grant of {label} on {obj}"))
    if permission is not None and permission in entry.deny:
        return Decision(
            False,
            label,
            scope,
            (*entry.reasons_for(permission, False), *(f"overruled allow: {g.describe()}" for g in grants)),
        )
    return Decision(True, label, scope, tuple(f"allow: {g.describe()}" for g in grants))


def decide_object_only(
    policy: Policy, identity: Identity, obj: str, scope: str | None = None, now: float | datetime | None = None
) -> Decision:
    """For routes with an ``object`` but no ``permission``: any unexpired grant on ``obj`` allows."""
    now = timestamp(now)
    if identity.disabled:
        return Decision(False, f"(any permission on {obj})", scope, _DISABLED)
    try:
        entry = policy.entry(identity, scope, now)
        return _decide_object(policy, entry, identity, None, scope, obj, now)
    except Exception as exc:
        return Decision(
            False, f"(any permission on {obj})", None, (f"deny: could not evaluate ({type(exc).__name__})",)
        )


def effective_permissions(
    policy: Policy, identity: Identity, scope: str | None = None, now: float | datetime | None = None
) -> frozenset[str]:
    """Everything ``identity`` may do at ``scope`` (object grants excluded): the token's ``perms``."""
    if identity.disabled:
        return frozenset()
    try:
        return policy.entry(identity, scope, timestamp(now)).allow
    except Exception:
        return frozenset()


def holdings_of(
    policy: Policy, identity: Identity, scope: str | None = None, now: float | datetime | None = None
) -> tuple[CompiledBinding, ...]:
    """The bindings that apply to ``identity`` at ``scope`` (role, scope, until, source): for ``/me``."""
    if identity.disabled:
        return ()
    try:
        return policy.entry(identity, scope, timestamp(now)).holdings
    except Exception:
        return ()


def roles_of(
    policy: Policy, identity: Identity, scope: str | None = None, now: float | datetime | None = None
) -> tuple[str, ...]:
    """Names of the roles ``identity`` holds at ``scope``, sorted: the token's ``roles``."""
    return tuple(sorted({b.role.name for b in holdings_of(policy, identity, scope, now)}))
