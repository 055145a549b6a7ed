"""Tests for rolegate.proxy.routes: compilation, precedence, 405, problems()."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import unquote

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from rolegate.errors import AmbiguousPath, ConfigError
from rolegate.proxy.paths import normalize_path, split_segments
from rolegate.proxy import routes as routes_module
from rolegate.proxy.routes import Match, Route, RouteSpec, RouteTable, Template, canonical_host


def spec(path: str, methods: str | None = None, **kw: object) -> RouteSpec:
    kw.setdefault("mode", "public")
    return RouteSpec(path, frozenset(methods.split()) if methods else None, **kw)  # type: ignore[arg-type]


def table(*specs: RouteSpec) -> RouteTable:
    # Give each spec its position, as the config loader does.
    return RouteTable.compile([replace(s, index=i) for i, s in enumerate(specs)])


def hit(t: RouteTable, path: str, method: str = "GET", host: str | None = None) -> Match | None:
    return t.match(method, host, split_segments(normalize_path(path)))


def which(t: RouteTable, path: str, method: str = "GET", host: str | None = None) -> str | None:
    m = hit(t, path, method, host)
    if m is None:
        return None
    return m.route.path if m.method_allowed else f"405 {m.route.path}"


# --- RouteSpec -------------------------------------------------------------------


def test_spec_defaults_and_names() -> None:
    s = RouteSpec("/buildings/{building}/dashboard", frozenset({"GET"}), permission="p")
    assert s.name == "GET /buildings/{building}/dashboard"
    assert s.mode == "enforce"
    assert RouteSpec("/x", ["POST", "GET"], host="a.example.com").name == "GET POST a.example.com/x"  # type: ignore[arg-type]
    assert RouteSpec("/x").name == "* /x"
    assert RouteSpec("/x", name="mine").name == "mine"
    assert RouteSpec("/x", source="config.yaml:42").label == "config.yaml:42 (* /x)"
    assert RouteSpec("/x", index=3).label == "routes[3] (* /x)"


# --- precedence --------------------------------------------------------------------


def test_literal_beats_param_beats_catchall_regardless_of_order() -> None:
    t = table(spec("/a/**"), spec("/a/{x}"), spec("/a/b"), spec("/**"))
    assert which(t, "/a/b") == "/a/b"
    assert which(t, "/a/c") == "/a/{x}"
    assert which(t, "/a/c/d") == "/a/**"
    assert which(t, "/a") == "/a/**"  # "**" matches zero segments
    assert which(t, "/zzz") == "/**"
    assert which(t, "/") == "/**"


def test_precedence_is_decided_segment_by_segment() -> None:
    t = table(spec("/{x}/b/c"), spec("/a/{y}/{z}"), spec("/a/b/**"))
    # the literal at the first differing position wins, whatever follows
    assert which(t, "/a/b/c") == "/a/b/**"
    assert which(t, "/a/q/c") == "/a/{y}/{z}"
    assert which(t, "/q/b/c") == "/{x}/b/c"


def test_backtracks_when_the_literal_branch_fails() -> None:
    t = table(spec("/a/b/c"), spec("/a/{x}/d"))
    assert which(t, "/a/b/d") == "/a/{x}/d"
    m = hit(t, "/a/b/d")
    assert m is not None and m.params == {"x": "b"}


def test_params_are_decoded_and_named_per_route() -> None:
    t = table(spec("/tasks/{task}/controls/{control}/perform", "POST"))
    m = hit(t, "/tasks/4%202/controls/%C3%A9/perform", "POST")
    assert m is not None and m.method_allowed
    assert m.params == {"task": "4 2", "control": "\u00e9"}


def test_param_never_matches_an_empty_segment() -> None:
    t = table(spec("/a/{x}"), spec("/a/"))
    assert which(t, "/a/") == "/a/"
    t2 = table(spec("/a/{x}"))
    assert which(t2, "/a/") is None


def test_trailing_slash_is_significant() -> None:
    t = table(spec("/a"), spec("/b/"))
    assert which(t, "/a") == "/a"
    assert which(t, "/a/") is None
    assert which(t, "/b/") == "/b/"
    assert which(t, "/b") is None


def test_a_branchless_chain_is_matched_in_one_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # /r1 heads a chain of single children down to one route: a hit compares the rest of the
    # path with the chain's shape and never enters the recursive search.
    t = table(spec("/r1/buildings/{b}/things", "GET"), spec("/r2/{x}"), spec("/r3/**"))
    searched = []
    monkeypatch.setattr(routes_module, "_walk", lambda *a: searched.append(a) or None)
    m = hit(t, "/r1/buildings/b%2017/things")
    assert m is not None and m.route.path == "/r1/buildings/{b}/things" and m.params == {"b": "b 17"}
    assert searched == []
    monkeypatch.undo()
    # Everything the chain refuses goes to the full search, with the same answer as before.
    for path in (
        "/r1/buildings//things",
        "/r1/buildings/x/other",
        "/r1/buildings/x",
        "/r1/buildings/x/things/more",
        "/r1/Buildings/x/things",
    ):
        assert which(t, path) is None, path
    assert which(t, "/r1/buildings/x/things", "POST") == "405 /r1/buildings/{b}/things"
    assert which(t, "/r1/buildings/x/things", "HEAD") == "/r1/buildings/{b}/things"
    # A node holding a route, or a catch-all, ends a chain: precedence is unchanged.
    t2 = table(spec("/r1/buildings/{b}/things", "GET"), spec("/r1/**"), spec("/r1/buildings"))
    assert which(t2, "/r1/buildings/x/things") == "/r1/buildings/{b}/things"
    assert which(t2, "/r1/buildings/x/other") == "/r1/**"
    assert which(t2, "/r1/buildings") == "/r1/buildings"


def test_root_route() -> None:
    t = table(spec("/"))
    assert which(t, "/") == "/"
    assert which(t, "/a") is None


def test_host_specific_beats_hostless_and_exact_beats_wildcard() -> None:
    t = table(
        spec("/x", name="any"),
        spec("/x", host="*.example.com", name="wild"),
        spec("/x", host="app.example.com", name="exact"),
    )

    def name(host: str | None) -> str | None:
        m = hit(t, "/x", host=host)
        return m.route.name if m else None

    assert name("app.example.com") == "exact"
    assert name("APP.Example.COM:8443") == "exact"
    assert name("app.example.com.") == "exact"
    assert name("other.example.com") == "wild"
    assert name("a.b.example.com") == "any"  # a wildcard covers one label only
    assert name("example.com") == "any"
    assert name("evil.com") == "any"
    assert name(None) == "any"


def test_path_specificity_comes_before_host() -> None:
    t = table(spec("/**", host="app.example.com"), spec("/admin/{x}"))
    assert which(t, "/admin/users", host="app.example.com") == "/admin/{x}"
    assert which(t, "/other", host="app.example.com") == "/**"
    assert which(t, "/other", host="else.example.com") is None


def test_host_routes_do_not_match_other_hosts() -> None:
    t = table(spec("/x", host="a.example.com"), spec("/y", host="*.example.com"))
    assert which(t, "/x", host="b.example.com") is None
    assert which(t, "/x") is None
    assert which(t, "/y", host="b.example.com") == "/y"
    assert which(t, "/y", host="[::1]:8080") is None


def test_listed_method_beats_any_method() -> None:
    t = table(spec("/x", name="any"), spec("/x", "POST", name="post"))
    assert hit(t, "/x", "POST").route.name == "post"  # type: ignore[union-attr]
    assert hit(t, "/x", "GET").route.name == "any"  # type: ignore[union-attr]


def test_get_answers_head_unless_head_is_listed() -> None:
    t = table(spec("/x", "GET"))
    assert which(t, "/x", "HEAD") == "/x"
    t2 = table(spec("/x", "GET", name="get"), spec("/x", "HEAD", name="head"), spec("/x", name="any"))
    assert hit(t2, "/x", "HEAD").route.name == "head"  # type: ignore[union-attr]
    t3 = table(spec("/x", "GET", name="get"), spec("/x", name="any"))
    assert hit(t3, "/x", "HEAD").route.name == "get"  # type: ignore[union-attr]


def test_methods_are_case_sensitive() -> None:
    t = table(spec("/x", "GET"))
    m = hit(t, "/x", "get")
    assert m is not None and not m.method_allowed


def test_wrong_method_falls_through_to_a_less_specific_route() -> None:
    t = table(spec("/invoices/{id}/pay", "POST"), spec("/invoices/**"))
    assert which(t, "/invoices/1/pay", "POST") == "/invoices/{id}/pay"
    assert which(t, "/invoices/1/pay", "GET") == "/invoices/**"


def test_method_not_allowed_is_told_apart_from_no_match() -> None:
    t = table(
        spec("/docs/{b}/**", "POST PUT"),
        spec("/docs/{b}/x", "DELETE"),
        spec("/docs/{b}/x", "GET", host="other.example.com"),
    )
    m = hit(t, "/docs/a/x", "PATCH")
    assert m is not None and not m.method_allowed
    assert m.route.path == "/docs/{b}/x"  # the most specific path that matched
    assert m.params == {"b": "a"}
    assert m.allowed_methods == frozenset({"POST", "PUT", "DELETE"})
    m = hit(t, "/docs/a/x", "GET", host="other.example.com")
    assert m is not None and m.method_allowed and m.route.host == "other.example.com"
    m = hit(t, "/docs/a/x", "HEAD", host="other.example.com")
    assert m is not None and m.method_allowed
    assert which(t, "/elsewhere", "PATCH") is None


def test_canonical_host() -> None:
    assert canonical_host("App.Example.com:8080") == "app.example.com"
    assert canonical_host("example.com.") == "example.com"
    assert canonical_host("[::1]:443") == "[::1]"
    assert canonical_host("[::1]") == "[::1]"


def test_route_carries_the_spec_fields() -> None:
    redact = {"fields": ["amount"], "unless": "pricing:view"}
    t = RouteTable.compile(
        [
            RouteSpec(
                "/invoices/**",
                upstream="app",
                permission="invoices:view",
                redact=redact,
                source="config.yaml:9",
                index=4,
            )
        ]
    )
    m = t.match("GET", None, ("invoices", "7"))
    assert m is not None
    r = m.route
    assert isinstance(r, Route)
    assert (r.upstream, r.mode, r.permission, r.redact, r.source, r.index) == (
        "app",
        "enforce",
        "invoices:view",
        redact,
        "config.yaml:9",
        4,
    )
    assert m.params == {}


# --- templates ---------------------------------------------------------------------


def test_templates_resolve_params_query_and_headers() -> None:
    t = RouteTable.compile(
        [
            RouteSpec(
                "/buildings/{building}/tasks/{task}",
                permission="p",
                scope="building:{building}",
                object="task:{task}",
            )
        ]
    )
    m = t.match("GET", None, ("buildings", "a", "tasks", "42"))
    assert m is not None
    r = m.route
    q = {"client": "acme", "empty": ""}.get
    h = {"X-Region": "north"}.get
    assert r.resolve(r.scope, m.params, q, h) == "building:a"  # type: ignore[arg-type]
    assert r.resolve(r.object_template, m.params, q, h) == "task:42"  # type: ignore[arg-type]
    assert r.resolve("client:{query.client}", m.params, q, h) == "client:acme"
    assert r.resolve("region:{header.X-Region}", m.params, q, h) == "region:north"
    assert r.resolve("{building}-{task}", m.params, q, h) == "a-42"
    # missing or empty values resolve to None: the caller denies
    assert r.resolve("client:{query.missing}", m.params, q, h) is None
    assert r.resolve("client:{query.empty}", m.params, q, h) is None
    assert r.resolve("r:{header.X-Missing}", m.params, q, h) is None
    with pytest.raises(ConfigError):
        r.resolve("x:{nope}", m.params, q, h)


def test_template_parse_errors() -> None:
    assert Template.parse("building:{building}", ["building"])[0] is not None
    for text in ("b:{x}", "b:{building", "b:building}", "b:{}", "b:{query.}", "b:{header.a b}"):
        tpl, problems = Template.parse(text, ["building"])
        assert tpl is None and problems, text


# --- compile errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "fragment"),
    [
        (RouteSpec("/a/**/b", permission="p"), "'**' is only allowed as the last"),
        (RouteSpec("/a/{x}/{x}", permission="p"), "appears twice"),
        (RouteSpec("/a//b", permission="p"), "empty segment"),
        (RouteSpec("/{1x}", permission="p"), "bad parameter name"),
        (RouteSpec("/{a-b}", permission="p"), "bad parameter name"),
        (RouteSpec("/{}", permission="p"), "bad parameter name"),
        (RouteSpec("/file.{ext}", permission="p"), "whole segment"),
        (RouteSpec("/a/*", permission="p"), "'*'"),
        (RouteSpec("/a/b**", permission="p"), "'*'"),
        (RouteSpec("a/b", permission="p"), "must start with '/'"),
        (RouteSpec("/a/../b", permission="p"), "dot segment"),
        (RouteSpec("/a%2Fb", permission="p"), "cannot carry"),
        (RouteSpec("/a;b", permission="p"), "cannot carry"),
        (RouteSpec("/a", mode="audit", permission="p"), "mode 'audit'"),
        (RouteSpec("/a"), "needs a permission"),
        (RouteSpec("/a", mode="public", permission="p"), "does not check permission"),
        (RouteSpec("/a", frozenset({"get"}), permission="p"), "upper-case"),
        (RouteSpec("/a", frozenset(), permission="p"), "methods is empty"),
        (RouteSpec("/a", host="bad host", permission="p"), "host"),
        (RouteSpec("/a", host="*.com.", permission="p"), "host"),
        (RouteSpec("/a", host="*", permission="p"), "host"),
        (RouteSpec("/a/{x}", permission="p", scope="b:{y}"), "{y} is not a path parameter"),
        (RouteSpec("/a/{x}", permission="p", object="t:{x"), "unbalanced"),
    ],
)
def test_invalid_routes_are_config_errors(route: RouteSpec, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        RouteTable.compile([route])
    assert any(fragment in p for p in info.value.problems), info.value.problems


def test_every_invalid_route_is_reported_with_its_source() -> None:
    with pytest.raises(ConfigError) as info:
        RouteTable.compile(
            [
                RouteSpec("/ok", permission="p", source="c.yaml:1"),
                RouteSpec("/a/**/b", permission="p", source="c.yaml:5"),
                RouteSpec("/a/{x}/{x}", permission="p", index=7),
            ]
        )
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("c.yaml:5 (* /a/**/b): ")
    assert problems[1].startswith("routes[7] (* /a/{x}/{x}): ")


# --- problems() -------------------------------------------------------------------------


def test_no_problems_for_a_clean_table() -> None:
    t = table(
        spec("/a/{x}", "GET"),
        spec("/a/{x}", "POST"),
        spec("/a/{x}"),
        spec("/a/b", "GET"),
        spec("/a/**", "GET"),
        spec("/a/{x}", "GET", host="h.example.com"),
        spec("/a/{x}", "GET", host="*.example.com"),
    )
    assert t.problems() == []


def test_ambiguous_routes_are_named_both() -> None:
    t = table(
        spec("/a/{x}", "GET POST", source="c.yaml:1"),
        spec("/a/{y}", "POST PUT", source="c.yaml:9"),
    )
    (problem,) = t.problems()
    assert "c.yaml:9" in problem and "c.yaml:1" in problem and "ambiguous" in problem
    assert "POST" in problem


def test_unreachable_routes() -> None:
    t = table(
        spec("/a/**", source="c.yaml:1"),
        spec("/a/**", source="c.yaml:2"),  # exact duplicate
        spec("/b", "GET", source="c.yaml:3"),
        spec("/b", "POST", source="c.yaml:4"),
        spec("/b", "GET POST", source="c.yaml:5"),  # covered by the two before
        spec("/c/{x}", "GET", host="h.example.com", source="c.yaml:6"),
        spec("/c/{y}", "GET", host="H.example.com", source="c.yaml:7"),  # same host
    )
    problems = t.problems()
    assert len(problems) == 3, problems
    assert problems[0].startswith("c.yaml:2") and "never match" in problems[0]
    assert "c.yaml:1" in problems[0]
    assert problems[1].startswith("c.yaml:5") and "never match" in problems[1]
    assert "c.yaml:3" in problems[1] and "c.yaml:4" in problems[1]
    assert problems[2].startswith("c.yaml:7") and "c.yaml:6" in problems[2]


def test_ambiguous_routes_resolve_by_config_order() -> None:
    t = table(spec("/a/{x}", "GET", name="first"), spec("/a/{y}", "GET", name="second"))
    m = hit(t, "/a/1")
    assert m is not None and m.route.name == "first" and m.params == {"x": "1"}


# --- lookup cost --------------------------------------------------------------------


def test_lookup_work_does_not_grow_with_route_count(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0

    def counting(fn):  # type: ignore[no-untyped-def]
        def wrapper(*args):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            return fn(*args)

        return wrapper

    def specs(n: int) -> list[RouteSpec]:
        out = [spec("/buildings/{b}/dashboard", "GET"), spec("/static/**")]
        out += [spec(f"/svc{i}/{{id}}/items/**", "GET POST") for i in range(n)]
        out += [spec(f"/x/{i}", "GET", host=f"h{i}.example.com") for i in range(n)]
        return out

    small, large = RouteTable.compile(specs(5)), RouteTable.compile(specs(5000))
    # The search recurses through module globals, so patching them counts every step.
    monkeypatch.setattr(routes_module, "_walk", counting(routes_module._walk))
    monkeypatch.setattr(routes_module, "_collect", counting(routes_module._collect))
    counts = []
    for t in (small, large):
        calls = 0
        for p, method in (
            ("/buildings/a/dashboard", "GET"),
            ("/svc3/1/items/a/b", "GET"),
            ("/x/3", "GET"),
            ("/x/3", "POST"),
            ("/nothing/here", "GET"),
        ):
            hit(t, p, method, host="h3.example.com")
        counts.append(calls)
    assert counts[0] == counts[1]


# --- the security property ---------------------------------------------------------

_HOSTS = [None, "x.example.com", "*.example.com", "y.example.com"]
_METHOD_SETS = [
    None,
    frozenset({"GET"}),
    frozenset({"POST"}),
    frozenset({"HEAD"}),
    frozenset({"GET", "POST"}),
    frozenset({"PUT", "DELETE"}),
]


@st.composite
def route_specs(draw: st.DrawFn) -> list[RouteSpec]:
    specs = []
    for i in range(draw(st.integers(1, 12))):
        n = draw(st.integers(0, 4))
        segs: list[str] = []
        for j in range(n):
            kind = draw(st.sampled_from(["lit", "lit", "param"]))
            if kind == "lit":
                segs.append(draw(st.sampled_from(["a", "b", "c", "a b", "\u00e9", "%", ".x"])))
            else:
                segs.append("{" + draw(st.sampled_from(["p", "q"])) + str(j) + "}")
        tail = draw(st.sampled_from(["", "", "/**", "/"]))
        path = "/" + "/".join(segs) + tail if segs else "/" + tail.lstrip("/")
        if "%" in path:  # a pattern cannot name a literal "%"; keep the draw valid
            path = path.replace("%", "p")
        specs.append(
            RouteSpec(
                path,
                draw(st.sampled_from(_METHOD_SETS)),
                host=draw(st.sampled_from(_HOSTS)),
                mode="public",
                index=i,
            )
        )
    return specs


_RAW_SEGMENTS = st.sampled_from(
    [
        "a",
        "b",
        "c",
        "%61",
        "%62",
        ".",
        "..",
        "",
        "%2e",
        "d",
        "%252e",
        "a%20b",
        "a b",
        "%C3%A9",
        "\u00e9",
        "%25",
        ".x",
        "%2ex",
        "%2F",
        "a;b",
        "%3B",
    ]
)
_REQ_HOSTS = [None, "x.example.com", "X.Example.com:8080", "z.example.com", "a.b.example.com", "example.com"]


def _reference(
    specs: list[RouteSpec], method: str, host: str | None, segments: tuple[str, ...]
) -> tuple[int, dict[str, str], bool] | None:
    """A slow, obviously-correct matcher: try every route, keep the most specific."""
    h = canonical_host(host) if host is not None else None
    accepted, path_host = [], []
    for s in specs:
        parts = [] if s.path == "/" else s.path[1:].split("/")
        kinds: list[int] = []
        params: dict[str, str] = {}
        ok = True
        for k, p in enumerate(parts):
            if p == "**":
                kinds.append(2)
                break
            if k >= len(segments):
                ok = False
                break
            if p.startswith("{"):
                if not segments[k]:
                    ok = False
                    break
                params[p[1:-1]] = segments[k]
                kinds.append(1)
            elif p == segments[k]:
                kinds.append(0)
            else:
                ok = False
                break
        else:
            if len(parts) != len(segments):
                ok = False
            kinds.append(0)
        if not ok:
            continue
        if s.host is None:
            host_rank = 2
        elif s.host.startswith("*."):
            if h is None or not h.endswith(s.host[1:]) or "." in h[: -len(s.host) + 1]:
                continue
            host_rank = 1
        else:
            if h != s.host:
                continue
            host_rank = 0
        path_host.append((kinds, host_rank, s.index, s, params))
        if s.methods is None:
            method_rank = 2
        elif method in s.methods:
            method_rank = 0
        elif method == "HEAD" and "GET" in s.methods:
            method_rank = 1
        else:
            continue
        accepted.append((kinds, host_rank, method_rank, s.index, params))
    if accepted:
        best = min(accepted, key=lambda c: c[:4])
        return best[3], best[4], True
    if path_host:
        best2 = min(path_host, key=lambda c: c[:3])
        return best2[2], best2[4], False
    return None


@settings(max_examples=1500, deadline=None)
@given(
    route_specs(),
    st.lists(_RAW_SEGMENTS, max_size=5).map(lambda ss: "/" + "/".join(ss)),
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH"]),
    st.sampled_from(_REQ_HOSTS),
)
def test_authorized_route_is_the_forwarded_route(
    specs: list[RouteSpec], raw: str, method: str, host: str | None
) -> None:
    t = RouteTable.compile(specs)
    try:
        forwarded = normalize_path(raw)
    except AmbiguousPath:
        return
    segments = split_segments(forwarded)
    m = t.match(method, host, segments)

    # The trie agrees with a brute-force matcher over every route.
    ref = _reference(specs, method, host, segments)
    event("no match" if ref is None else "matched" if ref[2] else "405")
    if ref is None:
        assert m is None
        return
    assert m is not None
    assert (m.route.index, m.params, m.method_allowed) == ref

    # The forwarded path, seen again by rolegate, is the same route with the same params.
    again = t.match(method, host, split_segments(normalize_path(forwarded)))
    assert again is not None and again.route is m.route and again.params == m.params

    # An upstream decodes the forwarded path once: it sees exactly our segments,
    # so it routes the request as the route rolegate authorized, never another.
    decoded = unquote(forwarded, errors="strict")
    upstream_segments = () if decoded == "/" else tuple(decoded[1:].split("/"))
    assert upstream_segments == segments

    # Even re-normalizing the upstream's decoded view lands on the same route,
    # unless the client double-encoded ("%25"), which stays literal by design.
    if "%25" not in forwarded:
        try:
            renormalized = normalize_path(decoded)
        except AmbiguousPath:
            return
        m2 = t.match(method, host, split_segments(renormalized))
        assert m2 is not None and m2.route is m.route and m2.params == m.params
