"""Authorization decision latency: rolegate vs pycasbin (RBAC with domains) vs cedarpy, same policy.

Policy: 1,000 roles (10 permissions each, drawn from 2,000), 10,000 routes (each a
permission + building scope they ask for), 100,000 users holding 3 roles each at
3 buildings (300,000 scoped bindings), 5,000 buildings in 50 clients.

    .venv/bin/python bench/bench_authz.py            # about 1-2 minutes
    .venv/bin/python bench/bench_authz.py --quick    # smaller samples for the slow engines

Prints the median microseconds per decision and the ratio to rolegate. Every engine is
checked against rolegate's answers on its sample, so the speeds compare equal work. The
issue's own reference, a precomputed (user, scope) -> permission set lookup, is measured
the same three ways beside rolegate: what the memory of this machine lets any lookup
among 100,000 users cost. The script restarts itself with a fixed hash seed and no
address-space randomisation (bench/_steady.py), so that runs compare.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import _steady  # noqa: E402  (bench/_steady.py)

from rolegate.authz import Identity, compile_policy, decide  # noqa: E402
from rolegate.config.sections.policy import Binding, Role  # noqa: E402

N_ROLES, PERMS_PER_ROLE, N_PERMS = 1_000, 10, 2_000
N_ROUTES, N_USERS, BINDINGS_PER_USER = 10_000, 100_000, 3
N_BUILDINGS, N_CLIENTS = 5_000, 50


def say(msg: str) -> None:
    print(msg, flush=True)


def build_world(seed: int = 7):
    rnd = random.Random(seed)
    perms = [f"res{i // 4}:act{i % 4}" for i in range(N_PERMS)]
    roles = {f"role{i}": rnd.sample(perms, PERMS_PER_ROLE) for i in range(N_ROLES)}
    buildings = [f"b{i}" for i in range(N_BUILDINGS)]
    members = {b: f"c{i % N_CLIENTS}" for i, b in enumerate(buildings)}
    user_grants = {f"u{i}": [(f"role{rnd.randrange(N_ROLES)}", f"building:{rnd.choice(buildings)}")
                             for _ in range(BINDINGS_PER_USER)] for i in range(N_USERS)}
    routes = [(rnd.choice(perms), "building:{building}") for _ in range(N_ROUTES)]
    return perms, roles, members, user_grants, routes


def make_queries(rnd, perms, roles, user_grants, routes, n):
    """Half asking for something the user holds there, half for a random route's permission."""
    users = list(user_grants)
    out = []
    for i in range(n):
        user = rnd.choice(users)
        role, scope = rnd.choice(user_grants[user])
        perm = rnd.choice(roles[role]) if i % 2 == 0 else rnd.choice(routes)[0]
        if i % 4 == 3:
            scope = f"building:b{rnd.randrange(N_BUILDINGS)}"
        out.append((user, perm, scope))
    return out


def per_call_us(fn, items, repeat: int = 5) -> float:
    """Median over ``repeat`` runs of (time for all items / number of items), in microseconds."""
    runs = []
    for _ in range(repeat):
        gc.disable()
        t0 = time.perf_counter()
        fn(items)
        runs.append((time.perf_counter() - t0) / len(items) * 1e6)
        gc.enable()
    return statistics.median(runs)


def first_decision_us(policy, queries, now, repeat: int = 3) -> tuple[float, float]:
    """(median, mean) microseconds of a first decision: nothing memoized for that (user, scope).

    As in the proxy, the decision comes right after the identity was resolved for the
    request, so each query builds its Identity (untimed) and then decides (timed alone,
    the cost of reading the clock subtracted). The users are drawn from all 100,000, so
    what the decision reads is as cold as a new user's. The memo of other decisions stays
    filled, as in a running proxy; only this decision is forgotten before it is timed
    again (emptying the whole memo each time would charge every sample the allocation of
    a new table, which only the first decision after a policy change pays). The median is
    the usual first decision; the mean also carries the outliers (GC, dict resizes,
    memory stalls).
    """
    clock = time.perf_counter_ns
    overhead = statistics.median(-(clock() - clock()) for _ in range(20_000))
    for user, perm, scope in queries:  # none of them may be memoized by the rows before
        policy.forget(Identity(user, ()), scope, perm)
    samples: list[float] = []
    for _ in range(repeat):
        gc.disable()
        for user, perm, scope in queries:
            identity = Identity(user, ())
            t0 = clock()
            decide(policy, identity, perm, scope, None, now)
            samples.append((clock() - t0 - overhead) / 1000)
            policy.forget(identity, scope, perm)  # so that the next repeat is a first decision again
        gc.enable()
    return statistics.median(samples), statistics.fmean(samples)


