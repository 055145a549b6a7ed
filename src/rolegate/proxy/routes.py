"""The compiled route table: which route a request belongs to, by specificity.

Routes are compiled once at config load into a segment trie. Every node has a
dict of literal children, at most one ``{param}`` child and at most one ``**``
catch-all; the routes ending at a node are pre-sorted into a host and method
dispatch. A lookup walks the request's segments, so its cost depends on the
path's depth, never on the number of routes. Where the trie does not branch
(``/r7/buildings/{b}/things`` under a root of 10,000 such routes), the chain's
head holds the chain's shape and the lookup compares the rest of the path with
it: fewer objects read per request, which is what a large table's lookups cost.

Precedence ("specificity, not order"), from strongest to weakest:

1. path, segment by segment: a literal beats ``{param}`` beats ``**``; a
   pattern that ends exactly where the path ends beats a ``**`` there;
2. host: an exact host beats ``*.example.com`` beats a route without host;
3. method: a route listing the method beats one with ``methods=None``
   (``GET`` also answers ``HEAD`` unless a route lists ``HEAD`` itself);
4. config order, only between routes ``problems()`` reports as ambiguous.

A route whose path matches but whose host or method does not is skipped and
the search continues with less specific routes. When some route matched path
and host but none accepted the method, ``match`` returns a ``Match`` with
``method_allowed=False`` (answer 405 with ``allowed_methods``).

Host matching lower-cases the host, drops a port and a trailing dot; a
``*.example.com`` wildcard matches exactly one extra label (like a TLS
wildcard), never ``example.com`` itself nor ``a.b.example.com``.
"""

from __future__ import annotations

import builtins
import re
from sys import intern
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from dataclasses import dataclass

from rolegate.errors import ConfigError
from rolegate.limits import ROUTE_HOSTS
from rolegate.memo import BoundedCache

__all__ = [
    "MODES",
    "Match",
    "Route",
    "RouteSpec",
    "RouteTable",
    "Template",
    "canonical_host",
    "placed_scope",
]

MODES = frozenset({"enforce", "log", "authenticated", "public"})

