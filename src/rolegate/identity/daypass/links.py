"""The pages a day pass opens: the GET routes whose permission the pass holds at its scope, filled in.

The pass home lists them, the pass-aware 403 repeats them, and a template's ``landing`` is checked with
the same question (``opens``). A candidate link is decided the way a request is: normalized, matched
against the route table (a more specific route may answer that path instead), its scope filled by the
route's own template, decided by the authorization engine against the live policy. So a listed link
is one the proxy lets through, and nothing the pass does not cover is ever named.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from rolegate.authz import Identity, Policy
from rolegate.authz.explain import decide_route
from rolegate.authz.requirement import Requirement, requirement_of
from rolegate.errors import AmbiguousPath
from rolegate.proxy.paths import normalize_path, split_segments
from rolegate.proxy.routes import Route, RouteTable

# A pass home is a page to tap through, not a site map.
MAX_LINKS = 30
# ``building:{building}`` or ``building:{query.building}``: one scope type, its id from one place.
_SCOPE_TEMPLATE = re.compile(r"^([a-z][a-z0-9_\-]*):\{([^{}]+)\}$")
_PARAM_SEGMENT = re.compile(r"^\{([^{}]+)\}$")


@dataclass(frozen=True, slots=True)
class PassLink:
    """One page of the pass home: what it is called and where it is (path and query on public_url)."""

    title: str
    target: str


@dataclass(frozen=True, slots=True)
class Opening:
    """Whether a GET of one target passes for an identity, and if not, why (for ``rolegate check``)."""

    passes: bool  # the proxy lets it through (granted, public, any signed-in user, or shadow mode)
    held: bool  # the permission is held (what the pass home lists)
    route: Route | None
    reason: str = ""
    requirement: Requirement | None = None


def _query_getter(query: str) -> Callable[[str], str | None]:
    values: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        values.setdefault(key, value)  # the first value wins, as in the request pipeline
    return values.get


def _no_header(_name: str) -> None:
    return None


def opens(routes: RouteTable, policy: Policy, identity: Identity, host: str | None, target: str, now: float) -> Opening:
    """Would ``GET target`` on ``host`` pass for ``identity`` under ``policy`` at ``now``?"""
    raw_path, _, query = target.partition("?")
    try:
        path = normalize_path(raw_path)
    except AmbiguousPath:
        return Opening(False, False, None, f"{raw_path} is not a path rolegate accepts (it would answer 400)")
    match = routes.match("GET", host, split_segments(path))
    if match is None:
        return Opening(False, False, None, f"no route answers GET {path} (it would answer 403)")
    route = match.route
    if not match.method_allowed:
        return Opening(False, False, route, f"{route.label} does not answer GET (it would answer 405)")
    if route.mode in ("public", "authenticated"):
        return Opening(True, False, route)
    requirement = requirement_of(match, _query_getter(query), _no_header)
    decision = decide_route(policy, identity, requirement, now)
    if decision.allowed:
        return Opening(True, True, route, requirement=requirement)
    if requirement.problem is not None:
        reason = f"{route.label}: {requirement.problem}"
    elif requirement.permission is None:
        reason = f"{route.label} needs an object grant on {requirement.object}"
    else:
        where = f"at {requirement.scope}" if requirement.scope else "everywhere (the route names no scope)"
        reason = f"{route.label} needs {requirement.permission} {where}"
    return Opening(route.mode == "log", False, route, reason, requirement)


def _scope_ids(scope_type: str, pass_scope: str, tree: Any) -> list[str]:
    """Ids of the scopes of ``scope_type`` a pass at ``pass_scope`` reaches: its own, or those known to lie
    inside it (a pass for region:north reaches the buildings config or the directory places there)."""
    own_type, _, own_id = pass_scope.partition(":")
    if own_type == scope_type:
        return [own_id]
    parents = getattr(tree, "parents", None) or {}
    inside = sorted(
        child for child in parents if child.startswith(scope_type + ":") and pass_scope in tree.chain(child)[1:]
    )
    return [child.partition(":")[2] for child in inside[:MAX_LINKS]]


def _fill_path(pattern: str, params: dict[str, str]) -> str | None:
    """The route's path with its parameters filled (``**`` left out); None when one cannot be filled."""
    if pattern == "/":
        return "/"
    out: list[str] = []
    for seg in pattern[1:].split("/"):
        if seg == "**":
            break
        param = _PARAM_SEGMENT.match(seg)
        if param is None:
            out.append(seg)
            continue
        value = params.get(param.group(1))
        if not value:
            return None
        out.append(quote(value, safe=""))
    return "/" + "/".join(out)


def _targets(route: Route, pass_scope: str, tree: Any) -> Iterator[str]:
    """Candidate links of one route for a pass at ``pass_scope``: its scope's parameter filled in."""
    fills: list[tuple[dict[str, str], dict[str, str]]]
    if route.scope is None or ("{" not in route.scope):
        fills = [({}, {})]  # no scope, or a fixed one: the decision says whether the pass holds it there
    else:
        shape = _SCOPE_TEMPLATE.match(route.scope)
        if shape is None:
            return  # a scope from a header, or of several parts: not something a link can carry
        scope_type, ref = shape.groups()
        kind, _, name = ref.partition(".")
        if kind == "header":
            return
        ids = _scope_ids(scope_type, pass_scope, tree)
        if kind == "query" and name:
            fills = [({}, {name: i}) for i in ids]
        else:
            fills = [({ref: i}, {}) for i in ids]
    for params, query in fills:
        path = _fill_path(route.path, params)
        if path is not None:
            yield path + ("?" + urlencode(query) if query else "")


def _listable(route: Route, host: str | None) -> bool:
    """A page a person opens: answers GET, needs a permission (not an object grant), on our host."""
    if route.methods is not None and "GET" not in route.methods:
        return False
    if route.mode not in ("enforce", "log") or route.permission is None or route.object:
        return False
    return route.host is None or route.host == host


def _title(config: Any, route: Route, target: str) -> str:
    """The route's ``title``; else its last literal path segment in words (``risk-assessment``: Risk assessment)."""
    routes = getattr(config, "routes", ())
    title: str | None = getattr(routes[route.index], "title", None) if route.index < len(routes) else None
    if title:
        return title
    literals = [s for s in route.path.split("/") if s and s != "**" and not _PARAM_SEGMENT.match(s)]
    if not literals:
        return target
    words = re.sub(r"[-_.]+", " ", literals[-1]).strip()
    return words[:1].upper() + words[1:] if words else target


def pass_links(
    config: Any,
    routes: RouteTable,
    policy: Policy,
    identity: Identity,
    pass_scope: str,
    host: str | None,
    now: float,
    *,
    limit: int = MAX_LINKS,
) -> list[PassLink]:
    """The pages a pass at ``pass_scope`` opens, in config order, each verified with ``opens``."""
    links: list[PassLink] = []
    seen: set[str] = set()
    tree = getattr(policy, "scopes", None)
    for route in routes.routes:
        if not _listable(route, host):
            continue
        for target in _targets(route, pass_scope, tree):
            if target in seen:
                continue
            seen.add(target)
            opening = opens(routes, policy, identity, host, target, now)
            # The route itself must answer it: a more specific route may take that path over.
            if opening.held and opening.route is route:
                links.append(PassLink(_title(config, route, target), target))
                if len(links) >= limit:
                    return links
    return links
