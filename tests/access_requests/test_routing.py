"""Approver routing and least-role selection (``admin/approvers.py``), and settings switched on until a time
(what an approval of a conditional permission writes), on seed 001's building-safety policy. Pure: no lab."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from rolegate.admin.approvers import approvers, plan_for_role, plans_for, plans_of
from rolegate.admin.people import People, Person
from rolegate.admin.wording import attempt_words
from rolegate.authz import Identity, compile_policy, decide
from rolegate.authz.roles import ALL, Delegation
from rolegate.authz.stored import Switch, switches_of
from rolegate.config.loader import load_config_text

REPO = Path(__file__).resolve().parents[2]
NOW = time.time()


def policy_of(extra_bindings: list[dict[str, Any]] = (), **changes: Any):  # type: ignore[assignment]
    config = yaml.safe_load((REPO / "config/examples/building-safety.yaml").read_text())
    config["bindings"] = [*config["bindings"], *extra_bindings]
    config.update(changes)
    return compile_policy(load_config_text(yaml.safe_dump(config), base_dir=REPO))


def person(username: str, *groups: str, disabled: bool = False) -> Person:
    return Person(username, username.title(), f"{username}@example.com", disabled, frozenset(groups))


# The lab directory's building-safety people (deploy/lab/README.md).
PEOPLE = [
    person("alice", "bs-admins"),
    person("carol", "bs-responsible-a", "bs-users"),
    person("ruth", "bs-responsible-b", "bs-users"),
    person("dave", "bs-risk-assessors", "bs-users"),
    person("heidi", "bs-users"),
    person("ivan", "bs-responsible-a", disabled=True),
]


def names(found) -> list[tuple[str, str | None]]:
    return [(a.username, a.scope) for a in found]


def test_routing_closest_scope_first_and_never_another_building() -> None:
    policy = policy_of()
    people = People(PEOPLE, "directory")
    # ivan is responsible of a too, but disabled; heidi asks, so she is not asked; dave manages no roles.
    assert names(approvers(policy, people, "documents:add", "building:a", NOW, requester="heidi")) == [
        ("carol", "building:a"),
        ("alice", None),
    ]
    assert names(approvers(policy, people, "documents:add", "building:b", NOW, requester="heidi")) == [
        ("ruth", "building:b"),
        ("alice", None),
    ]
    # What only the admin role gives (sensors) only the admin can grant; a global permission: no building.
    assert names(approvers(policy, people, "sensors:manage", "building:a", NOW)) == [("alice", None)]
    assert names(approvers(policy, people, "documents:view", None, NOW)) == [("alice", None)]
    # carol asking for herself is routed to the admin only (nobody approves their own request).
    assert names(approvers(policy, people, "sensors:manage", "building:a", NOW, requester="carol")) == [("alice", None)]


def test_a_client_level_manager_comes_between_the_building_and_everywhere() -> None:
    policy = policy_of(
        [
            {"user": "grace", "role": "responsible", "scope": "client:acme"},
            {"user": "olivia", "role": "responsible", "scope": "building:a", "until": "2001-01-01T00:00:00Z"},
        ]
    )  # expired: manages nothing any more
    people = People([*PEOPLE, person("grace"), person("olivia")], "directory")
    assert names(approvers(policy, people, "documents:add", "building:a", NOW, requester="heidi")) == [
        ("carol", "building:a"),
        ("grace", "client:acme"),
        ("alice", None),
    ]
    assert names(approvers(policy, people, "documents:add", "building:b", NOW, requester="heidi")) == [
        ("ruth", "building:b"),
        ("grace", "client:acme"),
        ("alice", None),
    ]


def test_day_passes_never_approve() -> None:
    policy = policy_of([{"daypass": "p1", "role": "admin"}])
    assert names(approvers(policy, People(PEOPLE, "directory"), "sensors:manage", "building:a", NOW)) == [
        ("alice", None)
    ]
    assert plans_of(policy, Identity("sam", daypass="p1"), "sensors:manage", "building:a", NOW) == []


def test_least_role_is_the_smallest_grant_that_gives_it() -> None:
    policy = policy_of()
    carol = Identity("carol", ["bs-responsible-a", "bs-users"])
    alice = Identity("alice", ["bs-admins"])
    # documents:add: the building user's role gives it with the documents_add setting; that is the least.
    plans = plans_of(policy, carol, "documents:add", "building:a", NOW)
    assert [(p.role, p.settings) for p in plans] == [("user", ("documents_add",)), ("responsible", ("documents_add",))]
    assert plans[0].size == 5  # the user role's four plus documents:add
    plans = plans_of(policy, alice, "documents:add", "building:a", NOW)
    assert [(p.role, p.settings) for p in plans][:3] == [
        ("user", ("documents_add",)),
        ("responsible", ("documents_add",)),
        ("risk_assessor", ()),
    ]
    # Given plainly by several roles: the one with the fewest permissions first.
    assert [p.role for p in plans_of(policy, alice, "sensors:manage", "building:a", NOW)] == ["admin", "client_admin"]
    assert [p.role for p in plans_of(policy, alice, "risk_assessment:edit", "building:a", NOW)] == ["risk_assessor"]
    # carol manages nothing at b, nothing globally; dave manages no roles at all.
    assert plans_of(policy, carol, "documents:add", "building:b", NOW) == []
    assert plans_of(policy, carol, "documents:add", None, NOW) == []
    assert (
        plans_of(policy, Identity("dave", ["bs-risk-assessors", "bs-users"]), "documents:add", "building:a", NOW) == []
    )


def test_the_delegation_guards_hold_for_plans() -> None:
    policy = policy_of()
    roles = policy.roles
    # A role that denies it is never a way to give it, whoever manages it.
    assert (
        plan_for_role(policy, roles["subcontractor"], Delegation(ALL, ALL, ALL), frozenset(), "documents:view") is None
    )
    # Managing the role but not the setting it needs: no plan.
    assert plans_for(policy, Delegation(frozenset({"user"})), frozenset(), "documents:add") == []
    assert (
        plans_for(policy, Delegation(frozenset({"user"}), frozenset({"documents_add"})), frozenset(), "documents:add")[
            0
        ].role
        == "user"
    )
    # responsible hands out rolegate:daypass:issue: only someone holding it there may grant that role.
    manages = Delegation(frozenset({"responsible"}), ALL)
    assert plans_for(policy, manages, frozenset(), "trends:view") == []
    assert [p.role for p in plans_for(policy, manages, frozenset({"rolegate:daypass:issue"}), "trends:view")] == [
        "responsible"
    ]


def test_a_setting_switched_on_until_a_time_ends_by_itself() -> None:
    from rolegate.admin.state import DynamicState, Doc, compile_state

    config = load_config_text((REPO / "config/examples/building-safety.yaml").read_text(), base_dir=REPO)
    heidi = Identity("heidi", ["bs-users"])
    until = NOW + 60

    def at(value: dict[str, Any]):
        return compile_state(config, DynamicState(settings={"heidi": Doc(value, 1)}))

    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(until))
    policy = at({"on": [{"setting": "documents_add", "scope": "building:a", "by": "carol", "until": iso}]})
    assert decide(policy, heidi, "documents:add", "building:a", None, NOW).allowed
    # The decision was memoized while it held; it ends at until all the same, on this same policy.
    assert not decide(policy, heidi, "documents:add", "building:a", None, until + 1).allowed
    assert not decide(policy, heidi, "documents:add", "building:b", None, NOW).allowed
    # A switch without an end next to one with an end: the one without wins.
    policy = at(
        {
            "on": [
                {"setting": "documents_add", "scope": "building:a", "until": iso},
                {"setting": "documents_add", "scope": "building:a"},
            ]
        }
    )
    assert decide(policy, heidi, "documents:add", "building:a", None, until + 1).allowed
    # An end that is no time with a zone grants nothing (fail closed), and says why.
    for bad in ("tomorrow", "2030-01-01T00:00:00", 12345):
        policy = at({"on": [{"setting": "documents_add", "scope": "building:a", "until": bad}]})
        assert not decide(policy, heidi, "documents:add", "building:a", None, NOW).allowed, bad
    assert any("is no time" in p for p in at({"on": [{"setting": "documents_add", "until": "soon"}]}).problems)
    # Stored and read back as it was written; switches without an end are written as before.
    assert Switch("vacancy", "building:a", "carol", "t", iso).to_json()["until"] == iso
    assert "until" not in Switch("vacancy").to_json()
    assert switches_of({"on": [{"setting": "vacancy", "until": iso}]})[0].until == iso


def test_words() -> None:
    config = load_config_text((REPO / "config/examples/building-safety.yaml").read_text(), base_dir=REPO)
    assert attempt_words(config, "documents:add", "building:a") == "Add documents in Building a"
    assert attempt_words(config, "risk_assessment:view", None) == "View risk assessment"
    assert attempt_words(config, "rolegate:roles:edit", None) == "Edit rolegate roles"
    from rolegate.config.sections.access_requests import AccessRequestsConfig

    labels = {"building": "Building {id}", "building:b": "the B tower", "documents:add": "Upload documents"}
    labelled = config.model_copy(update={"access_requests": AccessRequestsConfig.model_validate({"labels": labels})})
    assert attempt_words(labelled, "documents:add", "building:a") == "Upload documents in Building a"
    assert attempt_words(labelled, "documents:view", "building:b") == "View documents in the B tower"