_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAM_SEGMENT = re.compile(r"\{([^{}]*)\}")
_TEMPLATE_REF = re.compile(r"\{([^{}]*)\}")
_HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*")
_FORBIDDEN_LITERAL = frozenset("%;\\?#{}*/") | frozenset(chr(c) for c in range(0x20)) | {"\x7f"}


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One route as written in config, before compilation."""

    path: str
    methods: frozenset[str] | None = None
    host: str | None = None
    upstream: str | None = None
    mode: str = "enforce"
    permission: str | None = None
    scope: str | None = None
    object: str | None = None
    redact: builtins.object | None = None  # (``object`` is the field above)
    lists: bool = False  # a list the backend filters with the assertion's where claim
    name: str = ""
    index: int = 0
    source: str | None = None

    def __post_init__(self) -> None:
        if self.methods is not None and not isinstance(self.methods, frozenset):
            object.__setattr__(self, "methods", frozenset(self.methods))
        if not self.name:
            verbs = " ".join(sorted(self.methods)) if self.methods else "*"
            where = f"{self.host}{self.path}" if self.host else self.path
            object.__setattr__(self, "name", f"{verbs} {where}")

    @property
    def where(self) -> str:
        """Where the route is defined, for messages: ``config.yaml:42`` or ``routes[3]``."""
        return self.source or f"routes[{self.index}]"

    @property
    def label(self) -> str:
        """``config.yaml:42 (GET /x)``: how problems name a route."""
        return f"{self.where} ({self.name})"


# --- templates -----------------------------------------------------------------

_PARAM, _QUERY, _HEADER = 0, 1, 2


class Template:
    """A compiled ``scope``/``object`` template such as ``building:{building}``.

    ``{name}`` is a path parameter, ``{query.NAME}`` a query parameter and
    ``{header.NAME}`` a request header.
    """

    __slots__ = ("prefix", "param", "text", "parts")

    def __init__(self, text: str, parts: tuple[str | tuple[int, str], ...]) -> None:
        self.text = text
        self.parts = parts
        # The usual shape, ``building:{building}``: a literal prefix and one path parameter
        # (the value is ``prefix + params[param]``); param None (and prefix "") for any other shape.
        self.prefix = ""
        self.param: str | None = None
        if len(parts) == 2 and isinstance(parts[0], str) and not isinstance(parts[1], str) and parts[1][0] == _PARAM:
            self.prefix, self.param = parts[0], parts[1][1]

    @classmethod
    def parse(cls, text: str, path_params: Sequence[str]) -> tuple[Template | None, list[str]]:
        """Compile ``text``; return the template (or None) and the problems found."""
        problems: list[str] = []
        parts: list[str | tuple[int, str]] = []
        pos = 0
        for m in _TEMPLATE_REF.finditer(text):
            if m.start() > pos:
                parts.append(intern(text[pos : m.start()]))
            ref = m.group(1)
            kind, _, name = ref.partition(".")
            if kind in ("query", "header") and name:
                if not _HTTP_TOKEN.fullmatch(name):
                    problems.append(f"template {text!r}: bad {kind} name {name!r}")
                parts.append((_QUERY if kind == "query" else _HEADER, name))
            elif ref in path_params:
                parts.append((_PARAM, intern(ref)))
            else:
                known = ", ".join(path_params) or "none"
                problems.append(
                    f"template {text!r}: {{{ref}}} is not a path parameter of this route"
                    f" (path parameters: {known}; use {{query.NAME}} or {{header.NAME}} otherwise)"
                )
            pos = m.end()
        rest = text[pos:]
        if rest:
            parts.append(intern(rest))
        if "{" in rest or "}" in rest or any(isinstance(p, str) and ("{" in p or "}" in p) for p in parts):
            problems.append(f"template {text!r}: unbalanced '{{' or '}}'")
        if problems:
            return None, problems
        return cls(text, tuple(parts)), []

    def resolve(
        self,
        params: Mapping[str, str],
        query_get: Callable[[str], str | None],
        header_get: Callable[[str], str | None],
    ) -> str | None:
        """Fill the template; None when a referenced value is missing or empty."""
        if self.param is not None:
            value = params.get(self.param)
            return self.prefix + value if value else None
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            kind, name = part
            if kind == _PARAM:
                value = params.get(name)
            elif kind == _QUERY:
                value = query_get(name)
            else:
                value = header_get(name)
            if not value:
                return None
            out.append(value)
        return "".join(out)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


# --- compiled routes -------------------------------------------------------------


class Route:
    """A compiled route: the spec's fields plus what matching and resolving need."""

    # What every request reads comes first, so that it shares the object's first cache line.
    __slots__ = (
        "param_names",
        "scope_template",
        "object",
        "mode",
        "permission",
        "scope",
        "upstream",
        "redact",
        "spec",
        "path",
        "methods",
        "host",
        "name",
        "index",
        "source",
        "object_template",
        "placed",
        "lists",
        "_shape",
        "_templates",
        "requirement",
    )

    def __init__(
        self,
        spec: RouteSpec,
        shape: tuple[str | None, ...],
        param_names: tuple[str, ...],
        scope_template: Template | None,
        object_template: Template | None,
    ) -> None:
        self.spec = spec
        self.path = spec.path
        self.methods = spec.methods
        self.host = spec.host.lower() if spec.host else None
        self.upstream = spec.upstream
        self.mode = spec.mode
        self.permission = spec.permission
        # ``scope: "of workorder:{id}"``: the scope is the object the path names, decided where the
        # object directory places it; an object it does not place is refused (see ScopeTree.unregistered).
        self.placed, self.scope = placed_scope(spec.scope)
        self.object = spec.object
        self.lists = spec.lists
        self.redact = spec.redact
        self.name = spec.name
        self.index = spec.index
        self.source = spec.source
        # Shape: literal segments as themselves, None for a parameter, "**" last.
        self._shape = shape
        self.param_names = param_names
        self.scope_template = scope_template
        self.object_template = object_template
        self._templates: dict[str, Template] = {}
        # authz's Requirement for a route with nothing to fill in, made on its first request (requirement_of).
        self.requirement: Any = None
        for t in (scope_template, object_template):
            if t is not None:
                self._templates[t.text] = t

    @property
    def label(self) -> str:
        return self.spec.label

    def compile_template(self, text: str) -> Template:
        """Compile another template against this route's parameters (ConfigError if invalid)."""
        tpl = self._templates.get(text)
        if tpl is None:
            tpl, problems = Template.parse(text, self.param_names)
            if tpl is None:
                raise ConfigError([f"{self.label}: {p}" for p in problems])
            self._templates[text] = tpl
        return tpl

    def resolve(
        self,
        template: str | Template,
        params: Mapping[str, str],
        query_get: Callable[[str], str | None],
        header_get: Callable[[str], str | None],
    ) -> str | None:
        """Fill ``template`` for one request; None (caller denies) if a value is missing or empty."""
        tpl = template if isinstance(template, Template) else self.compile_template(template)
        return tpl.resolve(params, query_get, header_get)

    def __repr__(self) -> str:
        return f"<Route {self.label}>"


