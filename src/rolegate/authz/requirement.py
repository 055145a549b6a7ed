"""What a matched route needs for one request: the route's ``scope`` / ``object`` templates filled in.

On the request path (server/access.py, the day-pass links) before every decision; ``authz.explain``
re-exports it, so what is explained is exactly what is enforced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["Getter", "Requirement", "absent", "requirement_of"]

Getter = Callable[[str], "str | None"]


def absent(_: str) -> None:
    """The getter of a request without query or headers: nothing is there."""
    return None


class Requirement(NamedTuple):
    """What a matched route needs for one request: mode, permission, resolved scope and object.

    A named tuple: one is made per request that fills a template, and a frozen dataclass
    cost four times as much to build.
    """

    mode: str
    permission: str | None
    scope: str | None
    object: str | None
    problem: str | None = None  # set when a template could not be filled: the request is denied
    # ``scope: "of workorder:{id}"``: the scope is an object the object directory must place (else: deny).
    placed: bool = False
    # Where a lookup on a miss placed it, for this request only (``rolegate.authz.objects``).
    parent: str | None = None
    # ``lists: true``: a list the backend filters; allowed where the permission is held anywhere (decide_listed).
    listed: bool = False


_requirement = tuple.__new__  # a Requirement without the named tuple's Python-level __new__


def requirement_of(match: Any, query_get: Getter = absent, header_get: Getter = absent) -> Requirement:
    """Resolve the route's ``scope`` / ``object`` templates for this request."""
    route = match.route
    template = route.scope_template
    if template is not None and template.param is not None and not route.object:
        # The usual shape, ``building:{building}``, filled in one step.
        value = match.params.get(template.param)
        if value:
            return _requirement(
                Requirement,
                (route.mode, route.permission, template.prefix + value, None, None, route.placed, None, False),
            )
    elif not route.scope and not route.object:  # nothing to fill in: one shared answer per route
        requirement = route.requirement  # made once, kept on the route (a reload makes new routes)
        if requirement is None:
            requirement = route.requirement = Requirement(
                route.mode, route.permission, None, None, listed=getattr(route, "lists", False)
            )
        return requirement  # type: ignore[no-any-return]  # Route.requirement is typed Any: proxy sits below authz
    scope = obj = None
    problem = None
    if route.scope:
        scope = _fill(route, route.scope, route.scope_template, match.params, query_get, header_get)
        if scope is None:
            problem = f"the scope {route.scope!r} could not be filled from the request"
    if route.object:
        obj = _fill(route, route.object, route.object_template, match.params, query_get, header_get)
        if obj is None:
            problem = f"the object {route.object!r} could not be filled from the request"
    return Requirement(route.mode, route.permission, scope, obj, problem, route.placed)


def _fill(route: Any, text: str, template: Any, params: Any, query_get: Getter, header_get: Getter) -> str | None:
    filled: str | None = (
        template.resolve(params, query_get, header_get)
        if template is not None  # compiled
        else route.resolve(text, params, query_get, header_get)
    )
    return filled
