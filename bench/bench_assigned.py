"""Issue 19 parts 3-4: what "their" objects cost - decisions through ``on_assigned`` beside a plain role, the
list route's decision, and the assertion's ``where`` claim.

    .venv/bin/python bench/bench_assigned.py [--quick]

The policy: scopes region > customer > workorder; 100 customers in 4 regions, 100,000 work orders placed in
them; 10,000 technicians (role ``technician``: ``on_assigned: {workorder: [workorders:view, workorders:edit],
customer: [customers:view]}``), each assigned 10 work orders (one technician per work order), and 4 regional
managers (a plain role bound at a region) for comparison. Every figure is microseconds per call, median of
repeated runs; the ratio column is against the plain role's figure on the same line.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from types import SimpleNamespace

from rolegate.authz import Identity, compile_policy, decide
from rolegate.authz.explain import Requirement, decide_route
from rolegate.authz.where import where_held
from rolegate.config.sections.policy import Binding, Role

N_CUSTOMERS, N_WORKORDERS, N_TECHS, PER_TECH = 100, 100_000, 10_000, 10


def build(quick: bool):
    n_orders = N_WORKORDERS // 10 if quick else N_WORKORDERS
    n_techs = n_orders // PER_TECH
    regions = ["north", "south", "east", "west"]
    customers = {f"c{i}": regions[i % 4] for i in range(N_CUSTOMERS)}
    placed = {f"workorder:{i}": f"customer:c{i % N_CUSTOMERS}" for i in range(n_orders)}
    assigned = {f"workorder:{i}": [f"tech{i // PER_TECH}"] for i in range(n_orders)}
    config = SimpleNamespace(
        permissions=("workorders:view", "workorders:edit", "customers:view"),
        roles={"technician": Role(on_assigned={"workorder": ["workorders:view", "workorders:edit"],
                                               "customer": ["customers:view"]}),
               "regional_manager": Role(permissions=("workorders:view", "customers:view"))},
        bindings=(Binding(group="technicians", role="technician"),
                  *(Binding(group=f"rm-{r}", role="regional_manager", scope=f"region:{r}") for r in regions)),
        scopes={"region": SimpleNamespace(parent=None, members={}),
                "customer": SimpleNamespace(parent="region", members=customers),
                "workorder": SimpleNamespace(parent="customer", members={})},
        user_settings={}, routes=())
    t0 = time.perf_counter()
    policy = compile_policy(config, scope_parents=placed, assignments=assigned)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compile_policy(config, scope_parents=placed)
    plain_compile_s = time.perf_counter() - t0
    return policy, n_orders, n_techs, compile_s, plain_compile_s


def per_call_us(fn, items, repeat: int = 5) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(items)
        runs.append((time.perf_counter() - t0) / len(items) * 1e6)
    return statistics.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 work orders instead of 100,000")
    args = parser.parse_args()
    policy, n_orders, n_techs, compile_s, plain_compile_s = build(args.quick)
    rnd = random.Random(3)
    now = time.time()
    techs = [Identity(f"tech{t}", ["technicians"]) for t in rnd.sample(range(n_techs), 500)]
    # Each technician asks for one of his work orders; a regional manager for one in his region.
    own = [(who, f"workorder:{int(who.username[4:]) * PER_TECH + rnd.randrange(PER_TECH)}") for who in techs]
    managers = [Identity(f"m{r}", [f"rm-{r}"]) for r in ("north", "south", "east", "west")]
    plain = [(managers[int(obj.split(":")[1]) % N_CUSTOMERS % 4], obj) for _, obj in own]
    for who, obj in own + plain:
        assert decide(policy, who, "workorders:view", obj, now=now).allowed, (who, obj)

    def decide_all(items):
        for who, obj in items:
            decide(policy, who, "workorders:view", obj, now=now)

    def first_all(items):
        for who, obj in items:
            policy.forget(who, obj, "workorders:view")
            policy._index.cache.pop((who.key, obj), None)
            decide(policy, who, "workorders:view", obj, now=now)

    listed = Requirement("enforce", "workorders:view", None, None, listed=True)

    def list_all(items):
        for who, _ in items:
            decide_route(policy, who, listed, now)

    def where_all(items):
        for who, _ in items:
            where_held(policy, who, "workorders:view", now)

    rows = []
    for label, fn, note in (("decision, memo hit", decide_all, "the same 500 requests repeated"),
                            ("decision, first (memo and entry dropped)", first_all, "each request decided afresh"),
                            ("list route decision (lists: true), memo hit", list_all, "GET /workorders"),
                            ("where claim, worked out", where_all, "per assertion minted (then cached)")):
        ours, theirs = per_call_us(fn, own), per_call_us(fn, plain)
        rows.append((label, ours, theirs, note))
    print(f"{n_orders:,} work orders placed, {n_techs:,} technicians x {PER_TECH} assigned; 500 of each kind sampled")
    print(f"compile: {compile_s * 1e3:.0f} ms with the assignments, {plain_compile_s * 1e3:.0f} ms without "
          f"(x{compile_s / plain_compile_s:.2f})")
    print(f"{'':46} {'on_assigned us':>15} {'plain role us':>14} {'ratio':>7}  sample")
    for label, ours, theirs, note in rows:
        print(f"{label:46} {ours:15.3f} {theirs:14.3f} {ours / theirs:7.2f}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