class Match:
    """The result of ``RouteTable.match``."""

    __slots__ = ("route", "params", "method_allowed", "allowed_methods")

    def __init__(
        self,
        route: Route,
        params: dict[str, str],
        method_allowed: bool = True,
        allowed_methods: frozenset[str] | None = None,
    ) -> None:
        self.route = route
        self.params = params
        self.method_allowed = method_allowed
        # Only set when method_allowed is False: what to put in the Allow header.
        self.allowed_methods = allowed_methods

    def __repr__(self) -> str:
        extra = "" if self.method_allowed else f" 405 allow={sorted(self.allowed_methods or ())}"
        return f"<Match {self.route.label} {self.params}{extra}>"


class _Methods:
    """Method dispatch of the routes ending at one node for one host key."""

    __slots__ = ("by_method", "fallback", "allowed", "routes")

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes  # config order; kept for problems() and 405 answers
        self.by_method: dict[str, Route] = {}
        self.fallback: Route | None = None
        for r in routes:
            if r.methods is None:
                if self.fallback is None:
                    self.fallback = r
                continue
            for m in r.methods:
                self.by_method.setdefault(m, r)
        # HEAD is a GET without a body: serve it by the GET route unless HEAD is listed.
        if "GET" in self.by_method and "HEAD" not in self.by_method:
            self.by_method["HEAD"] = self.by_method["GET"]
        self.allowed: frozenset[str] | None = None if self.fallback is not None else frozenset(self.by_method)

    def pick(self, method: str) -> Route | None:
        r = self.by_method.get(method)
        return r if r is not None else self.fallback


_NO_METHODS: dict[str, Route] = {}  # never written to


class _Dispatch:
    """Host then method dispatch for the routes ending at one trie position.

    The routes without a host are also held flat (``by_method``, ``fallback``), and
    ``hostless`` says no other table exists: the usual dispatch is one dict lookup.
    """

    __slots__ = ("hostless", "by_method", "fallback", "exact", "wildcard", "any")

    def __init__(self, routes: list[Route]) -> None:
        exact: dict[str, list[Route]] = {}
        wildcard: dict[str, list[Route]] = {}
        any_host: list[Route] = []
        for r in routes:
            if r.host is None:
                any_host.append(r)
            elif r.host.startswith("*."):
                wildcard.setdefault(r.host[1:], []).append(r)  # key ".example.com"
            else:
                exact.setdefault(r.host, []).append(r)
        self.exact = {h: _Methods(rs) for h, rs in exact.items()} or None
        self.wildcard = {h: _Methods(rs) for h, rs in wildcard.items()} or None
        self.any = _Methods(any_host) if any_host else None
        self.by_method = self.any.by_method if self.any is not None else _NO_METHODS
        self.fallback = self.any.fallback if self.any is not None else None
        self.hostless = self.exact is None and self.wildcard is None

    def pick(self, method: str, host: str | None, suffix: str | None) -> Route | None:
        """The route for a method and canonical host, most specific host first."""
        if self.hostless:
            r = self.by_method.get(method)
            return r if r is not None else self.fallback
        if self.exact is not None and host is not None:
            t = self.exact.get(host)
            if t is not None:
                r = t.by_method.get(method) or t.fallback
                if r is not None:
                    return r
        if self.wildcard is not None and suffix is not None:
            t = self.wildcard.get(suffix)
            if t is not None:
                r = t.by_method.get(method) or t.fallback
                if r is not None:
                    return r
        r = self.by_method.get(method)
        return r if r is not None else self.fallback

    def tables(self, host: str | None, suffix: str | None) -> list[_Methods]:
        """The method tables that apply to a host, most specific first."""
        out = []
        if host is not None and self.exact is not None:
            t = self.exact.get(host)
            if t is not None:
                out.append(t)
        if suffix is not None and self.wildcard is not None:
            t = self.wildcard.get(suffix)
            if t is not None:
                out.append(t)
        if self.any is not None:
            out.append(self.any)
        return out

    def all_tables(self) -> list[_Methods]:
        out = list((self.exact or {}).values()) + list((self.wildcard or {}).values())
        if self.any is not None:
            out.append(self.any)
        return out


