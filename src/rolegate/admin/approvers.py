"""Who may grant a permission at a scope, and with which role: the routing of access requests.

It is the delegation model (``admin/delegation.py``) asked the other way round. A request for
permission P at scope S goes to the people who could make a grant there that gives P:

* a **plan** is one such grant: a binding of role R at S, plus the user settings R needs for P when R
  gives P only with a setting (``if_setting``; seed 001's building user adds documents only with
  ``documents_add`` on). Someone can make it when a role they hold at S (or above) manages R
  (``manages.roles``) and every setting (``manages.settings``), R does not deny P, and neither R nor
  the settings hand out rolegate's own permissions they do not hold at S — the same guards as a
  binding made through the admin API;
* the **least** plan gives the fewest permissions (R's own, plus what the settings add), then needs
  the fewest settings, then comes first by name: approving grants that one unless the approver picks
  another they manage;
* the **approvers** are the holders (users bound directly, members of bound groups; never day passes,
  never the requester, never a disabled account) of a role that manages something at S or above, for
  whom some plan exists, **closest scope first**: the responsible of building a before the regional
  manager of its client before the global administrator.

A plan is checked against the policy, not the requester: whether it really gives P to them (a deny
they hold elsewhere beats every allow) is checked when it is approved, on the compiled result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rolegate.admin.delegation import OWN_PREFIX
from rolegate.admin.people import People
from rolegate.authz import Identity, Policy, effective_permissions, holdings_of
from rolegate.authz.roles import NOTHING, Delegation, FlatRole


@dataclass(frozen=True, slots=True)
class Plan:
    """A grant that gives the permission: role ``role`` at the scope, with ``settings`` switched on there."""

    role: str
    settings: tuple[str, ...]
    size: int  # permissions it gives: the role's own plus what the settings add with it

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "settings": list(self.settings), "gives": self.size}


@dataclass(frozen=True, slots=True)
class Approver:
    """Someone who may grant it, where their power to comes from, and what they could grant."""

    username: str
    name: str | None
    email: str | None
    scope: str | None  # the closest scope where they hold a role that lets them grant it (None: everywhere)
    plans: tuple[Plan, ...]

    def to_json(self) -> dict[str, Any]:
        return {"user": self.username, "name": self.name or self.username, "scope": self.scope}


def _own(permissions: frozenset[str]) -> frozenset[str]:
    return frozenset(p for p in permissions if p.startswith(OWN_PREFIX))


def plan_for_role(
    policy: Policy, role: FlatRole, manages: Delegation, held: frozenset[str], permission: str
) -> Plan | None:
    """The grant of ``role`` that gives ``permission``, by someone who ``manages`` this and holds ``held``
    at the scope; None when the role cannot give it or they may not hand it out."""
    if role.name not in manages.roles or permission in role.deny:
        return None
    if _own(role.allow | role.conditional_permissions()) - held:
        return None  # rolegate's own permissions only from someone who holds them there
    if permission in role.allow:
        return Plan(role.name, (), len(role.allow))
    options = []
    for setting, perms in role.conditional.items():
        if permission not in perms or setting not in manages.settings:
            continue
        if _own(policy.settings.get(setting, frozenset())) - held:
            continue
        options.append((len(role.allow | perms), setting))
    if not options:
        return None
    size, setting = min(options)
    return Plan(role.name, (setting,), size)


def plans_for(policy: Policy, manages: Delegation, held: frozenset[str], permission: str) -> list[Plan]:
    """Every grant someone who ``manages`` this (and holds ``held``) at a scope could make there to give
    ``permission``, least first."""
    if not manages.roles:
        return []
    found = [
        plan
        for role in policy.roles.values()
        if (plan := plan_for_role(policy, role, manages, held, permission)) is not None
    ]
    return sorted(found, key=lambda p: (p.size, len(p.settings), p.role))


def manages_at(policy: Policy, identity: Identity, scope: str | None, now: float) -> Delegation:
    """What the roles ``identity`` holds at ``scope`` (there or above) let them hand out there
    (``Actor.manages_at`` for someone who is not the caller)."""
    manages = NOTHING
    for b in holdings_of(policy, identity, scope, now):
        manages = manages | b.role.manages
    return manages


def plans_of(policy: Policy, identity: Identity, permission: str, scope: str | None, now: float) -> list[Plan]:
    """What ``identity`` could grant at ``scope`` to give ``permission``, least first."""
    if identity.disabled or identity.daypass:
        return []
    manages = manages_at(policy, identity, scope, now)
    if not manages.roles:
        return []
    return plans_for(policy, manages, effective_permissions(policy, identity, scope, now), permission)


def levels_of(policy: Policy, scope: str | None) -> list[str | None]:
    """``scope``, the scopes it lies in, and None (everywhere): closest first."""
    return [*(policy.scopes.chain(scope) if scope is not None else ()), None]


def approvers(
    policy: Policy,
    people: People,
    permission: str,
    scope: str | None,
    now: float,
    *,
    requester: str | None = None,
    limit: int = 50,
) -> list[Approver]:
    """The people who may grant ``permission`` at ``scope``, closest scope first (then by username)."""
    levels = levels_of(policy, scope)
    rank_of = {level: i for i, level in enumerate(levels)}
    # Everyone holding a role that manages anything here or above, with the closest level they hold one at.
    closest: dict[str, int] = {}
    for b in policy.bindings:
        if not b.role.manages.roles or b.scope not in rank_of or not now < b.until:
            continue
        if b.subject_kind == "user":
            names = [b.subject]
        elif b.subject_kind == "group":
            names = [p.username for p in people.members(b.subject)]
        else:
            continue  # a day pass approves nothing
        for name in names:
            rank = rank_of[b.scope]
            if rank < closest.get(name, len(levels)):
                closest[name] = rank
    wanted = requester.casefold() if requester else None
    found: list[tuple[int, str, Approver]] = []
    for name in closest:
        if name.casefold() == wanted:
            continue  # nobody approves their own request
        person = people.user(name)
        if person is not None and person.disabled:
            continue
        identity = person.identity() if person is not None else Identity(name, ())
        plans = plans_of(policy, identity, permission, scope, now)
        if not plans:
            continue
        found.append(
            (
                _power_rank(policy, identity, permission, levels, now, closest[name]),
                name.casefold(),
                Approver(
                    person.username if person else name,
                    person.name if person else None,
                    person.email if person else None,
                    None,
                    tuple(plans),
                ),
            )
        )
    found.sort(key=lambda item: (item[0], item[1]))
    return [_at(approver, levels[rank]) for rank, _, approver in found[:limit]]


def _power_rank(
    policy: Policy, identity: Identity, permission: str, levels: list[str | None], now: float, fallback: int
) -> int:
    """The closest level where one binding of ``identity`` lets them grant it; ``fallback`` (their closest
    managing binding) when only several together do."""
    subjects = set(identity.subjects)
    held = effective_permissions(policy, identity, levels[0], now)
    best = len(levels)
    for b in policy.bindings:
        if f"{b.subject_kind[0]}:{b.subject}" not in subjects or not now < b.until or b.scope not in levels:
            continue
        rank = levels.index(b.scope)
        if rank < best and plans_for(policy, b.role.manages, held, permission):
            best = rank
    return best if best < len(levels) else fallback


def _at(approver: Approver, scope: str | None) -> Approver:
    return Approver(approver.username, approver.name, approver.email, scope, approver.plans)


def may_approve(policy: Policy, identity: Identity, permission: str, scope: str | None, now: float) -> bool:
    return bool(plans_of(policy, identity, permission, scope, now))


__all__ = [
    "Approver",
    "Plan",
    "approvers",
    "levels_of",
    "manages_at",
    "may_approve",
    "plan_for_role",
    "plans_for",
    "plans_of",
]