def bench_rolegate(world, queries, cold_queries):
    perms, roles, members, user_grants, routes = world
    t0 = time.perf_counter()
    config = SimpleNamespace(
        permissions=tuple(perms), roles={n: Role(permissions=tuple(p)) for n, p in roles.items()},
        bindings=tuple(Binding(user=u, role=r, scope=s) for u, gs in user_grants.items() for r, s in gs),
        scopes={"client": SimpleNamespace(parent=None, members={}),
                "building": SimpleNamespace(parent="client", members=members)},
        user_settings={}, routes=())
    t1 = time.perf_counter()
    policy = compile_policy(config, version=1)
    t2 = time.perf_counter()
    say(f"rolegate: built config values in {t1 - t0:.1f}s, compiled policy in {t2 - t1:.2f}s")
    now = time.time()
    idents = {u: Identity(u, ()) for u in {q[0] for q in queries} | {q[0] for q in cold_queries}}
    hot = [(idents[u], p, s) for u, p, s in queries]

    def run(items):
        for ident, perm, scope in items:
            decide(policy, ident, perm, scope, None, now)

    run(hot)  # warm: one entry per (identity shape, scope) in the working set
    hot_us = per_call_us(run, hot)
    small = hot[:1000] * 20
    run(small)
    small_us = per_call_us(run, small)
    answers = [decide(policy, i, p, s, None, now).allowed for i, p, s in hot]

    cold_us = first_decision_us(policy, cold_queries, now)

    return policy, hot_us, small_us, cold_us, answers


def bench_reference(world, queries, cold_queries, answers, now):
    """The issue's reference: a dict (user, scope) -> frozenset of permissions, built ahead.

    Measured exactly as rolegate is (same queries, loops and single timings, an Identity
    built untimed before each single decision), so the two compare on this machine's
    memory. It knows no nested scopes, denies, expiry or groups, which this policy
    does not use; its answers are checked equal to rolegate's.
    """
    perms, roles, members, user_grants, routes = world
    table: dict[tuple[str, str], frozenset[str]] = {}
    for user, grants in user_grants.items():
        for role, scope in grants:
            key = (sys.intern(user), sys.intern(scope))
            table[key] = table.get(key, frozenset()) | frozenset(roles[role])

    def lookup(identity, perm, scope):
        held = table.get((identity.username, scope))
        return held is not None and perm in held

    idents = {u: Identity(u, ()) for u in {q[0] for q in queries}}
    hot = [(idents[u], p, s) for u, p, s in queries]
    got = [lookup(i, p, s) for i, p, s in hot]
    if got != answers:
        raise SystemExit(f"the reference disagrees with rolegate on {sum(a != b for a, b in zip(got, answers))}")

    def run(items):
        for ident, perm, scope in items:
            lookup(ident, perm, scope)

    run(hot)
    hot_us = per_call_us(run, hot)
    small = hot[:1000] * 20
    run(small)
    small_us = per_call_us(run, small)
    clock = time.perf_counter_ns
    overhead = statistics.median(-(clock() - clock()) for _ in range(20_000))
    samples = []
    for _ in range(3):
        gc.disable()
        for user, perm, scope in cold_queries:
            identity = Identity(user, ())
            t0 = clock()
            lookup(identity, perm, scope)
            samples.append((clock() - t0 - overhead) / 1000)
        gc.enable()
    return small_us, hot_us, (statistics.median(samples), statistics.fmean(samples))