class _Node:
    """One trie position. ``tail`` and ``end`` shortcut a branchless chain (see ``_chain``)."""

    __slots__ = ("tail", "end", "literals", "param", "catchall", "terminal")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.catchall: _Dispatch | None = None
        self.terminal: _Dispatch | None = None
        # Set when this node holds no route and every path below it is one chain of
        # single children ending at one dispatch: that chain's shape (literals, None for
        # a parameter) and the dispatch. A lookup then compares the rest of the path
        # with the shape instead of visiting every node of the chain.
        self.tail: tuple[str | None, ...] | None = None
        self.end: _Dispatch | None = None


class _Miss:
    """Collects the best path+host match that refused the method (for a 405)."""

    __slots__ = ("route", "values", "allowed")

    def __init__(self) -> None:
        self.route: Route | None = None
        self.values: tuple[str, ...] = ()
        self.allowed: set[str] = set()


def canonical_host(host: str) -> str:
    """Lower-case a Host header value and drop its port and trailing dot."""
    h = host.lower()
    if h.startswith("["):  # IPv6 literal: "[::1]:8080"
        end = h.find("]")
        return h[: end + 1] if end != -1 else h
    colon = h.rfind(":")
    if colon != -1:
        h = h[:colon]
    if h.endswith("."):
        h = h[:-1]
    return h


# --- the table -------------------------------------------------------------------


