"""Delegation by roles, in process: what each person of seed 001 may hand out, where, and the guards.

Pure (no lab): the building-safety example config compiled with a few stored bindings, and the actor
the admin API would build for each person. The same rules are driven over HTTP in tests/admin/test_api.py
and through ``rolegate serve`` in tests/seeds/.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from rolegate.admin.delegation import (
    check_binding,
    check_not_own_powers,
    check_role_definition,
    check_setting,
    choices,
    grant_scope,
    manages_anything,
)
from rolegate.admin.errors import Denied
from rolegate.admin.guard import Actor
from rolegate.admin.state import DynamicState, Doc, compile_state
from rolegate.config import load_config
from rolegate.config.sections.policy import Binding

ROOT = Path(__file__).resolve().parents[2]
GROUPS = {
    "alice": {"bs-admins"},
    "carol": {"bs-responsible-a", "bs-users"},
    "dave": {"bs-risk-assessors", "bs-users"},
    "heidi": {"bs-users"},
    "zed": set(),
}


@pytest.fixture(scope="module")
def config():
    return load_config(ROOT / "config/examples/building-safety.yaml")


def actor(config, name: str, state: DynamicState | None = None) -> Actor:
    from rolegate.authz import Identity

    policy = compile_state(config, state or DynamicState())
    return Actor(SimpleNamespace(username=name), Identity(name, GROUPS[name]), policy, "csrf")


def refused(fn, *args) -> str:
    with pytest.raises(Denied) as info:
        fn(*args)
    return info.value.message


def test_admin_administers(config):
    """Issue 18: "Admins cannot administer" - the admin appoints a risk assessor, adds an admin to a client,
    switches any setting anywhere, assigns any permission on a task."""
    alice = actor(config, "alice")
    p = alice.policy
    check_binding(alice, p, Binding(user="heidi", role="risk_assessor", scope="building:a"))
    check_binding(alice, p, Binding(user="dave", role="client_admin", scope="client:acme"))
    check_binding(alice, p, Binding(group="bs-users", role="risk_assessor"))
    check_setting(alice, p, "documents_edit", None)
    check_binding(alice, p, Binding(user="heidi", permission="controls:perform", object="task:77"))
    assert grant_scope(alice, p, Binding(user="heidi", permission="controls:perform", object="task:77")) is None


def test_a_responsible_manages_their_building_only(config):
    carol = actor(config, "carol")
    p = carol.policy
    check_binding(carol, p, Binding(user="heidi", role="responsible", scope="building:a"))
    check_binding(carol, p, Binding(user="heidi", role="user", scope="building:a"))
    message = refused(check_binding, carol, p, Binding(user="heidi", role="responsible", scope="building:b"))
    assert "at building:b" in message and "no role you hold there manages it" in message
    assert "globally" in refused(check_binding, carol, p, Binding(user="heidi", role="user"))
    assert "role admin" in refused(check_binding, carol, p, Binding(user="heidi", role="admin", scope="building:a"))
    refused(check_binding, carol, p, Binding(user="heidi", role="risk_assessor", scope="building:a"))
    # Row 6 "Add/delete/change user roles and rights": settings at her building, not elsewhere.
    check_setting(carol, p, "documents_add", "building:a")
    assert "building:b" in refused(check_setting, carol, p, "documents_add", "building:b")
    refused(check_setting, carol, p, "documents_add", None)
    # Tasks: those lying in building a, made at building a.
    grant = Binding(user="heidi", permission="controls:perform", object="task:42")
    check_binding(carol, p, grant)
    assert grant_scope(carol, p, grant) == "building:a"
    check_binding(carol, p, Binding(user="heidi", permission="controls:perform", object="task:42", scope="building:a"))
    message = refused(
        check_binding,
        carol,
        p,
        Binding(user="heidi", permission="controls:perform", object="task:77", scope="building:a"),
    )
    assert "task:77 lies in building:b in client:acme, not in building:a" in message
    assert "at task:77" in refused(
        check_binding, carol, p, Binding(user="heidi", permission="controls:perform", object="task:77")
    )
    message = refused(check_binding, carol, p, Binding(user="heidi", permission="controls:perform", object="task:99"))
    assert "task:99 lies in no known building" in message
    refused(check_binding, carol, p, Binding(user="heidi", permission="documents:edit", object="task:42"))


def test_rolegate_permissions_are_never_handed_out_beyond_what_one_holds(config):
    """A role that manages 'all' roles still cannot hand out rolegate:* its holder lacks at that scope."""
    state = DynamicState(
        roles={
            "auditor": Doc({"permissions": ["rolegate:audit:view"]}, 1),
            "deputy": Doc({"permissions": ["tasks:order"], "manages": {"roles": "all"}}, 1),
        },
        bindings={"b1": Doc({"user": "heidi", "role": "deputy", "scope": "building:a"}, 1)},
    )
    heidi = actor(config, "heidi", state)
    p = heidi.policy
    check_binding(heidi, p, Binding(user="zed", role="user", scope="building:a"))
    message = refused(check_binding, heidi, p, Binding(user="zed", role="auditor", scope="building:a"))
    assert "rolegate's own permissions you do not hold at building:a: rolegate:audit:view" in message
    # carol holds rolegate:daypass:issue at building:a: she may make someone responsible there (it gives it).
    carol = actor(config, "carol", state)
    check_binding(carol, carol.policy, Binding(user="zed", role="responsible", scope="building:a"))


def test_roles_are_defined_within_the_authors_powers_and_not_by_their_holders(config):
    """field-service's administrator "cannot define a role with business permissions" no more; but a role
    cannot manage more than its author, and nobody edits the role that gives them their powers."""
    state = DynamicState(
        roles={
            "lead": Doc(
                {
                    "permissions": ["risk_assessment:edit", "sensors:manage"],
                    "manages": {"assigns": ["controls:perform"]},
                },
                1,
            )
        },
        bindings={"b1": Doc({"user": "heidi", "role": "lead", "scope": "building:a"}, 1)},
    )
    alice = actor(config, "alice", state)
    check_role_definition(alice, alice.policy, "lead")  # business permissions alice lacks: fine now
    heidi = actor(config, "heidi", state)
    too_much = compile_state(config, DynamicState(roles={"lead": Doc({"manages": {"roles": "all"}}, 1)}))
    assert "a role cannot hand out more than its author" in refused(check_role_definition, heidi, too_much, "lead")
    assert "defines your own powers" in refused(check_not_own_powers, heidi, heidi.policy, "lead", "change")
    check_not_own_powers(alice, alice.policy, "lead", "change")
    assert "you hold admin" in refused(check_not_own_powers, alice, alice.policy, "responsible", "change")


def test_the_ui_offers_exactly_what_one_manages(config):
    carol, alice, heidi = actor(config, "carol"), actor(config, "alice"), actor(config, "heidi")
    assert choices(carol, "roles", carol.policy.roles) == (["user", "responsible"], ["building:a"])
    settings, where = choices(carol, "settings", config.user_settings)
    assert set(settings) == set(config.user_settings) and where == ["building:a"]
    assert choices(carol, "assigns", carol.policy.catalogue_order) == (["controls:perform"], ["building:a"])
    roles, where = choices(alice, "roles", alice.policy.roles)
    assert roles == list(alice.policy.roles) and where == [None]
    assert choices(heidi, "roles", heidi.policy.roles) == ([], [])
    assert manages_anything(carol) and manages_anything(alice) and not manages_anything(heidi)
    dave = actor(config, "dave")
    assert choices(dave, "roles", dave.policy.roles) == ([], []) and manages_anything(dave)
