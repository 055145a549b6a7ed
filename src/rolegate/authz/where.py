"""Where the caller holds one permission: the ``where`` claim a backend filters a list with (issue 19 part 4).

On a route without a scope (``GET /workorders``) the decision is global, so the assertion's ``perms`` say
nothing about *which* work orders the caller may see. ``where`` says it for the route's permission::

    {"perm": "workorders:view", "all": false, "scopes": ["region:north"], "assigned": ["workorder:1"]}

* ``all``: held everywhere (globally); the backend filters nothing. ``scopes`` and ``assigned`` are then empty.
* ``scopes``: scopes where it is held through a binding (or a user setting), each with everything inside it
  (a backend shows the items lying in one of them); ``except``, when present, lists scopes inside those where
  a deny takes it away again.
* ``assigned``: objects it reaches through an assignment (``on_assigned``): the assigned objects themselves,
  and for the permissions a role lists under a parent's type, that parent (``customer:c100`` for
  ``customers:view``) - exactly those, nothing inside them.
* ``truncated: true``: more than ``MAX_ENTRIES`` names, or more than ``MAX_BYTES`` of them: the lists are cut
  and the backend must not treat them as complete (ask per item, or refuse the list).

Every name is checked with ``decide`` at that scope, so the claim never says more than the decisions would.
"""

from __future__ import annotations

from typing import Any

from rolegate.authz.evaluate import decide
from rolegate.authz.identity import Identity
from rolegate.authz.policy import Policy

__all__ = ["MAX_BYTES", "MAX_ENTRIES", "where_for_route", "where_held"]

MAX_ENTRIES = 100  # names in scopes + assigned + except together
MAX_BYTES = 3072  # their total length: the assertion must stay well inside one 8 KiB header


def where_held(
    policy: Policy,
    identity: Identity,
    permission: str,
    now: float,
    max_entries: int = MAX_ENTRIES,
    max_bytes: int = MAX_BYTES,
) -> dict[str, Any]:
    """The ``where`` claim for ``permission`` (see the module doc)."""
    out: dict[str, Any] = {"perm": permission, "all": False, "scopes": [], "assigned": []}
    if identity.disabled:
        return out
    if decide(policy, identity, permission, None, now=now).allowed:
        out["all"] = True
        return out
    index = policy._index
    # Where the caller's user, groups or pass hold a binding (an expired one is weeded out by decide below).
    bound = {scope for subject in identity.subjects for scope in index.scopes_by_subject.get(subject, ())}
    candidates = bound | {s.scope for s in index.settings_by_user.get(identity.username, ()) if s.scope is not None}
    held = sorted(s for s in candidates if decide(policy, identity, permission, s, now=now).allowed)
    # Only the outermost: a scope inside another listed one adds nothing for a filter.
    chains = {s: index.chain(s) or (s,) for s in held}
    scopes = [s for s in held if not any(a in held for a in chains[s][1:])]
    inside = set(scopes)
    denied = sorted(
        s
        for s in bound
        if s not in inside
        and any(a in inside for a in (index.chain(s) or ())[1:])
        and not decide(policy, identity, permission, s, now=now).allowed
    )
    assigned: list[str] = []
    for obj in index.assigned_objects.get(identity.username, ()):
        for target in (obj, policy.scopes.parents.get(obj)):
            if target is None or target in assigned:
                continue
            if any(a in inside for a in (index.chain(target) or ())):
                continue  # already inside a listed scope
            if decide(policy, identity, permission, target, now=now).allowed:
                assigned.append(target)
    assigned.sort()
    budget_entries, budget_bytes, truncated = max_entries, max_bytes, False
    for key, names in (("scopes", scopes), ("assigned", assigned), ("except", denied)):
        kept = []
        for name in names:
            if budget_entries <= 0 or budget_bytes < len(name):
                truncated = True
                break
            kept.append(name)
            budget_entries -= 1
            budget_bytes -= len(name)
        if kept or key != "except":
            out[key] = kept
    if truncated:
        out["truncated"] = True
    return out


def where_for_route(
    policy: Policy, identity: Identity, route: Any, scope: str | None, now: float
) -> dict[str, Any] | None:
    """The claim for a request on ``route``: only on a route without a scope that needs a permission."""
    if scope is not None or not route.permission or route.mode not in ("enforce", "log"):
        return None
    return where_held(policy, identity, route.permission, now)
