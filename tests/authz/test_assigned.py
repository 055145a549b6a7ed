"""``on_assigned``: a role grants on objects an app assigned to the user ("their work orders"), and on the
customer an assigned work order lies in directly - never a sibling work order, never the region above."""

from __future__ import annotations

import pytest

from rolegate.authz import Identity, compile_policy, decide, effective_permissions
from rolegate.authz.explain import explain
from rolegate.authz.stored import Assigned
from rolegate.config.sections.policy import Role
from tests.authz.policies import make_config

BOB = Identity("bob", ["technicians"])
TRENT = Identity("trent", ["technicians"])


def cfg(on_assigned=None, **kw):
    return make_config(
        permissions=["workorders:view", "workorders:edit", "customers:view", "planning:view", "pricing:view"],
        roles={
            "technician": {
                "permissions": ["planning:view"],
                "deny": ["pricing:view"],
                "on_assigned": on_assigned
                if on_assigned is not None
                else {"workorder": ["workorders:view", "workorders:edit"], "customer": ["customers:view"]},
            },
            "regional_manager": {"permissions": ["workorders:view", "customers:view"]},
        },
        bindings=[
            {"group": "technicians", "role": "technician"},
            {"group": "north", "role": "regional_manager", "scope": "region:north"},
        ],
        scopes={
            "region": {},
            "customer": {"parent": "region", "members": {"c100": "north", "c200": "south"}},
            "workorder": {"parent": "customer"},
        },
        **kw,
    )


PLACED = {"workorder:1": "customer:c100", "workorder:2": "customer:c100", "workorder:3": "customer:c200"}
ASSIGNED = {"workorder:1": [Assigned("bob", "app:fieldservice", "2026-12-07T01:00:00+00:00")], "workorder:2": ["trent"]}


def policy(assignments=ASSIGNED, **kw):
    return compile_policy(cfg(**kw), scope_parents=PLACED, assignments=assignments)


def test_his_work_order_and_its_customer_only():
    p = policy()
    assert decide(p, BOB, "workorders:view", "workorder:1")
    assert decide(p, BOB, "workorders:edit", "workorder:1")
    assert not decide(p, BOB, "workorders:view", "workorder:2")  # trent's, same customer
    assert not decide(p, BOB, "workorders:view", "workorder:3")
    assert decide(p, BOB, "customers:view", "customer:c100")  # the customer his work order lies in
    assert not decide(p, BOB, "customers:view", "customer:c200")
    # The customer is reached for the customer's permissions only: not every work order of that customer.
    assert not decide(p, BOB, "workorders:view", "customer:c100")
    # Never further up, never everywhere.
    assert not decide(p, BOB, "customers:view", "region:north")
    assert not decide(p, BOB, "workorders:view", None)
    assert not decide(p, BOB, "customers:view", "workorder:1")  # customers:view is listed under customer only
    assert decide(p, TRENT, "workorders:view", "workorder:2") and not decide(p, TRENT, "workorders:view", "workorder:1")
    # A deny still wins; an assignment without the role grants nothing.
    assert not decide(p, BOB, "pricing:view", "workorder:1")
    assert not decide(p, Identity("bob", []), "workorders:view", "workorder:1")
    assert "workorders:view" in effective_permissions(p, BOB, "workorder:1")
    assert "workorders:view" not in effective_permissions(p, BOB, "workorder:2")


def test_without_the_assignment_nothing():
    """The defect on the old code: the technician role granted every work order to every technician."""
    p = policy(assignments={})
    assert not decide(p, BOB, "workorders:view", "workorder:1")
    assert not decide(p, BOB, "customers:view", "customer:c100")


def test_a_plain_list_is_the_assigned_object_itself():
    p = policy(on_assigned=["workorders:view", "customers:view"])
    assert Role(on_assigned=["workorders:view"]).on_assigned == {"*": ("workorders:view",)}
    assert decide(p, BOB, "workorders:view", "workorder:1")
    assert decide(p, BOB, "customers:view", "workorder:1")
    assert not decide(p, BOB, "customers:view", "customer:c100")  # no parent reach with a plain list
    assert not decide(p, BOB, "workorders:view", "workorder:2")


