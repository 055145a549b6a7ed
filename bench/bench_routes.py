"""Time normalize_path and RouteTable.match with 10 and 10,000 routes.

Run: .venv/bin/python bench/bench_routes.py [--runs N] [--loops N]

Prints nanoseconds per call (median of several runs) and the 10k/10 ratio:
route lookup cost must not grow with the number of routes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rolegate.proxy.paths import normalize_path, split_segments  # noqa: E402
from rolegate.proxy.routes import RouteSpec, RouteTable  # noqa: E402

# Realistic request paths: plain (fast path), encoded (slow path), deep, 405, miss.
REQUESTS: list[tuple[str, str, str]] = [
    ("GET", "app.example.com", "/buildings/a/dashboard"),
    ("POST", "app.example.com", "/buildings/b-17/documents/2024/report.pdf"),
    ("POST", "app.example.com", "/tasks/42/controls/7/perform"),
    ("GET", "app.example.com", "/invoices/2024/INV-0001"),
    ("GET", "cdn.example.com", "/static/js/app.3f9a.js"),
    ("GET", "t3.tenant.example.com", "/api/v1/svc3/items/99/history"),
    ("GET", "app.example.com", "/buildings/a%20b/documents/%C3%A9t%C3%A9.pdf"),
    ("GET", "app.example.com", "/nothing/here/at/all"),
    ("DELETE", "app.example.com", "/tasks/42/controls/7/perform"),
]


def base_routes() -> list[RouteSpec]:
    return [
        RouteSpec("/buildings/{building}/dashboard", frozenset({"GET"}),
                  permission="dashboard:view", scope="building:{building}", upstream="app"),
        RouteSpec("/buildings/{building}/documents/**", frozenset({"POST", "PUT", "DELETE"}),
                  permission="documents:edit", scope="building:{building}", upstream="app"),
        RouteSpec("/buildings/{building}/documents/**", frozenset({"GET"}),
                  permission="documents:view", scope="building:{building}", upstream="app"),
        RouteSpec("/tasks/{task}/controls/{control}/perform", frozenset({"POST"}),
                  permission="controls:perform", object="task:{task}", upstream="app"),
        RouteSpec("/invoices/**", permission="invoices:view", upstream="app"),
        RouteSpec("/static/**", mode="public", upstream="app"),
        RouteSpec("/static/**", host="cdn.example.com", mode="public", upstream="cdn"),
        RouteSpec("/api/v1/{service}/items/{id}/history", frozenset({"GET"}),
                  host="*.tenant.example.com", permission="items:view", upstream="api"),
        RouteSpec("/", mode="public", upstream="app"),
        RouteSpec("/.well-known/**", mode="public", upstream="app"),
    ]


def many_routes(n: int) -> list[RouteSpec]:
    """``n`` routes over many prefixes and hosts, with params and catch-alls."""
    routes = base_routes()
    i = 0
    while len(routes) < n:
        k = i % 5
        if k == 0:
            routes.append(RouteSpec(f"/api/v1/svc{i}/items/{{id}}", frozenset({"GET", "PUT"}),
                                    permission=f"svc{i}:items", upstream="api"))
        elif k == 1:
            routes.append(RouteSpec(f"/api/v1/svc{i}/items/{{id}}/history", frozenset({"GET"}),
                                    host=f"t{i % 97}.tenant.example.com",
                                    permission=f"svc{i}:history", upstream="api"))
        elif k == 2:
            routes.append(RouteSpec(f"/tenants/{i}/{{area}}/**", host=f"h{i}.example.com",
                                    permission=f"t{i}:all", scope=f"client:t{i}", upstream="app"))
        elif k == 3:
            routes.append(RouteSpec(f"/apps/app{i}/**", mode="authenticated", upstream="app"))
        else:
            routes.append(RouteSpec(f"/reports/{{year}}/r{i}/{{id}}", frozenset({"GET"}),
                                    permission="reports:view", upstream="app"))
        i += 1
    return [RouteSpec(**{**_fields(r), "index": j}) for j, r in enumerate(routes[:n])]


def _fields(spec: RouteSpec) -> dict[str, object]:
    return {f: getattr(spec, f) for f in RouteSpec.__slots__ if f != "name"}


def per_call_ns(fn, args_list, loops: int) -> float:  # type: ignore[no-untyped-def]
    """Mean ns per call of ``fn`` over ``args_list`` × ``loops``."""
    start = time.perf_counter_ns()
    for _ in range(loops):
        for args in args_list:
            fn(*args)
    return (time.perf_counter_ns() - start) / (loops * len(args_list))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--loops", type=int, default=3000)
    opts = parser.parse_args()

    print(f"timing {len(REQUESTS)} request paths, {opts.loops} loops, median of {opts.runs} runs")
    norm_args = [(p,) for _, _, p in REQUESTS]
    split_args = [(normalize_path(p),) for _, _, p in REQUESTS]
    sizes = (10, 10_000)
    setups = {}
    for n in sizes:
        t0 = time.perf_counter()
        table = RouteTable.compile(many_routes(n))
        compile_ms = (time.perf_counter() - t0) * 1000
        match_args = [(m, h, split_segments(normalize_path(p))) for m, h, p in REQUESTS]
        results = [table.match(*a) for a in match_args]
        outcome = "".join("M" if r and r.method_allowed else "4" if r else "-" for r in results)
        setups[n] = (table, match_args, compile_ms, outcome)
    # Runs interleave the table sizes, so noise from other processes hits both alike.
    samples: dict[int, list[tuple[float, float, float]]] = {n: [] for n in sizes}
    for _ in range(opts.runs):
        for n in sizes:
            table, match_args, _, _ = setups[n]
            samples[n].append((
                per_call_ns(normalize_path, norm_args, opts.loops),
                per_call_ns(split_segments, split_args, opts.loops),
                per_call_ns(table.match, match_args, opts.loops),
            ))
    rows = []
    for n in sizes:
        med = [statistics.median(s[k] for s in samples[n]) for k in range(3)]
        rows.append((n, *med, setups[n][2], setups[n][3]))

    print(f"{'routes':>7} {'normalize ns':>13} {'split ns':>9} {'match ns':>9} "
          f"{'compile ms':>11}  outcomes (M=match 4=405 -=none)")
    for n, norm_ns, split_ns, match_ns, compile_ms, outcome in rows:
        print(f"{n:>7} {norm_ns:>13.0f} {split_ns:>9.0f} {match_ns:>9.0f} {compile_ms:>11.1f}  {outcome}")
    small, large = rows
    print(f"{'10k/10':>7} {large[1] / small[1]:>13.2f} {large[2] / small[2]:>9.2f} "
          f"{large[3] / small[3]:>9.2f}")
    if small[5] != large[5]:
        print("warning: the two tables answered differently", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
