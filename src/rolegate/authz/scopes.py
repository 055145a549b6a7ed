"""Scope nesting: ``building:a`` lies in ``client:acme`` when config or the directory says so."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeGuard

from rolegate.config.sections.policy import MAX_SCOPE_DEPTH, ScopeType

__all__ = ["ScopeTree", "is_scope"]

# Same shape as the config's scope check: type:id, no whitespace, no second ':' or braces.
_SCOPE = re.compile(r"[a-z][a-z0-9_\-]*:[^\s:{}]+\Z")
# Scope types nest a few levels at most (config refuses MAX_SCOPE_DEPTH); the bound keeps a bad
# directory attribute harmless.
MAX_DEPTH = MAX_SCOPE_DEPTH


def is_scope(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) <= 512 and _SCOPE.match(value) is not None


class ScopeTree:
    """Parent links between scopes, from config ``members`` and runtime ``scope_parents``.

    Runtime membership (e.g. a directory attribute) overrides config for the same
    child. A runtime parent must have the type config declares as the child type's
    parent; anything else is ignored and reported in ``problems``.
    """

    __slots__ = ("parents", "types", "parent_types", "problems", "complete")

    def __init__(self, scope_types: Mapping[str, ScopeType], scope_parents: Mapping[str, str] | None = None) -> None:
        parents: dict[str, str] = {}
        problems: list[str] = []
        for type_name, scope_type in scope_types.items():
            if scope_type.parent is None:
                continue
            for child, parent in scope_type.members.items():
                parents[f"{type_name}:{child}"] = f"{scope_type.parent}:{parent}"
        for child, parent in (scope_parents or {}).items():
            if not (is_scope(child) and is_scope(parent)):
                problems.append(f"scope membership {child!r} -> {parent!r} ignored: not type:id scopes")
                continue
            child_type, parent_type = child.split(":", 1)[0], parent.split(":", 1)[0]
            declared = scope_types.get(child_type)
            if declared is None or declared.parent != parent_type:
                expected = declared.parent if declared is not None else None
                problems.append(
                    f"scope membership {child} -> {parent} ignored: "
                    f"scope type {child_type!r} has parent type {expected!r}"
                )
                continue
            parents[child] = parent
        self.parents = parents
        self.types = frozenset(scope_types)
        # scope type -> the type its scopes lie in (task -> building), as config declares.
        self.parent_types = {name: t.parent for name, t in scope_types.items() if t.parent is not None}
        self.problems = tuple(problems)
        # Objects of the object directory placed all the way up: each scope of the chain whose type lies
        # inside another is placed (workorder:1 in customer:c100 in region:north). A route's
        # ``scope: "of workorder:{id}"`` is decided at such an object only; worked out once per tree, so
        # the request path reads one set.
        self.complete = frozenset(child for child in parents if self._missing(child) is None)

    def _missing(self, scope: str) -> str | None:
        """The first scope of ``scope``'s chain that lies nowhere known although its type lies inside another."""
        parent_types = self.parent_types
        for level in self.chain(scope):
            if level.split(":", 1)[0] in parent_types and level not in self.parents:
                return level
        return None

    def unregistered(self, scope: str) -> str | None:
        """Why ``scope`` cannot be decided as an object of the object directory (None: it can).

        Unknown objects are refused with this reason, never judged at a broader scope: an object whose
        type lies inside no other is not an object of the directory at all.
        """
        if scope in self.complete:
            return None
        scope_type = scope.split(":", 1)[0]
        if scope_type not in self.parent_types:
            return (
                f"{scope} is not an object of the object directory (scope type {scope_type!r} lies inside no "
                f"other type)"
            )
        missing = self._missing(scope)
        if missing is None or missing == scope:
            return f"{scope} is not registered in the object directory"
        return f"{scope} lies in {self.chain(scope)[1]}, but {missing} is not registered in the object directory"

    def unplaced(self, scope: str) -> str | None:
        """Why ``scope`` has no known place, when its type lies inside another and nothing puts it there.

        A task must lie in a building for grants made at that building to reach it; one that lies
        nowhere known is refused with this reason, never judged by what is held globally alone.
        """
        scope_type = scope.split(":", 1)[0]
        parent_type = self.parent_types.get(scope_type)
        if parent_type is None or scope in self.parents:
            return None
        return (
            f"{scope} lies in no known {parent_type} (scope type {scope_type} lies inside {parent_type}: "
            f"list it under scopes.{scope_type}.members or register it through the admin API)"
        )

    def chain(self, scope: str) -> tuple[str, ...]:
        """``scope`` and its ancestors, nearest first; stops at a cycle or at MAX_DEPTH."""
        out = [scope]
        current = self.parents.get(scope)
        while current is not None and current not in out and len(out) < MAX_DEPTH:
            out.append(current)
            current = self.parents.get(current)
        return tuple(out)