def bench_match_and_decide(world, policy, now, n: int = 5_000):
    """Route match plus decision at 10,000 routes: what the proxy does per request before forwarding.

    Each route is ``GET /r<i>/buildings/{building}/things`` asking for its permission at
    ``building:{building}``. Timed per request: normalize, split, match, fill the scope
    template, decide. Returns (us per request for 1,000 requests repeated in a loop, as the
    decision rows are measured; median us of first decisions timed singly; their mean).
    """
    from rolegate.authz.explain import decide_route
    from rolegate.authz.requirement import requirement_of
    from rolegate.proxy.paths import normalize_path, split_segments
    from rolegate.proxy.routes import RouteSpec, RouteTable

    perms, roles, members, user_grants, routes = world
    specs = [RouteSpec(f"/r{i}/buildings/{{building}}/things", frozenset({"GET"}), permission=perm,
                       scope="building:{building}", upstream="app", index=i) for i, (perm, _) in enumerate(routes)]
    table = RouteTable.compile(specs)
    rnd = random.Random(3)
    users = list(user_grants)
    requests = []
    for _ in range(n):
        user = rnd.choice(users)
        _, scope = rnd.choice(user_grants[user])
        requests.append((user, f"/r{rnd.randrange(len(specs))}/buildings/{scope.split(':', 1)[1]}/things"))

    def one(identity, path):
        match = table.match("GET", "app.example.com", split_segments(normalize_path(path)))
        return decide_route(policy, identity, requirement_of(match), now)

    idents = {u: Identity(u, ()) for u, _ in requests}
    for u, path in requests:
        assert one(idents[u], path).permission  # every request matches a route
    hot = [(idents[u], path) for u, path in requests[:1000]]

    def run(items):
        for identity, path in items:
            one(identity, path)

    run(hot)
    warm = per_call_us(run, hot * 5)
    clock = time.perf_counter_ns
    overhead = statistics.median(-(clock() - clock()) for _ in range(20_000))
    for u, path in requests:  # as in first_decision_us: nothing memoized for these, the rest kept
        decision = one(idents[u], path)
        policy.forget(idents[u], decision.scope, decision.permission)
    first = []
    gc.disable()
    for u, path in requests:
        identity = Identity(u, ())
        t0 = clock()
        decision = one(identity, path)
        first.append((clock() - t0 - overhead) / 1000)
        policy.forget(identity, decision.scope, decision.permission)
    gc.enable()
    return warm, statistics.median(first), statistics.fmean(first)


N_TASKS = 50_000


