"""Roles flattened once: inherited permissions folded in, wildcards expanded, denies subtracted.

A flattened role also carries what it grants only with a user setting (``if_setting``), only on objects
assigned to its holder (``on_assigned``), and what its holders may hand out (``manages``), each with its
ancestors' folded in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from sys import intern
from typing import Literal

from rolegate.config.sections.policy import Role

__all__ = ["ALL", "NOTHING", "Delegation", "FlatRole", "expand", "flatten_roles"]


class _All:
    """``manages: {roles: all}``: contains everything, and absorbs any union."""

    __slots__ = ()

    def __contains__(self, item: object) -> bool:
        return True

    def __bool__(self) -> bool:
        return True

    def __or__(self, other: object) -> "_All":
        return self

    __ror__ = __or__

    def __repr__(self) -> str:
        return "all"


ALL = _All()
Names = frozenset[str] | _All
_NONE: frozenset[str] = frozenset()


def _union(a: Names, b: Names) -> Names:
    return ALL if a is ALL or b is ALL else a | b


def _within(inner: Names, outer: Names) -> bool:
    if isinstance(outer, _All):
        return True
    return not isinstance(inner, _All) and inner <= outer


class Delegation:
    """What holders of a role (or of several) may hand out and take away: roles, user settings, and
    permissions on single objects (``assigns``). Each is a frozenset of names or ``ALL``."""

    __slots__ = ("roles", "settings", "assigns")

    def __init__(self, roles: Names = _NONE, settings: Names = _NONE, assigns: Names = _NONE) -> None:
        self.roles = roles
        self.settings = settings
        self.assigns = assigns

    def __or__(self, other: "Delegation") -> "Delegation":
        return Delegation(
            _union(self.roles, other.roles), _union(self.settings, other.settings), _union(self.assigns, other.assigns)
        )

    def __bool__(self) -> bool:
        return bool(self.roles or self.settings or self.assigns)

    def within(self, other: "Delegation") -> bool:
        """Manages nothing that ``other`` does not."""
        return (
            _within(self.roles, other.roles)
            and _within(self.settings, other.settings)
            and _within(self.assigns, other.assigns)
        )

    def describe(self) -> str:
        parts = []
        for label, names in (("roles", self.roles), ("settings", self.settings), ("assigns", self.assigns)):
            if names:
                parts.append(f"{label}: {'all' if isinstance(names, _All) else ', '.join(sorted(names))}")
        return "; ".join(parts) or "nothing"

    def __repr__(self) -> str:
        return f"Delegation({self.describe()})"


NOTHING = Delegation()


class FlatRole:
    """A role as decisions need it: what it allows (deny already removed) and what it denies.

    ``conditional``: user setting -> the permissions the role grants only where its holder has that
    setting switched on (deny removed too). ``manages``: what its holders may hand out (a
    ``Delegation``). Both fold in the role's ancestors.
    """

    __slots__ = ("name", "allow", "deny", "ancestors", "conditional", "manages", "on_assigned")

    def __init__(
        self,
        name: str,
        allow: frozenset[str],
        deny: frozenset[str],
        ancestors: tuple[str, ...],
        conditional: Mapping[str, frozenset[str]] | None = None,
        manages: Delegation = NOTHING,
        on_assigned: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.name = name
        self.allow = allow
        self.deny = deny
        # Every role this one inherits from, transitively, nearest first.
        self.ancestors = ancestors
        self.conditional: Mapping[str, frozenset[str]] = conditional or {}
        self.manages = manages
        # scope type ("*": the assigned object itself, any type) -> permissions granted there only on
        # objects assigned to the holder (``on_assigned``); deny and plain allow removed.
        self.on_assigned: Mapping[str, frozenset[str]] = on_assigned or {}

    def assigned_permissions(self) -> frozenset[str]:
        return frozenset().union(*self.on_assigned.values())

    @property
    def assigns(self) -> Names:
        """The permissions its holders may grant on single objects."""
        return self.manages.assigns

    def conditional_permissions(self) -> frozenset[str]:
        return frozenset().union(*self.conditional.values())

    def __repr__(self) -> str:
        return f"FlatRole({self.name!r}, allow={sorted(self.allow)}, deny={sorted(self.deny)})"


def expand(patterns: Iterable[str], catalogue: frozenset[str]) -> frozenset[str]:
    """Permissions named by ``patterns``; ``documents:*`` / ``rolegate:*`` match catalogue entries."""
    out: set[str] = set()
    for pattern in patterns:
        if "*" in pattern:
            out.update(p for p in catalogue if "*" not in p and fnmatchcase(p, pattern))
        out.add(pattern)
    # Interned like the permissions routes ask for: membership then compares pointers.
    return frozenset(map(intern, out))


def flatten_roles(roles: Mapping[str, Role], catalogue: frozenset[str]) -> dict[str, FlatRole]:
    """Flatten every role. Inheritance is transitive; a cycle (reported by config) is cut.

    Deny semantics: a role's deny list is its own ``deny`` plus that of every role it
    inherits, and its allow set is everything it and its ancestors permit *minus* that
    deny list: within one role, deny beats allow.
    """
    raw: dict[str, tuple[frozenset[str], frozenset[str], tuple[str, ...]]] = {}

    def visit(name: str, stack: tuple[str, ...]) -> tuple[frozenset[str], frozenset[str], tuple[str, ...]]:
        done = raw.get(name)
        if done is not None:
            return done
        role = roles[name]
        allow = set(role.permissions)
        deny = set(role.deny)
        ancestors: list[str] = []
        for parent in role.inherits:
            if parent not in roles or parent in stack:
                continue  # unknown or cyclic: config check reports it; grant nothing through it
            p_allow, p_deny, p_anc = visit(parent, (*stack, parent))
            allow |= p_allow
            deny |= p_deny
            for a in (parent, *p_anc):
                if a not in ancestors:
                    ancestors.append(a)
        result = (frozenset(allow), frozenset(deny), tuple(ancestors))
        if not any(a in stack for a in ancestors):
            raw[name] = result
        return result

    flat: dict[str, FlatRole] = {}
    for name in roles:
        allow, deny, ancestors = visit(name, (name,))
        deny_set = expand(deny, catalogue)
        lineage = [roles[r] for r in (name, *ancestors) if r in roles]
        conditional: dict[str, set[str]] = {}
        for role in lineage:
            for setting, perms in role.if_setting.items():
                conditional.setdefault(setting, set()).update(perms)
        allow_set = expand(allow, catalogue) - deny_set
        # A permission the role grants anyway needs no setting; a denied one is not granted by any.
        conditions = {
            setting: frozenset(expand(perms, catalogue) - deny_set - allow_set)
            for setting, perms in conditional.items()
        }
        manages = NOTHING
        for role in lineage:
            manages = manages | _delegation(role, catalogue)
        assigned: dict[str, set[str]] = {}
        for role in lineage:
            for type_name, perms in role.on_assigned.items():
                assigned.setdefault(type_name, set()).update(perms)
        # As with settings: what the role grants anyway needs no assignment; a denied one is granted by none.
        on_assigned = {t: frozenset(expand(perms, catalogue) - deny_set - allow_set) for t, perms in assigned.items()}
        flat[name] = FlatRole(
            name,
            allow_set,
            deny_set,
            ancestors,
            {s: p for s, p in conditions.items() if p},
            manages,
            {t: p for t, p in on_assigned.items() if p},
        )
    return flat


def _names(value: Literal["all"] | tuple[str, ...]) -> Names:
    if value == "all":
        return ALL
    return frozenset(value)


def _delegation(role: Role, catalogue: frozenset[str]) -> Delegation:
    manages = role.manages
    assigns = _names(manages.assigns)
    if not isinstance(assigns, _All):
        assigns = expand(assigns, catalogue)
    return Delegation(_names(manages.roles), _names(manages.settings), assigns)
