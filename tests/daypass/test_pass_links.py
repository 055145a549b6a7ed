"""Issue 25, units: the pass home's link list and the `rolegate check` error for a landing a pass cannot open.

The link list is the GET routes whose permission the pass's role holds at its scope, with the scope's
parameters (path or query) filled in, titled from the route's ``title``; each is verified as a request
would be (a more specific route answering the same path wins). A template ``landing`` that a pass of it
could not open is refused by ``rolegate check`` (and at load), named, with the reason.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from rolegate.authz import Identity, compile_policy
from rolegate.cli import main as cli_main
from rolegate.config.loader import load_config_text
from rolegate.config.sections.policy import Binding
from rolegate.errors import ConfigError
from rolegate.identity.daypass.codes import code_from_link, new_code, well_formed
from rolegate.proxy.route_table import compile_routes_strict
from rolegate.server.runtime import Compiled

URL = "http://127.0.0.1:8080"
HOST = "127.0.0.1"
PASS_HOME = "/.rolegate/pass/home"


def pass_links(*args: Any, **kwargs: Any):
    from rolegate.identity.daypass.links import pass_links

    return pass_links(*args, **kwargs)


def landing_problems(*args: Any):
    from rolegate.identity.daypass.landing import landing_problems

    return landing_problems(*args)


def opens(*args: Any):
    from rolegate.identity.daypass.links import opens

    return opens(*args)


def where_held(*args: Any):
    from rolegate.authz.where import where_held

    return where_held(*args)


def base_config(**template: Any) -> dict[str, Any]:
    """Buildings a and b in client acme, c in globex; a subcontractor role for day passes."""
    return {
        "server": {"listen": "127.0.0.1:8080", "public_url": URL},
        "session": {"secret": "s" * 40},
        "scopes": {
            "client": {"description": "client"},
            "building": {"parent": "client", "members": {"a": "acme", "b": "acme", "c": "globex"}},
        },
        "permissions": ["workorders:view", "documents:view", "invoices:view", "dashboard:view"],
        "roles": {
            "subcontractor": {
                "permissions": ["workorders:view", "documents:view", "dashboard:view"],
                "deny": ["invoices:view"],
            }
        },
        "upstreams": {"app": {"url": "http://127.0.0.1:9"}},
        "routes": [
            {
                "path": "/workorders",
                "methods": ["GET"],
                "permission": "workorders:view",
                "scope": "building:{query.building}",
                "upstream": "app",
                "title": "Work orders",
            },
            {
                "path": "/buildings/{building}/dashboard",
                "methods": ["GET"],
                "permission": "dashboard:view",
                "scope": "building:{building}",
                "upstream": "app",
                "title": "Building dashboard",
            },
            {
                "path": "/buildings/{building}/documents/**",
                "methods": ["GET"],
                "permission": "documents:view",
                "scope": "building:{building}",
                "upstream": "app",
            },
            {
                "path": "/buildings/{building}/documents/**",
                "methods": ["POST"],
                "permission": "documents:view",
                "scope": "building:{building}",
                "upstream": "app",
                "title": "Upload (not a GET)",
            },
            {
                "path": "/buildings/{building}/workorders/{id}",
                "methods": ["GET"],
                "permission": "workorders:view",
                "scope": "building:{building}",
                "upstream": "app",
                "title": "One work order (needs an id)",
            },
            {
                "path": "/buildings/{building}/invoices",
                "methods": ["GET"],
                "permission": "invoices:view",
                "scope": "building:{building}",
                "upstream": "app",
                "title": "Invoices (denied)",
            },
            {
                "path": "/clients/{client}/overview",
                "methods": ["GET"],
                "permission": "dashboard:view",
                "scope": "client:{client}",
                "upstream": "app",
                "title": "Client overview",
            },
            {
                "path": "/sites/overview",
                "methods": ["GET"],
                "permission": "dashboard:view",
                "scope": "building:{header.X-Building}",
                "upstream": "app",
                "title": "From a header",
            },
            {
                "path": "/all-workorders",
                "methods": ["GET"],
                "permission": "workorders:view",
                "upstream": "app",
                "title": "Everywhere (unscoped)",
            },
            {"path": "/me", "mode": "authenticated", "upstream": "app", "title": "Me"},
            {"path": "/public/**", "mode": "public", "upstream": "app", "title": "Public"},
        ],
        "daypass": {
            "templates": {
                "subcontractor": {
                    "role": "subcontractor",
                    "scopes": ["building"],
                    "timezone": "Europe/Amsterdam",
                    **template,
                }
            }
        },
    }


def load(data: dict[str, Any]):
    return load_config_text(yaml.safe_dump(data, sort_keys=False), base_dir=Path("."))


def links_for(data: dict[str, Any], scope: str) -> list[tuple[str, str]]:
    config = load(data)
    routes = compile_routes_strict(config)
    policy = compile_policy(config, [Binding(daypass="p1", role="subcontractor", scope=scope)])
    identity = Identity("daypass:p1", (), daypass="p1")
    return [
        (link.title, link.target) for link in pass_links(config, routes, policy, identity, scope, HOST, 1_000_000.0)
    ]


def test_links_are_the_get_routes_the_pass_holds_at_its_scope_with_parameters_filled_in() -> None:
    assert links_for(base_config(), "building:a") == [
        ("Work orders", "/workorders?building=a"),  # scope from the query: filled in the query
        ("Building dashboard", "/buildings/a/dashboard"),  # scope from the path
        ("Documents", "/buildings/a/documents"),  # no title: its last path word; ** left out
    ]
    # Not listed: POST only, a parameter the scope cannot fill ({id}), a denied permission, a scope the
    # pass does not hold (the client above), a header scope, an unscoped route, authenticated/public routes.
    assert [t for t, _ in links_for(base_config(), "building:b")] == ["Work orders", "Building dashboard", "Documents"]
    assert ("Building dashboard", "/buildings/b/dashboard") in links_for(base_config(), "building:b")


def test_a_pass_for_a_client_lists_the_buildings_inside_it() -> None:
    data = base_config()
    data["daypass"]["templates"]["subcontractor"]["scopes"] = ["client"]
    assert links_for(data, "client:acme") == [
        ("Work orders", "/workorders?building=a"),
        ("Work orders", "/workorders?building=b"),
        ("Building dashboard", "/buildings/a/dashboard"),
        ("Building dashboard", "/buildings/b/dashboard"),
        ("Documents", "/buildings/a/documents"),
        ("Documents", "/buildings/b/documents"),
        ("Client overview", "/clients/acme/overview"),
    ]


def test_a_link_another_route_answers_is_not_listed() -> None:
    # /buildings/a/documents is answered by this more specific route (invoices:view, denied), not by
    # the documents/** route the link was made from: listing it would lead to a 403.
    data = base_config()
    data["routes"].insert(
        0,
        {
            "path": "/buildings/{building}/documents",
            "methods": ["GET"],
            "permission": "invoices:view",
            "scope": "building:{building}",
            "upstream": "app",
        },
    )
    assert [target for _, target in links_for(data, "building:a")] == [
        "/workorders?building=a",
        "/buildings/a/dashboard",
    ]


def test_scope_ids_are_escaped_in_links() -> None:
    assert links_for(base_config(), "building:a&b") == [
        ("Work orders", "/workorders?building=a%26b"),
        ("Building dashboard", "/buildings/a%26b/dashboard"),
        ("Documents", "/buildings/a%26b/documents"),
    ]
    # An id with a "/" cannot be one path segment (rolegate refuses %2F): only the query link is left.
    assert links_for(base_config(), "building:a/b") == [("Work orders", "/workorders?building=a%2Fb")]


def test_route_title_is_validated() -> None:
    assert load(base_config()).routes[0].title == "Work orders"
    data = base_config()
    data["routes"][0]["title"] = "two\nlines"
    with pytest.raises(ConfigError, match="title"):
        load(data)


def test_the_pass_home_is_never_a_code() -> None:
    from rolegate.identity.daypass.codes import PASS_HOME as home

    assert home == PASS_HOME
    assert not well_formed("home") and code_from_link(URL + PASS_HOME) is None
    assert all(well_formed(new_code()) for _ in range(100))


# -- the landing check --------------------------------------------------------------------------------


def check(data: dict[str, Any], tmp_path: Path, capsys) -> tuple[int, str]:
    """`rolegate check` on ``data`` (route titles left out: the landing alone is under test)."""
    data = copy.deepcopy(data)
    for route in data["routes"]:
        route.pop("title", None)
    path = tmp_path / "rolegate.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        code = cli_main(["check", "-c", str(path)])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out + out.err


def test_check_accepts_no_landing_and_landings_every_pass_opens(tmp_path: Path, capsys) -> None:
    for landing in (
        None,
        "/buildings/{building}/dashboard",
        "/workorders?building={building}",
        "/buildings/{building}/documents/safety-plan",
        "/public/help",
        "/me",
    ):
        template = {} if landing is None else {"landing": landing}
        code, out = check(base_config(**template), tmp_path, capsys)
        assert code == 0, (landing, out)


@pytest.mark.parametrize(
    "landing,reason",
    [
        ("/", "no route answers GET /"),
        ("/all-workorders", "needs workorders:view everywhere"),
        (
            "/buildings/a/dashboard",
            "needs dashboard:view at building:a, and the pass holds role subcontractor at its own building only",
        ),
        (
            "/buildings/{building}/invoices",
            "needs invoices:view at building:{building}, which role subcontractor does not grant",
        ),
        ("/clients/{building}/overview", "needs dashboard:view at client:{building}"),
        ("/buildings/{building}/workorders", "no route answers GET /buildings/{building}/workorders"),
    ],
)
def test_check_refuses_a_landing_the_pass_cannot_open(tmp_path: Path, capsys, landing: str, reason: str) -> None:
    code, out = check(base_config(landing=landing), tmp_path, capsys)
    assert code == 2, out
    assert "daypass.templates.subcontractor.landing" in out and "a pass of template 'subcontractor'" in out
    assert reason in out, out
    assert PASS_HOME in out  # the way out: leave landing out
    # `serve` and a reload build the same Compiled: they refuse it too.
    with pytest.raises(ConfigError, match="cannot open"):
        Compiled(load(base_config(landing=landing)))


def test_landing_placeholders_must_be_the_pass_scope(tmp_path: Path, capsys) -> None:
    code, out = check(base_config(landing="/buildings/{client}/dashboard"), tmp_path, capsys)
    assert code == 2 and "names {client}" in out, out
    two_types = base_config(landing="/buildings/{building}/dashboard")
    two_types["daypass"]["templates"]["subcontractor"]["scopes"] = ["building", "client"]
    code, out = check(two_types, tmp_path, capsys)
    assert code == 2 and "a pass for a client cannot fill" in out, out


def test_landing_problems_names_each_template() -> None:
    data = base_config(landing="/buildings/{building}/dashboard")
    data["daypass"]["templates"]["visitor"] = copy.deepcopy(data["daypass"]["templates"]["subcontractor"])
    data["daypass"]["templates"]["visitor"]["landing"] = "/all-workorders"
    config = load(data)
    problems = landing_problems(config, compile_routes_strict(config))
    assert len(problems) == 1 and "template 'visitor'" in problems[0], problems


def test_fill_landing() -> None:
    from rolegate.identity.daypass.landing import fill_landing

    assert fill_landing("/buildings/{building}/dashboard", "building:a") == "/buildings/a/dashboard"
    assert fill_landing("/w?b={building}", "building:a/b") == "/w?b=a%2Fb"
    assert fill_landing("/clients/{client}", "building:a") is None


# -- the examples: every template lands on a page its passes open ---------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
LAB_ENV = {
    "ROLEGATE_LISTEN": "127.0.0.1:8080",
    "ROLEGATE_PUBLIC_URL": URL,
    "ROLEGATE_INTERNAL_LISTEN": "127.0.0.1:9090",
    "ROLEGATE_DATA": "/tmp/rolegate-lab-data",
    "ROLEGATE_OIDC_ISSUER": "http://127.0.0.1:9000",
    "ROLEGATE_OIDC_SECRET": "s",
    "LAB_BACKEND_URL": "http://127.0.0.1:8081",
    "LAB_LDAP_URL": "ldap://127.0.0.1:3890",
    "LDAP_PASSWORD": "x",
    "ROLEGATE_SESSION_SECRET": "x" * 48,
}


@pytest.mark.parametrize(
    "example,scope,landing,expected",
    [
        # The quickstart: the subcontractor lands on the pass home, which lists their building's pages.
        (
            "lab.yaml",
            "building:a",
            None,
            [("Building dashboard", "/buildings/a/dashboard"), ("Building documents", "/buildings/a/documents")],
        ),
        (
            "building-safety.yaml",
            "building:b",
            "/buildings/{building}/dashboard",
            [
                ("Building dashboard", "/buildings/b/dashboard"),
                ("Risk assessment", "/buildings/b/risk-assessment"),
                ("Task history", "/buildings/b/tasks/history"),
            ],
        ),
        # A subcontractor's pass at a customer holds workorders:view there: the list route /workorders opens
        # (lists: true) with the where claim naming that customer alone, so the backend lists its work orders and
        # no other - the same list as /customers/acme/workorders, both shown (issue 19; checked below).
        (
            "field-service.yaml",
            "customer:acme",
            None,
            [("Work orders", "/workorders"), ("Work orders of the customer", "/customers/acme/workorders")],
        ),
    ],
)
def test_the_examples_land_their_passes_on_a_page_they_open(
    example: str, scope: str, landing: str | None, expected: list[tuple[str, str]]
) -> None:
    from rolegate.config import load_config

    config = load_config(EXAMPLES / example, env=LAB_ENV)
    routes = compile_routes_strict(config)
    assert landing_problems(config, routes) == []
    [template] = config.daypass.templates.values()
    assert template.landing == landing
    policy = compile_policy(config, [Binding(daypass="p1", role=template.role, scope=scope)])
    identity = Identity("daypass:p1", (), daypass="p1")
    links = pass_links(config, routes, policy, identity, scope, HOST, 1_000_000.0)
    assert [(link.title, link.target) for link in links] == expected
    for link in links:
        route = opens(routes, policy, identity, HOST, link.target, 1_000_000.0).route
        if getattr(route, "lists", False):  # a list the pass opens names only the pass's scope for the backend
            where = where_held(policy, identity, route.permission, 1_000_000.0)
            assert (where["all"], where["scopes"], where["assigned"]) == (False, [scope], []), where