def bench_objects(world, now, n: int = 5_000):
    """Issue 19: a route whose scope is the object it names (``scope: "of task:{task}"``), beside the plain route.

    Its own policy: the same roles and 300,000 bindings, plus 50,000 tasks placed in the 5,000 buildings (the
    object directory, as apps register them). 10,000 routes ``GET /r<i>/buildings/{building}/things`` (scope
    ``building:{building}``) and 10,000 ``GET /r<i>/tasks/{task}`` (scope ``of task:{task}``), same permissions.
    Each request asks for a task lying in one of the user's buildings (or, every fourth, any task). Timed per
    request: normalize, split, match, fill the template, decide - memoized (1,000 requests repeated), and first
    decisions (timed singly, nothing memoized for that user and object). Last, a task the directory does not
    know but a lookup placed (its cached answer): decided on every request from the entry, never memoized.
    Returns {row: (us, note)}.
    """
    from rolegate.authz.explain import decide_route
    from rolegate.authz.requirement import requirement_of
    from rolegate.proxy.paths import normalize_path, split_segments
    from rolegate.proxy.routes import RouteSpec, RouteTable

    perms, roles, members, user_grants, routes = world
    rnd = random.Random(5)
    buildings = [f"building:{b}" for b in members]
    tasks = {f"task:t{i}": rnd.choice(buildings) for i in range(N_TASKS)}
    by_building: dict[str, list[str]] = {}
    for task, building in tasks.items():
        by_building.setdefault(building, []).append(task.split(":", 1)[1])
    config = SimpleNamespace(
        permissions=tuple(perms), roles={n: Role(permissions=tuple(p)) for n, p in roles.items()},
        bindings=tuple(Binding(user=u, role=r, scope=s) for u, gs in user_grants.items() for r, s in gs),
        scopes={"client": SimpleNamespace(parent=None, members={}),
                "building": SimpleNamespace(parent="client", members=members),
                "task": SimpleNamespace(parent="building", members={})},
        user_settings={}, routes=())
    t0 = time.perf_counter()
    policy = compile_policy(config, scope_parents=tasks, version=2)
    say(f"objects: compiled the policy with {N_TASKS} placed tasks in {time.perf_counter() - t0:.2f}s")
    specs = [RouteSpec(f"/r{i}/buildings/{{building}}/things", frozenset({"GET"}), permission=perm,
                       scope="building:{building}", upstream="app", index=i) for i, (perm, _) in enumerate(routes)]
    specs += [RouteSpec(f"/r{i}/tasks/{{task}}", frozenset({"GET"}), permission=perm, scope="of task:{task}",
                        upstream="app", index=len(routes) + i) for i, (perm, _) in enumerate(routes)]
    table = RouteTable.compile(specs)
    users = list(user_grants)
    plain, placed = [], []
    for k in range(n):
        user = rnd.choice(users)
        _, scope = rnd.choice(user_grants[user])
        route = rnd.randrange(len(routes))
        here = by_building.get(scope) or ["t0"]
        task = rnd.choice(here) if k % 4 else f"t{rnd.randrange(N_TASKS)}"
        plain.append((user, f"/r{route}/buildings/{scope.split(':', 1)[1]}/things"))
        placed.append((user, f"/r{route}/tasks/{task}"))

    def one(identity, path):
        match = table.match("GET", "app.example.com", split_segments(normalize_path(path)))
        return decide_route(policy, identity, requirement_of(match), now)

    idents = {u: Identity(u, ()) for u, _ in plain}
    for u, path in placed:
        decision = one(idents[u], path)
        assert decision.scope.startswith("task:") and "not registered" not in str(decision.reasons[:1])
    clock = time.perf_counter_ns
    overhead = statistics.median(-(clock() - clock()) for _ in range(20_000))

    def memo_and_first(requests):
        hot = [(idents[u], path) for u, path in requests[:1000]]

        def run(items):
            for identity, path in items:
                one(identity, path)

        run(hot)
        warm = per_call_us(run, hot * 5)
        for u, path in requests:
            decision = one(idents[u], path)
            policy.forget(idents[u], decision.scope, decision.permission)
        first = []
        gc.disable()
        for u, path in requests:
            identity = Identity(u, ())
            t = clock()
            decision = one(identity, path)
            first.append((clock() - t - overhead) / 1000)
            policy.forget(identity, decision.scope, decision.permission)
        gc.enable()
        return warm, statistics.median(first), statistics.fmean(first)

    plain_warm, plain_first, plain_mean = memo_and_first(plain)
    obj_warm, obj_first, obj_mean = memo_and_first(placed)

    def decide_only(requests):  # the decision alone, the requirement filled beforehand: memo hits
        items = [(idents[u], requirement_of(table.match("GET", "app.example.com", split_segments(path))))
                 for u, path in requests[:1000]]

        def run(batch):
            for identity, req in batch:
                decide_route(policy, identity, req, now)

        run(items)
        return per_call_us(run, items * 5)

    plain_decide, obj_decide = decide_only(plain), decide_only(placed)
    # A task the directory does not know, placed by a lookup's cached answer (the proxy sets requirement.parent).
    looked = []
    for u, path in placed[:1000]:
        match = table.match("GET", "app.example.com", split_segments(normalize_path(path)))
        req = requirement_of(match)
        looked.append((idents[u], req._replace(scope=req.scope + "-new", parent=tasks[req.scope])))

    def run_looked(items):
        for identity, req in items:
            decide_route(policy, identity, req, now)

    run_looked(looked)
    looked_us = per_call_us(run_looked, looked)
    return {
        "plain decide": (plain_decide, "decide_route alone, requirement filled beforehand; 1,000 repeated"),
        "object decide": (obj_decide, "same for the of route: + the directory check (one set lookup)"),
        "plain": (plain_warm, "GET /r<i>/buildings/{building}/things: 1,000 requests repeated"),
        "plain first": (plain_first, f"same, nothing memoized; median of {n}, mean {plain_mean:.3f}"),
        "object": (obj_warm, 'GET /r<i>/tasks/{task}, scope "of task:{task}": 1,000 requests repeated'),
        "object first": (obj_first, f"same, nothing memoized; median of {n}, mean {obj_mean:.3f}"),
        "object looked up": (looked_us, "a task placed by a lookup's cached answer: decided from the entry "
                                        "(never memoized); 1,000 decisions repeated, no match"),
    }


