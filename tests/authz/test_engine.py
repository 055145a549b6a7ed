"""Unit tests of compile_policy / decide: inheritance, deny, nesting, until, settings, grants, cache."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from rolegate.authz import Identity, compile_policy, decide, effective_permissions, holdings_of, roles_of
from rolegate.config.sections.policy import Binding
from tests.authz.policies import make_config

PERMS = ("a:view", "a:edit", "b:view", "b:edit", "docs:view", "docs:edit", "x:do")
T0 = datetime(2030, 1, 1, 12, tzinfo=timezone.utc).timestamp()


def cfg(**kw):
    base = dict(
        permissions=PERMS,
        roles={
            "base": {"permissions": ["a:view"]},
            "mid": {"inherits": ["base"], "permissions": ["a:edit"]},
            "top": {"inherits": ["mid"], "permissions": ["b:view", "docs:view"]},
            "guest": {"permissions": ["b:view"], "deny": ["docs:view", "docs:edit"]},
            "guestplus": {"inherits": ["guest"], "permissions": ["docs:view", "x:do"]},
            "wild": {"permissions": ["docs:*"]},
            "reader": {"permissions": ["b:view"], "if_setting": {"docs": ["docs:view", "docs:edit"]}},
        },
        scopes={"client": {}, "building": {"parent": "client", "members": {"a": "acme", "b": "acme", "z": "zeta"}}},
        settings={"docs": {}, "extra": {}},
        users={"sam": {"settings": ["docs"]}},
    )
    base.update(kw)
    return make_config(**base)


def test_inherits_is_transitive_and_roles_union():
    policy = compile_policy(cfg(bindings=[{"group": "g1", "role": "top"}, {"group": "g2", "role": "guest"}]))
    assert policy.roles["top"].allow == {"a:view", "a:edit", "b:view", "docs:view"}
    u = Identity("u", {"g1"})
    assert effective_permissions(policy, u, "building:a", T0) == {"a:view", "a:edit", "b:view", "docs:view"}
    assert roles_of(policy, u, None, T0) == ("top",)


def test_deny_inherited_and_beats_own_allow():
    policy = compile_policy(cfg())
    assert policy.roles["guestplus"].allow == {"b:view", "x:do"}
    assert policy.roles["guestplus"].deny == {"docs:view", "docs:edit"}


def test_manages_is_inherited_and_grants_nothing_by_itself():
    roles = {
        "lead": {"permissions": ["a:view"], "manages": {"assigns": ["x:do"], "roles": ["plain"]}},
        "boss": {"inherits": ["lead"], "manages": {"assigns": ["docs:*"], "settings": ["docs"]}},
        "plain": {"permissions": ["a:view"]},
        "root": {"inherits": ["boss"], "manages": {"roles": "all"}},
    }
    policy = compile_policy(cfg(roles=roles, bindings=[{"user": "u", "role": "boss", "scope": "building:a"}]))
    assert policy.roles["lead"].assigns == {"x:do"}
    boss = policy.roles["boss"].manages
    assert {"x:do", "docs:view", "docs:edit"} <= boss.assigns  # own, inherited, expanded
    assert boss.roles == {"plain"} and boss.settings == {"docs"}
    assert policy.roles["plain"].assigns == frozenset() and not policy.roles["plain"].manages
    root = policy.roles["root"].manages
    assert "anything" in root.roles and boss.within(root) and not root.within(boss)
    # A role may assign x:do on objects; holding the role does not let its holder do x:do.
    assert not decide(policy, Identity("u"), "x:do", "building:a", "task:1", T0).allowed
    assert [b.role.name for b in holdings_of(policy, Identity("u"), "building:a", T0)] == ["boss"]


def test_wildcard_permissions_expand_against_catalogue():
    policy = compile_policy(cfg())
    assert {"docs:view", "docs:edit"} <= policy.roles["wild"].allow


def test_deny_from_any_role_beats_allow_from_another():
    policy = compile_policy(
        cfg(bindings=[{"group": "staff", "role": "top"}, {"user": "u", "role": "guest", "scope": "building:a"}])
    )
    u = Identity("u", {"staff"})
    assert not decide(policy, u, "docs:view", "building:a", None, T0).allowed
    assert decide(policy, u, "docs:view", "building:b", None, T0).allowed  # deny held only at building:a
    assert decide(policy, u, "docs:view", "client:acme", None, T0).allowed  # nor does it reach the parent
    reasons = decide(policy, u, "docs:view", "building:a", None, T0).reasons
    assert any(r.startswith("deny: role guest denies docs:view") for r in reasons)
    assert any(r.startswith("overruled allow:") for r in reasons)


def test_deny_at_parent_scope_reaches_children_and_beats_settings_and_grants():
    policy = compile_policy(
        cfg(bindings=[{"user": "sam", "role": "guest", "scope": "client:acme"}, {"user": "sam", "role": "reader"}]),
        object_grants=[Binding(user="sam", permission="docs:edit", object="doc:1")],
    )
    sam = Identity("sam")
    assert decide(policy, sam, "docs:edit", "building:z", None, T0).allowed  # setting, other client
    assert not decide(policy, sam, "docs:edit", "building:a", None, T0).allowed  # deny via client:acme
    assert not decide(policy, sam, "docs:edit", "building:a", "doc:1", T0).allowed  # beats the object grant
    assert decide(policy, sam, "docs:edit", "building:z", "doc:1", T0).allowed


def test_scope_nesting_from_config_and_runtime():
    c = cfg(bindings=[{"group": "g", "role": "mid", "scope": "client:acme"}])
    policy = compile_policy(
        c,
        scope_parents={
            "building:new": "client:acme",
            "building:a": "client:other",
            "building:bad": "building:a",
            "nonsense": "client:x",
        },
    )
    u = Identity("u", {"g"})
    assert decide(policy, u, "a:edit", "building:b", None, T0).allowed
    assert decide(policy, u, "a:edit", "building:new", None, T0).allowed  # runtime membership
    assert not decide(policy, u, "a:edit", "building:a", None, T0).allowed  # runtime moved a to other
    assert not decide(policy, u, "a:edit", "building:bad", None, T0).allowed  # wrong parent type ignored
    assert not decide(policy, u, "a:edit", "building:z", None, T0).allowed
    assert len(policy.problems) == 2


def test_scope_cycle_from_runtime_is_cut():
    c = make_config(
        permissions=PERMS,
        roles={"r": {"permissions": ["a:view"]}},
        scopes={"node": {"parent": "node"}},
        bindings=[{"user": "u", "role": "r", "scope": "node:x"}],
    )
    policy = compile_policy(c, scope_parents={"node:a": "node:b", "node:b": "node:a"})
    assert not decide(policy, Identity("u"), "a:view", "node:a", None, T0).allowed


def test_until_expires_and_clock_can_go_back():
    until = datetime(2030, 1, 2, tzinfo=timezone.utc)
    policy = compile_policy(cfg(bindings=[{"user": "carol", "role": "mid", "scope": "building:b", "until": until}]))
    carol = Identity("carol")
    before, after = until.timestamp() - 1, until.timestamp() + 1
    assert decide(policy, carol, "a:edit", "building:b", None, before).allowed
    assert not decide(policy, carol, "a:edit", "building:b", None, after).allowed  # cached entry refreshed
    assert not decide(policy, carol, "a:edit", "building:b", None, until).allowed  # until is exclusive
    assert decide(policy, carol, "a:edit", "building:b", None, before).allowed  # a test clock going back
    assert decide(policy, carol, "a:edit", "building:b", None, until - timedelta(seconds=1)).allowed


def test_date_until_means_end_of_that_day():
    policy = compile_policy(cfg(bindings=[{"user": "c", "role": "base", "until": "2030-01-01"}]))
    late = datetime(2030, 1, 1, 23, 59, 58, tzinfo=timezone.utc)
    assert decide(policy, Identity("c"), "a:view", None, None, late).allowed
    assert not decide(policy, Identity("c"), "a:view", None, None, late + timedelta(seconds=2)).allowed


def test_daypass_bindings():
    policy = compile_policy(
        cfg(),
        extra_bindings=[
            (
                Binding(
                    daypass="p1", role="guest", scope="building:a", until=datetime(2030, 1, 1, 18, tzinfo=timezone.utc)
                ),
                "day pass p1 issued by walter",
            )
        ],
    )
    holder = Identity("pass:p1", daypass="p1")
    d = decide(policy, holder, "b:view", "building:a", None, T0)
    assert d.allowed and "day pass p1 issued by walter" in d.reasons[0]
    assert not decide(policy, holder, "b:view", "building:b", None, T0).allowed
    assert not decide(policy, holder, "b:view", "building:a", None, T0 + 7 * 3600).allowed
    assert not decide(policy, Identity("pass:p2", daypass="p2"), "b:view", "building:a", None, T0).allowed


def test_user_settings_from_config_and_admin():
    policy = compile_policy(
        cfg(bindings=[{"group": "readers", "role": "reader"}]), enabled_settings={"ann": ["docs"], "bo": ["nope"]}
    )
    assert decide(policy, Identity("sam", {"readers"}), "docs:edit", "building:a", None, T0).allowed
    assert decide(policy, Identity("ann", {"readers"}), "docs:view", None, None, T0).allowed
    assert not decide(policy, Identity("bo", {"readers"}), "docs:view", None, None, T0).allowed
    assert any("nope" in p for p in policy.problems)


def test_a_setting_alone_grants_nothing():
    """Seed 001: "if enabled in user settings" is a condition inside a role column. The setting on, no role
    that lists it held: nothing, at any scope, and tokens (effective permissions) say the same."""
    policy = compile_policy(cfg(bindings=[{"user": "sam", "role": "top"}]))  # top lists no setting
    sam = Identity("sam")
    for scope in (None, "building:a", "client:acme"):
        assert not decide(policy, sam, "docs:edit", scope, None, T0).allowed
        assert "docs:edit" not in effective_permissions(policy, sam, scope, T0)
    reasons = decide(policy, sam, "docs:edit", "building:a", None, T0).reasons
    assert any("only with role reader" in r and "a setting alone grants nothing" in r for r in reasons), reasons


def test_if_setting_needs_role_and_setting_at_the_same_scope():
    """Roles are per building and settings are per scope: a conditional permission exists only where both
    apply (the role held at S or above, the setting on at S, above, or everywhere)."""
    c = cfg(
        bindings=[
            {"user": "heidi", "role": "reader", "scope": "building:a"},
            {"user": "heidi", "role": "reader", "scope": "building:z"},
        ],
        users={"heidi": {"settings": {"building:a": ["docs"], "client:zeta": ["extra"]}}},
    )
    policy = compile_policy(
        c, enabled_settings={"heidi": [("docs", "building:b", "carol", "2030-01-01T00:00:00+00:00")]}
    )
    heidi = Identity("heidi")
    assert decide(policy, heidi, "docs:edit", "building:a", None, T0).allowed  # role + setting at a
    assert not decide(policy, heidi, "docs:edit", "building:b", None, T0).allowed  # setting at b, no role
    assert not decide(policy, heidi, "docs:edit", "building:z", None, T0).allowed  # role at z, no setting
    assert not decide(policy, heidi, "docs:edit", "client:acme", None, T0).allowed  # setting below, not here
    assert "docs:view" in effective_permissions(policy, heidi, "building:a", T0)
    reasons = decide(policy, heidi, "docs:edit", "building:a", None, T0).reasons
    assert any(
        "role reader grants docs:edit with user setting 'docs' is on for heidi at building:a" in r for r in reasons
    ), reasons
    # A setting switched on at the client reaches its buildings; the admin API says who and when.
    policy = compile_policy(
        c, enabled_settings={"heidi": [("docs", "client:zeta", "carol", "2030-01-01T00:00:00+00:00")]}
    )
    d = decide(policy, heidi, "docs:view", "building:z", None, T0)
    assert d.allowed and any("switched on by carol at 2030-01-01T00:00:00+00:00" in r for r in d.reasons), d.reasons


def test_a_deny_beats_a_conditional_grant():
    c = cfg(bindings=[{"user": "sam", "role": "reader"}, {"user": "sam", "role": "guest", "scope": "building:a"}])
    policy = compile_policy(c)
    sam = Identity("sam")
    assert decide(policy, sam, "docs:view", "building:b", None, T0).allowed
    assert not decide(policy, sam, "docs:view", "building:a", None, T0).allowed
    assert "docs:view" not in effective_permissions(policy, sam, "building:a", T0)


def test_role_held_but_setting_off_is_explained():
    policy = compile_policy(cfg(bindings=[{"user": "ann", "role": "reader"}]), enabled_settings={"ann": ["extra"]})
    d = decide(policy, Identity("ann"), "docs:view", "building:a", None, T0)
    assert not d.allowed
    assert any("role reader grants docs:view only with user setting 'docs' switched on" in r for r in d.reasons)


def test_object_grants_for_user_group_scope_and_until():
    policy = compile_policy(
        cfg(),
        object_grants=[
            Binding(user="bob", permission="x:do", object="task:42"),
            Binding(group="crew", permission="x:do", object="task:43", scope="building:a"),
            Binding(user="bob", permission="x:do", object="task:44", until="2029-12-31"),
        ],
    )
    bob = Identity("bob", {"crew"})
    assert decide(policy, bob, "x:do", None, "task:42", T0).allowed
    assert not decide(policy, bob, "x:do", None, "task:41", T0).allowed
    assert not decide(policy, bob, "a:view", None, "task:42", T0).allowed  # other permission
    assert decide(policy, bob, "x:do", "building:a", "task:43", T0).allowed
    assert not decide(policy, bob, "x:do", "building:b", "task:43", T0).allowed  # grant scoped elsewhere
    assert not decide(policy, bob, "x:do", None, "task:44", T0).allowed  # expired
    assert not decide(policy, bob, "x:do", None, None, T0).allowed  # no object, no grant


def test_objects_inside_scopes():
    """Tasks lie in buildings: a grant made at building:a reaches the tasks in a, whatever scope the request
    names; a task that lies nowhere known is refused with that reason, whatever is granted on it."""
    c = cfg(
        scopes={
            "client": {},
            "building": {"parent": "client", "members": {"a": "acme", "b": "acme"}},
            "task": {"parent": "building", "members": {"42": "a", "77": "b"}},
        }
    )
    policy = compile_policy(
        c,
        object_grants=[
            Binding(user="heidi", permission="x:do", object="task:42", scope="building:a"),
            Binding(user="heidi", permission="x:do", object="task:77", scope="building:a"),  # 77 lies in b
            Binding(user="heidi", permission="x:do", object="task:99"),
        ],
        scope_parents={"task:43": "building:a"},
    )
    heidi = Identity("heidi")
    assert decide(policy, heidi, "x:do", "task:42", "task:42", T0).allowed
    assert decide(policy, heidi, "x:do", None, "task:42", T0).allowed, "the task's place decides, not the route"
    assert not decide(policy, heidi, "x:do", "building:a", "task:77", T0).allowed, "77 lies in b"
    assert not decide(policy, heidi, "x:do", "task:43", "task:43", T0).allowed, "no grant on 43"
    d = decide(policy, heidi, "x:do", "task:99", "task:99", T0)
    assert not d.allowed and "task:99 lies in no known building" in d.reasons[0], d.reasons
    assert policy.scopes.chain("task:43") == ("task:43", "building:a", "client:acme")


def test_unknown_things_grant_nothing():
    policy = compile_policy(
        cfg(),
        extra_bindings=[Binding(user="u", role="ghost")],
        object_grants=[Binding(user="u", permission="nope:x", object="task:1")],
    )
    u = Identity("u")
    assert effective_permissions(policy, u, None, T0) == frozenset()
    assert len(policy.problems) == 2
    assert not decide(policy, u, "nope:x", None, "task:1", T0).allowed


@pytest.mark.parametrize(
    "permission,scope,obj",
    [
        (None, None, None),
        (["x"], None, None),
        ("a:view", ["l"], None),
        ("a:view", "no-colon", None),
        ("a:view", "building:a b", None),
        ("a:view", "building:x:y", None),
        ("a:view", "", None),
        ("x:do", None, ["o"]),
        ("a:view", "building:" + "x" * 2000, None),
        (42, 42, 42),
    ],
)
def test_bad_input_fails_closed(permission, scope, obj):
    policy = compile_policy(cfg(bindings=[{"group": "g", "role": "top"}]))
    d = decide(policy, Identity("u", {"g"}), permission, scope, obj, T0)
    assert d.allowed is False and d.reasons


def test_disabled_identity_is_denied():
    policy = compile_policy(cfg(bindings=[{"user": "u", "role": "top"}]))
    u = Identity("u", disabled=True)
    assert not decide(policy, u, "a:view", None, None, T0).allowed
    assert effective_permissions(policy, u) == frozenset() and holdings_of(policy, u) == ()


def test_decisions_are_immutable_and_equal_for_the_same_question():
    policy = compile_policy(cfg(bindings=[{"user": "u", "role": "top"}]), version=7)
    u = Identity("u")
    d1 = decide(policy, u, "a:view", "building:a", None, T0)
    d2 = decide(policy, Identity("u"), "a:view", "building:a", None, T0 + 1)
    assert (d1.allowed, d1.permission, d1.scope, d1.reasons) == (d2.allowed, d2.permission, d2.scope, d2.reasons)
    assert policy.version == 7
    with pytest.raises(AttributeError):
        d1.allowed = False  # type: ignore[misc]
    with pytest.raises(AttributeError):
        u.groups = frozenset({"admins"})  # type: ignore[misc]
    with pytest.raises(AttributeError):
        policy.version = 8  # type: ignore[misc]


def test_cache_is_bounded():
    policy = compile_policy(cfg(bindings=[{"group": "g", "role": "top"}]), cache_size=64)
    known = len(policy._index.chains)  # every scope the policy names, worked out when compiled
    for i in range(1000):
        identity = Identity(f"u{i}", {"g"})
        assert decide(policy, identity, "a:view", f"building:{i}", None, T0 + i).allowed
        assert "a:view" in effective_permissions(policy, identity, f"building:{i}", T0 + i)
    assert len(policy._cache) <= 64
    assert len(policy._index.chains) <= known + 64  # scopes from request paths are remembered up to a bound
    assert decide(policy, Identity("u", {"g"}), "a:view", "building:late", None, T0).allowed


def test_now_accepts_datetime_int_and_none():
    policy = compile_policy(cfg(bindings=[{"user": "u", "role": "base", "until": "2999-01-01"}]))
    u = Identity("u")
    assert decide(policy, u, "a:view", None, None, datetime(2030, 1, 1)).allowed
    assert decide(policy, u, "a:view", None, None, int(T0)).allowed
    assert decide(policy, u, "a:view").allowed


def test_identity_shape_keys_cannot_collide():
    shapes = [
        Identity("bob\0\0admins"),
        Identity("bob", {"admins"}),
        Identity("bob", (), daypass="admins"),
        Identity("bob", (), daypass=""),
        Identity("bob"),
        Identity("1:b", {"ob"}),
        Identity("1:bob"),
    ]
    assert len({i.key for i in shapes}) == len(shapes)
    policy = compile_policy(cfg(bindings=[{"group": "admins", "role": "top"}]))
    assert decide(policy, Identity("bob", {"admins"}), "a:view", None, None, T0).allowed
    assert not decide(policy, Identity("bob\0\0admins"), "a:view", None, None, T0).allowed
    assert not decide(policy, Identity("bob", (), daypass="admins"), "a:view", None, None, T0).allowed