def test_route_object_assigned():
    """A route naming the object (``object: workorder:{id}``) at another scope."""
    p = policy(on_assigned=["workorders:view"])
    assert decide(p, BOB, "workorders:view", None, object="workorder:1")
    assert not decide(p, BOB, "workorders:view", None, object="workorder:2")


def test_explain_names_the_assignment_and_why_not():
    p = policy()
    yes = explain(p, BOB, "workorders:view", "workorder:1")
    assert yes.allowed
    assert any(
        "bob is assigned to workorder:1 (by app:fieldservice, at 2026-12-07T01:00:00+00:00)" in r
        and "role technician" in r
        for r in yes.reasons
    ), yes.reasons
    parent = explain(p, BOB, "customers:view", "customer:c100")
    assert any("customer:c100, where workorder:1 lies" in r for r in parent.reasons), parent.reasons
    no = explain(p, BOB, "workorders:view", "workorder:2")
    assert not no.allowed
    assert any(
        "role technician grants workorders:view only at a workorder assigned to the user" in r
        and "workorder:2 is neither" in r
        for r in no.reasons
    ), no.reasons


def test_memo_follows_the_policy():
    """A removed assignment is a new policy: nothing memoized in the old one answers for the new one."""
    before = policy()
    assert decide(before, BOB, "workorders:view", "workorder:1")
    after = policy(assignments={"workorder:2": ["trent"]})
    assert not decide(after, BOB, "workorders:view", "workorder:1")
    assert decide(before, BOB, "workorders:view", "workorder:1")  # the old one is unchanged (immutable)


def test_config_refuses_an_unknown_type(tmp_path):
    from rolegate.config import load_config
    from rolegate.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text(
        "server: {listen: 127.0.0.1:8080, public_url: http://x}\n"
        "permissions: [workorders:view]\n"
        "roles: {t: {on_assigned: {job: [workorders:view]}}}\n"
        "upstreams: {app: {url: 'http://127.0.0.1:1'}}\n"
        "routes: [{path: /x, permission: workorders:view, upstream: app}]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "on_assigned" in str(info.value) and "unknown scope type 'job'" in str(info.value)


def test_a_list_route_is_allowed_where_the_permission_is_held_somewhere():
    from rolegate.authz.explain import Requirement, decide_route

    p = policy()
    listed = Requirement("enforce", "workorders:view", None, None, listed=True)
    plain = Requirement("enforce", "workorders:view", None, None)
    yes = decide_route(p, BOB, listed)
    assert yes.allowed and "bob holds workorders:view at workorder:1" in yes.reasons[0], yes.reasons
    assert not decide_route(p, BOB, plain).allowed  # without lists: true, the global decision as ever
    grace = Identity("grace", ["north"])
    assert decide_route(p, grace, listed).allowed and "region:north" in decide_route(p, grace, listed).reasons[0]
    nobody = decide_route(p, Identity("walter", ["staff"]), listed)
    assert not nobody.allowed and "held nowhere" in nobody.reasons[-1], nobody.reasons
    # Memoized with the policy: a new policy (an assignment removed) decides afresh.
    assert not decide_route(policy(assignments={"workorder:2": ["trent"]}), BOB, listed).allowed


def test_lists_is_for_a_route_without_scope():
    from pydantic import ValidationError

    from rolegate.config.sections.routing import RouteConfig

    assert RouteConfig(path="/workorders", permission="workorders:view", upstream="app", lists=True).lists
    for bad in ({"scope": "customer:{c}"}, {"object": "workorder:{id}"}, {"permission": None, "mode": "public"}):
        with pytest.raises(ValidationError, match="lists: true is for a list route"):
            RouteConfig(**{"path": "/x/{c}", "permission": "workorders:view", "upstream": "app", "lists": True, **bad})