def bench_casbin(world, queries, expected):
    try:
        import casbin
    except ImportError:
        return None, "pycasbin not installed (pip install casbin)"
    perms, roles, members, user_grants, routes = world
    model = casbin.Enforcer.new_model(text="""
[request_definition]
r = sub, dom, obj, act
[policy_definition]
p = sub, obj, act
[role_definition]
g = _, _, _
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = g(r.sub, p.sub, r.dom) && r.obj == p.obj && r.act == p.act
""")
    t0 = time.perf_counter()
    e = casbin.Enforcer(model)
    e.add_policies([[role, *perm.split(":", 1)] for role, ps in roles.items() for perm in ps])
    e.add_named_grouping_policies("g", [[u, r, s] for u, gs in user_grants.items() for r, s in gs])
    say(f"casbin: loaded {len(roles) * PERMS_PER_ROLE} p and {N_USERS * BINDINGS_PER_USER} g rules "
        f"in {time.perf_counter() - t0:.1f}s")
    items = [(u, s, *p.split(":", 1)) for u, p, s in queries]
    times, got = [], []
    for item in items:
        t = time.perf_counter()
        got.append(e.enforce(*item))
        times.append((time.perf_counter() - t) * 1e6)
    if got != expected[: len(items)]:
        return None, f"casbin disagrees with rolegate on {sum(a != b for a, b in zip(got, expected))} decisions"
    return statistics.median(times), ""


