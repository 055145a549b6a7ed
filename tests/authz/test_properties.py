"""Property tests: the engine equals a naive reference evaluator; deny wins; monotonicity; settings are
conditions inside roles; objects are judged by where they lie."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rolegate.authz import Identity, compile_policy, decide, effective_permissions
from rolegate.config.sections.policy import Binding
from tests.authz.policies import make_config

PERMS = ("p:a", "p:b", "p:c", "p:d", "p:e")
ROLES = ("r0", "r1", "r2", "r3")
GROUPS = ("g0", "g1", "g2")
USERS = ("u0", "u1")
SCOPES = (None, "client:c0", "client:c1", "building:b0", "building:b1", "building:b2", "building:zz")
PARENT = {
    "building:b0": "client:c0",
    "building:b1": "client:c0",
    "building:b2": "client:c1",
    "task:1": "building:b0",
    "task:2": "building:b2",
}
OBJECTS = ("task:1", "task:2", "task:3")  # task:3 lies nowhere known
SETTING_NAMES = ("s1", "s2")
GRANT_SCOPES = (None, "building:b0", "client:c1", "building:b1")
TIMES = (100.0, 200.0, 300.0)
UNTILS = (None, 150.0, 250.0)

role_spec = st.fixed_dictionaries(
    {
        "permissions": st.lists(st.sampled_from(PERMS), max_size=3, unique=True),
        "deny": st.lists(st.sampled_from(PERMS), max_size=1),
        "if_setting": st.dictionaries(
            st.sampled_from(SETTING_NAMES),
            st.lists(st.sampled_from(PERMS), min_size=1, max_size=2, unique=True),
            max_size=2,
        ),
    }
)
subject = st.one_of(
    st.tuples(st.just("group"), st.sampled_from(GROUPS)), st.tuples(st.just("user"), st.sampled_from(USERS))
)
binding = st.tuples(subject, st.sampled_from(ROLES), st.sampled_from(SCOPES), st.sampled_from(UNTILS))
grant = st.tuples(
    subject, st.sampled_from(PERMS), st.sampled_from(OBJECTS), st.sampled_from(UNTILS), st.sampled_from(GRANT_SCOPES)
)
switch = st.tuples(st.sampled_from(USERS), st.sampled_from(SETTING_NAMES), st.sampled_from(SCOPES))


@st.composite
def worlds(draw):
    roles = {}
    for i, name in enumerate(ROLES):
        spec = draw(role_spec)
        # Inherit only from earlier roles: acyclic, as config check guarantees.
        spec["inherits"] = draw(st.lists(st.sampled_from(ROLES[:i]), max_size=2, unique=True)) if i else []
        roles[name] = spec
    return {
        "roles": roles,
        "bindings": draw(st.lists(binding, max_size=6)),
        "switches": draw(st.lists(switch, max_size=4, unique=True)),
        "grants": draw(st.lists(grant, max_size=3)),
    }


def to_binding(b):
    (kind, name), role, scope, until = b
    return Binding(**{kind: name}, role=role, scope=scope, until=None if until is None else _dt(until))


def to_grant(g):
    (kind, name), perm, obj, until, scope = g
    return Binding(
        **{kind: name}, permission=perm, object=obj, scope=scope, until=None if until is None else _dt(until)
    )


def _dt(ts):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc)


def compile_world(w, extra=(), switches=None):
    config = make_config(
        permissions=PERMS,
        roles=w["roles"],
        scopes={
            "client": {},
            "building": {"parent": "client", "members": {"b0": "c0", "b1": "c0", "b2": "c1"}},
            "task": {"parent": "building", "members": {"1": "b0", "2": "b2"}},
        },
        settings={name: {} for name in SETTING_NAMES},
    )
    enabled = {}
    for user, name, scope in w["switches"] if switches is None else switches:
        enabled.setdefault(user, []).append((name, scope))
    return compile_policy(
        config,
        extra_bindings=[to_binding(b) for b in (*w["bindings"], *extra)],
        object_grants=[to_grant(g) for g in w["grants"]],
        enabled_settings=enabled,
    )


def reference(w, user, groups, perm, scope, obj, now, extra=()):
    """Straight from the documented semantics, no indexes, no cache."""

    def role_sets(name):
        spec = w["roles"][name]
        allow, deny = set(spec["permissions"]), set(spec["deny"])
        conditional = {s: set(p) for s, p in spec["if_setting"].items()}
        for parent in spec["inherits"]:
            a, d, c = role_sets(parent)
            allow |= a
            deny |= d
            for s, p in c.items():
                conditional.setdefault(s, set()).update(p)
        return allow, deny, conditional

    def chain_of(s):
        out = [None]
        while s is not None:
            out.append(s)
            s = PARENT.get(s)
        return out

    chain = chain_of(scope)
    mine = {("user", user), *(("group", g) for g in groups)}
    on_here = {name for u, name, at in w["switches"] if u == user and at in chain}
    allow, deny = set(), set()
    for subj, role, at, until in (*w["bindings"], *extra):
        if subj in mine and at in chain and (until is None or now < until):
            a, d, c = role_sets(role)
            allow |= a - d
            deny |= d
            for name in on_here:  # a setting counts only with a role held here that lists it
                allow |= c.get(name, set()) - d
    if perm in allow - deny:
        return True
    if obj is None or perm in deny:
        return False
    if obj == "task:3":  # lies nowhere known: denied whatever is granted on it
        return False
    place = chain_of(obj)  # a task's own place decides where grants made at a scope reach it
    return any(
        subj in mine and p == perm and o == obj and (until is None or now < until) and at in place
        for subj, p, o, until, at in w["grants"]
    )


query = st.tuples(
    st.sampled_from(USERS),
    st.frozensets(st.sampled_from(GROUPS)),
    st.sampled_from(PERMS),
    st.sampled_from(SCOPES),
    st.sampled_from((None, *OBJECTS)),
    st.sampled_from(TIMES),
)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(worlds(), st.lists(query, min_size=1, max_size=8))
def test_decide_equals_reference(w, queries):
    policy = compile_world(w)
    for user, groups, perm, scope, obj, now in queries:
        identity = Identity(user, groups)
        got = decide(policy, identity, perm, scope, obj, now).allowed
        assert got == reference(w, user, groups, perm, scope, obj, now), (user, groups, perm, scope, obj, now)
        if obj is None:  # decisions and the entries behind tokens and /me agree
            assert (perm in effective_permissions(policy, identity, scope, now)) == got


@SETTINGS
@given(worlds(), query)
def test_deny_always_wins(w, q):
    user, groups, perm, scope, obj, now = q
    policy = compile_world(w)
    ident = Identity(user, groups)
    held_deny = set()
    for b in policy.bindings:
        if (
            f"{b.subject_kind[0]}:{b.subject}" in ident.subjects
            and now < b.until
            and (b.scope is None or (scope is not None and b.scope in policy.scopes.chain(scope)))
        ):
            held_deny |= b.deny
    if perm in held_deny:
        assert not decide(policy, ident, perm, scope, obj, now).allowed


@SETTINGS
@given(worlds(), binding, query)
def test_adding_a_binding_without_deny_removes_nothing(w, extra, q):
    user, groups, _perm, scope, _obj, now = q
    before = effective_permissions(compile_world(w), Identity(user, groups), scope, now)
    after_policy = compile_world(w, extra=[extra])
    after = effective_permissions(after_policy, Identity(user, groups), scope, now)
    if not after_policy.roles[extra[1]].deny:
        assert before <= after
    else:
        assert before - after <= after_policy.roles[extra[1]].deny


@SETTINGS
@given(worlds(), query)
def test_a_setting_alone_grants_nothing(w, q):
    """Switching every setting on everywhere gives a user with no role exactly nothing."""
    user, _groups, _perm, scope, _obj, now = q
    everything = [(u, name, None) for u in USERS for name in SETTING_NAMES]
    policy = compile_world({**w, "bindings": []}, switches=everything)
    assert effective_permissions(policy, Identity(user, ()), scope, now) == frozenset()


@SETTINGS
@given(worlds(), switch, query)
def test_switching_a_setting_on_removes_nothing_and_adds_only_role_conditions(w, extra, q):
    user, groups, _perm, scope, _obj, now = q
    identity = Identity(user, groups)
    before_policy = compile_world(w)
    after_policy = compile_world(w, switches=[*w["switches"], extra])
    before = effective_permissions(before_policy, identity, scope, now)
    after = effective_permissions(after_policy, identity, scope, now)
    assert before <= after
    conditional = frozenset().union(*(r.conditional_permissions() for r in after_policy.roles.values()))
    assert after - before <= conditional