class RouteTable:
    """Routes compiled into a segment trie; see the module docstring for precedence."""

    __slots__ = ("routes", "_root", "_has_hosts", "_has_wildcards", "_hosts")

    def __init__(self, routes: tuple[Route, ...], root: _Node) -> None:
        self.routes = routes
        self._root = root
        # Host header -> (canonical host, wildcard suffix); a handful of hosts in practice.
        self._hosts: BoundedCache[str, tuple[str, str | None]] = BoundedCache(ROUTE_HOSTS)
        self._has_hosts = any(r.host is not None for r in routes)
        self._has_wildcards = any(r.host is not None and r.host.startswith("*.") for r in routes)

    @classmethod
    def compile(cls, specs: Sequence[RouteSpec]) -> RouteTable:
        """Compile route specs; raise ``ConfigError`` listing every invalid route."""
        problems: list[str] = []
        routes: list[Route] = []
        for spec in specs:
            route, errs = _compile_route(spec)
            problems.extend(f"{spec.label}: {e}" for e in errs)
            if route is not None:
                routes.append(route)
        if problems:
            raise ConfigError(problems)

        root = _Node()
        terminal: dict[int, tuple[_Node, list[Route]]] = {}
        catchall: dict[int, tuple[_Node, list[Route]]] = {}
        for route in routes:
            node = root
            for seg in route._shape:
                if seg == "**":
                    catchall.setdefault(id(node), (node, []))[1].append(route)
                    break
                if seg is None:
                    if node.param is None:
                        node.param = _Node()
                    node = node.param
                else:
                    child = node.literals.get(seg)
                    if child is None:
                        # Interned: all routes share one "buildings", which stays in cache.
                        child = node.literals[intern(seg)] = _Node()
                    node = child
            else:
                terminal.setdefault(id(node), (node, []))[1].append(route)
        for node, rs in terminal.values():
            node.terminal = _Dispatch(rs)
        for node, rs in catchall.values():
            node.catchall = _Dispatch(rs)
        _chain(root)
        return cls(tuple(routes), root)

    def match(self, method: str, host: str | None, segments: tuple[str, ...]) -> Match | None:
        """Find the most specific route for a request, given ``split_segments`` output.

        Returns None when no route matches path and host; a ``Match`` with
        ``method_allowed=False`` when some did but none accepts ``method``.
        """
        h: str | None = None
        suffix: str | None = None
        if host is not None and self._has_hosts:
            cached = self._hosts.get(host)
            if cached is None:
                cached = self._host_key(host)
            h, suffix = cached
        # The first path a depth-first search would try: a literal where there is one, else
        # ``{param}``. When it ends at a route for this method, that is the search's answer,
        # found without recursion; otherwise the search runs from the top.
        node = self._root
        values: list[str] = []
        i, n = 0, len(segments)
        while True:
            tail = node.tail
            if tail is not None:  # one chain down to one dispatch: the same steps, node-free
                if len(tail) != n - i:
                    break
                for want in tail:
                    seg = segments[i]
                    i += 1
                    if want is None:
                        if not seg:
                            break
                        values.append(seg)
                    elif want != seg:
                        break
                else:
                    route = node.end.pick(method, h, suffix)  # type: ignore[union-attr]
                    if route is not None:
                        return Match(route, _params(route.param_names, values))
                break
            if i == n:
                d = node.terminal
                route = d.pick(method, h, suffix) if d is not None else None
                if route is None and node.catchall is not None:
                    route = node.catchall.pick(method, h, suffix)
                if route is not None:
                    return Match(route, _params(route.param_names, values))
                break
            seg = segments[i]
            child = node.literals.get(seg)
            if child is None:
                child = node.param
                if child is None or not seg:
                    break
                values.append(seg)
            node = child
            i += 1
        values = []
        route = _walk(self._root, segments, 0, n, method, h, suffix, values)
        if route is not None:
            return Match(route, _params(route.param_names, values))
        # Rare path (404/405): search again, collecting what refused the method.
        miss = _Miss()
        _collect(self._root, segments, 0, n, h, suffix, [], miss)
        if miss.route is not None:
            r = miss.route
            return Match(r, dict(zip(r.param_names, miss.values)), False, frozenset(miss.allowed))
        return None

    def _host_key(self, host: str) -> tuple[str, str | None]:
        h = canonical_host(host)
        dot = h.find(".")
        key = (h, h[dot:] if dot > 0 and self._has_wildcards else None)
        # Bounded, so a client cycling Host headers cannot grow it without limit.
        return self._hosts.put(host, key)

    def problems(self) -> list[str]:
        """Ambiguous and unreachable routes, for ``rolegate check``."""
        out: list[tuple[int, str]] = []
        stack = [self._root]
        while stack:
            node = stack.pop()
            for d in (node.terminal, node.catchall):
                if d is not None:
                    for table in d.all_tables():
                        out.extend(_table_problems(table.routes))
            stack.extend(node.literals.values())
            if node.param is not None:
                stack.append(node.param)
        # Stable order for people and tests: by the first route's config position.
        out.sort(key=lambda p: p[0])
        return [p[1] for p in out]


def _chain(root: _Node) -> None:
    """Set ``tail`` and ``end`` on every node heading a branchless chain (children first)."""
    order: list[_Node] = []
    stack = [root]
    while stack:  # pre-order; walked backwards below, so every child comes before its parent
        node = stack.pop()
        order.append(node)
        stack.extend(node.literals.values())
        if node.param is not None:
            stack.append(node.param)
    for node in reversed(order):
        if node.terminal is not None or node.catchall is not None:
            continue
        edges: list[tuple[str | None, _Node]] = list(node.literals.items())
        if node.param is not None:
            edges.append((None, node.param))
        if len(edges) != 1:
            continue
        seg, child = edges[0]
        if child.tail is not None:
            node.tail, node.end = (seg, *child.tail), child.end
        elif child.terminal is not None and child.catchall is None and not child.literals and child.param is None:
            node.tail, node.end = (seg,), child.terminal