def bench_cedar(world, queries, expected):
    try:
        import cedarpy
    except ImportError:
        return None, "cedarpy not installed (pip install cedarpy)"
    perms, roles, members, user_grants, routes = world
    # One policy per role: the role's permissions are an action group; the user holds
    # the role at a scope when their `grants` contain {role, scope}.
    policy_text = "\n".join(
        f'permit(principal, action in Action::"role:{r}", resource) '
        f'when {{ principal.grants.contains({{"role": "{r}", "scope": resource.name}}) }};'
        for r in roles)
    in_roles: dict[str, list[str]] = {}
    for r, ps in roles.items():
        for p in ps:
            in_roles.setdefault(p, []).append(r)
    entities = [{"uid": {"type": "Action", "id": f"role:{r}"}, "attrs": {}, "parents": []} for r in roles]
    entities += [{"uid": {"type": "Action", "id": p}, "attrs": {},
                  "parents": [{"type": "Action", "id": f"role:{r}"} for r in in_roles.get(p, [])]} for p in perms]
    users = sorted({u for u, _, _ in queries})
    entities += [{"uid": {"type": "User", "id": u}, "parents": [],
                  "attrs": {"grants": [{"role": r, "scope": s} for r, s in user_grants[u]]}} for u in users]
    entities += [{"uid": {"type": "Scope", "id": s}, "attrs": {"name": s}, "parents": []}
                 for s in sorted({s for _, _, s in queries})]
    t0 = time.perf_counter()
    policy_set = cedarpy.PolicySet.from_str(policy_text) if hasattr(cedarpy, "PolicySet") else policy_text
    if hasattr(cedarpy, "Entities"):
        import json
        entity_set = cedarpy.Entities.from_json_str(json.dumps(entities))
    else:
        entity_set = entities
    say(f"cedar: parsed {len(roles)} policies and {len(entities)} entities in {time.perf_counter() - t0:.1f}s "
        "(pre-parsed handles, batch evaluation)")
    requests = [{"principal": f'User::"{u}"', "action": f'Action::"{p}"', "resource": f'Scope::"{s}"',
                 "context": {}} for u, p, s in queries]
    results = cedarpy.is_authorized_batch(requests, policy_set, entity_set)
    got = [r.allowed for r in results]
    if got != expected[: len(requests)]:
        return None, f"cedar disagrees with rolegate on {sum(a != b for a, b in zip(got, expected))} decisions"
    return per_call_us(lambda rs: cedarpy.is_authorized_batch(rs, policy_set, entity_set), requests, repeat=3), ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples for casbin and cedar")
    args = parser.parse_args()
    _steady.reexec()
    started = time.perf_counter()
    world = build_world()
    rnd = random.Random(11)
    perms, roles, members, user_grants, routes = world
    say(f"policy: {N_ROLES} roles, {N_ROUTES} routes, {N_USERS} users x {BINDINGS_PER_USER} scoped bindings")
    queries = make_queries(rnd, perms, roles, user_grants, routes, 20_000)
    cold_queries = make_queries(rnd, perms, roles, user_grants, routes, 5_000)
    policy, hot_us, small_us, cold_us, answers = bench_rolegate(world, queries, cold_queries)
    say(f"rolegate: {sum(answers)} of {len(answers)} sampled decisions allow")
    ref_small, ref_hot, ref_cold = bench_reference(world, queries, cold_queries, answers, time.time())
    match_us, match_first_us, match_first_mean = bench_match_and_decide(world, policy, time.time())
    objects = bench_objects(world, time.time())
    slow_n = 20 if args.quick else 100
    casbin_us, casbin_note = bench_casbin(world, queries[:slow_n], answers)
    cedar_us, cedar_note = bench_cedar(world, queries[: slow_n * 10], answers)

    rows = [("rolegate decide (memoized, 1k working set)", small_us, "1,000 distinct requests, repeated"),
            ("rolegate decide (memoized, 20k working set)", hot_us, f"{len(queries)} distinct requests"),
            ("rolegate decide (first for user+scope)", cold_us[0],
             f"median of {3 * len(cold_queries)} timed singly, nothing memoized; mean {cold_us[1]:.3f}"),
            ("rolegate match + decide, 10k routes", match_us,
             "normalize, match, scope template, decide; 1,000 requests repeated"),
            ("rolegate match + first decide, 10k routes", match_first_us,
             f"same, nothing memoized; mean {match_first_mean:.3f}"),
            ("pycasbin enforce (RBAC with domains)", casbin_us, casbin_note or f"{slow_n} decisions, each timed"),
            ("cedarpy is_authorized_batch", cedar_us, cedar_note or f"{slow_n * 10} decisions, pre-parsed")]
    say("")
    base = small_us
    say(f"{'engine':44} {'median us/decision':>19} {'x rolegate':>11}  sample")
    for name, us, note in rows:
        if us is None:
            say(f"{name:44} {'n/a':>19} {'':>11}  {note}")
        else:
            say(f"{name:44} {us:19.3f} {us / base:11.1f}  {note}")
    say("ratios are against the first row; against the 20k row divide by "
        f"{hot_us / base:.2f}")
    say("")
    say("beside the issue's reference, a precomputed (user, scope) -> set lookup, measured the same way:")
    say(f"{'':44} {'reference us':>19} {'rolegate us':>11}  rolegate / reference")
    for name, ref, ours in (("1,000 requests repeated", ref_small, small_us),
                            (f"{len(queries)} distinct requests", ref_hot, hot_us),
                            ("first decision, timed alone (median)", ref_cold[0], cold_us[0]),
                            ("first decision, timed alone (mean)", ref_cold[1], cold_us[1])):
        say(f"{name:44} {ref:19.3f} {ours:11.3f}  {ours / ref:.2f}")
    say("")
    say("object -> scope resolution (issue 19), its own policy with 50,000 placed tasks; match + decide per request:")
    say(f"{'':44} {'us/request':>19} {'x plain':>11}  sample")
    for key, label, against in (("plain decide", "plain route, decision alone, memo hit", "plain decide"),
                                ("object decide", "of task:{task}, decision alone, memo hit", "plain decide"),
                                ("plain", "plain route, memo hit", "plain"),
                                ("object", "of task:{task}, memo hit", "plain"),
                                ("plain first", "plain route, first decision", "plain first"),
                                ("object first", "of task:{task}, first decision (memo miss)", "plain first"),
                                ("object looked up", "of task:{task}, placed by the lookup", "plain decide")):
        us, note = objects[key]
        say(f"{label:44} {us:19.3f} {us / objects[against][0]:11.2f}  {note}")
    say(f"\ntotal bench time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
