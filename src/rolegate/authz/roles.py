"""Roles flattened once: inherited permissions folded in, wildcards expanded, denies subtracted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from sys import intern

from rolegate.config.sections.policy import Role

__all__ = ["FlatRole", "expand", "flatten_roles"]


class FlatRole:
    """A role as decisions need it: what it allows (deny already removed) and what it denies.

    ``assigns``: the permissions its holders may grant on single objects (its own and its ancestors').
    """

    __slots__ = ("name", "allow", "deny", "ancestors", "assigns")

    def __init__(self, name: str, allow: frozenset[str], deny: frozenset[str],
                 ancestors: tuple[str, ...], assigns: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.allow = allow
        self.deny = deny
        # Every role this one inherits from, transitively, nearest first.
        self.ancestors = ancestors
        self.assigns = assigns

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
        assigns = expand((p for r in (name, *ancestors) if r in roles for p in roles[r].assigns), catalogue)
        flat[name] = FlatRole(name, expand(allow, catalogue) - deny_set, deny_set, ancestors, assigns)
    return flat