def _params(names: tuple[str, ...], values: list[str]) -> dict[str, str]:
    """Name the values of a match (one parameter, the usual case, without building a zip)."""
    if len(names) == 1:
        return {names[0]: values[0]}
    return dict(zip(names, values)) if names else {}


def _walk(
    node: _Node,
    segments: tuple[str, ...],
    i: int,
    n: int,
    method: str,
    host: str | None,
    suffix: str | None,
    values: list[str],
) -> Route | None:
    """Depth-first search in precedence order: literal, ``{param}``, then ``**``.

    On success ``values`` holds the parameter values of the route returned.
    """
    if i == n:
        d = node.terminal
        if d is not None:
            r = d.pick(method, host, suffix)
            if r is not None:
                return r
    else:
        seg = segments[i]
        child = node.literals.get(seg)
        if child is not None:
            r = _walk(child, segments, i + 1, n, method, host, suffix, values)
            if r is not None:
                return r
        child = node.param
        if child is not None and seg:
            values.append(seg)
            r = _walk(child, segments, i + 1, n, method, host, suffix, values)
            if r is not None:
                return r
            values.pop()
    d = node.catchall
    if d is not None:
        return d.pick(method, host, suffix)
    return None


def _collect(
    node: _Node,
    segments: tuple[str, ...],
    i: int,
    n: int,
    host: str | None,
    suffix: str | None,
    values: list[str],
    miss: _Miss,
) -> None:
    """Visit, in the same order as ``_walk``, every dispatch matching path and host."""
    if i == n:
        if node.terminal is not None:
            for table in node.terminal.tables(host, suffix):
                _record_miss(table, values, miss)
    else:
        seg = segments[i]
        child = node.literals.get(seg)
        if child is not None:
            _collect(child, segments, i + 1, n, host, suffix, values, miss)
        if node.param is not None and seg:
            values.append(seg)
            _collect(node.param, segments, i + 1, n, host, suffix, values, miss)
            values.pop()
    if node.catchall is not None:
        for table in node.catchall.tables(host, suffix):
            _record_miss(table, values, miss)


def _record_miss(table: _Methods, values: list[str], miss: _Miss) -> None:
    if miss.route is None:
        miss.route = min(table.routes, key=lambda r: r.index)
        miss.values = tuple(values)
    if table.allowed is not None:
        miss.allowed |= table.allowed


def _table_problems(routes: list[Route]) -> list[tuple[int, str]]:
    """Problems among routes of equal path shape and equal host."""
    out: list[tuple[int, str]] = []
    covered: dict[str, Route] = {}
    any_route: Route | None = None
    for r in routes:
        if r.methods is None:
            if any_route is not None:
                out.append(
                    (
                        r.index,
                        f"{r.label}: can never match: {any_route.label} has the same path,"
                        " host and methods and comes first",
                    )
                )
            else:
                any_route = r
            continue
        clash = {m: covered[m] for m in r.methods if m in covered}
        if clash:
            others = sorted({o.index: o for o in clash.values()}.items())
            names = ", ".join(o.label for _, o in others)
            verbs = " ".join(sorted(clash))
            if len(clash) == len(r.methods):
                msg = f"{r.label}: can never match: methods {verbs} are already taken by {names} with equal specificity"
            else:
                msg = (
                    f"{r.label}: ambiguous with {names}: same path shape and host, both list"
                    f" {verbs}; the first in config order wins"
                )
            out.append((r.index, msg))
        for m in r.methods:
            covered.setdefault(m, r)
    return out


def _compile_route(spec: RouteSpec) -> tuple[Route | None, list[str]]:
    errs: list[str] = []
    shape, params = _parse_pattern(spec.path, errs)
    if spec.mode not in MODES:
        errs.append(f"mode {spec.mode!r} is not one of {', '.join(sorted(MODES))}")
    if spec.mode in ("enforce", "log") and not spec.permission:
        errs.append(f"mode {spec.mode!r} needs a permission")
    if spec.mode in ("authenticated", "public") and (spec.permission or spec.scope or spec.object):
        # A permission that is silently ignored would look like protection.
        errs.append(f"mode {spec.mode!r} does not check permission, scope or object; remove them")
    if spec.methods is not None:
        if not spec.methods:
            errs.append("methods is empty; omit it to allow any method")
        for m in sorted(spec.methods):
            if not _HTTP_TOKEN.fullmatch(m) or m != m.upper():
                errs.append(f"method {m!r} must be an upper-case HTTP method name")
    if spec.host is not None:
        host = spec.host.lower()
        bare = host[2:] if host.startswith("*.") else host
        if not _HOST_NAME.fullmatch(bare) or (host.startswith("*.") and "." not in bare):
            errs.append(f"host {spec.host!r} is not a host name or '*.domain' wildcard")
    templates: list[Template | None] = []
    placed, scope_text = placed_scope(spec.scope)
    if placed and (not scope_text or ":" not in scope_text or "{" not in scope_text):
        errs.append(f"scope {spec.scope!r}: 'of' names an object from the path, e.g. \"of workorder:{{id}}\"")
    for label, text in (("scope", scope_text), ("object", spec.object)):
        if text is None or shape is None:
            templates.append(None)
            continue
        tpl, terrs = Template.parse(text, params)
        errs.extend(f"{label} {e}" for e in terrs)
        templates.append(tpl)
    if errs or shape is None:
        return None, errs
    return Route(spec, shape, tuple(params), templates[0], templates[1]), []


OF = "of "


def placed_scope(text: str | None) -> tuple[bool, str | None]:
    """``"of workorder:{id}"`` -> (True, ``"workorder:{id}"``): the route's scope is the object itself, placed
    by the object directory; any other text -> (False, text)."""
    if text is not None and text.startswith(OF):
        return True, text[len(OF) :].strip()
    return False, text


def _parse_pattern(path: str, errs: list[str]) -> tuple[tuple[str | None, ...] | None, list[str]]:
    """Parse ``/a/{b}/**`` into a shape (``("a", None, "**")``) and parameter names."""
    before = len(errs)
    if not path.startswith("/"):
        errs.append(f"path {path!r} must start with '/'")
        return None, []
    if path == "/":
        return (), []
    parts = path[1:].split("/")
    shape: list[str | None] = []
    params: list[str] = []
    last = len(parts) - 1
    for i, seg in enumerate(parts):
        if seg == "**":
            if i != last:
                errs.append(f"path {path!r}: '**' is only allowed as the last segment")
            shape.append("**")
            continue
        m = _PARAM_SEGMENT.fullmatch(seg)
        if m is not None:
            name = m.group(1)
            if not _PARAM_NAME.fullmatch(name):
                errs.append(
                    f"path {path!r}: bad parameter name {{{name}}} (letters, digits and '_', not starting with a digit)"
                )
            elif name in params:
                errs.append(f"path {path!r}: parameter {{{name}}} appears twice")
            params.append(intern(name))  # one shared copy for every route
            shape.append(None)
            continue
        if seg == "":
            if i != last:
                errs.append(f"path {path!r}: empty segment ('//')")
            shape.append("")  # a trailing slash is a literal empty last segment
            continue
        if seg in (".", ".."):
            errs.append(f"path {path!r}: dot segment {seg!r} can never match a normalized path")
        elif "*" in seg:
            errs.append(f"path {path!r}: '*' is only allowed as a whole '**' last segment")
        elif "{" in seg or "}" in seg:
            errs.append(f"path {path!r}: segment {seg!r}: a parameter must be a whole segment ('{{name}}')")
        elif any(c in _FORBIDDEN_LITERAL for c in seg):
            errs.append(
                f"path {path!r}: segment {seg!r} contains a character a normalized path"
                " cannot carry ('%', ';', '\\', '?', '#' or a control character)"
            )
        shape.append(seg)
    if len(errs) > before:
        return None, params
    return tuple(shape), params
