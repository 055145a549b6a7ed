"""Issue 19: what one placement or assignment change costs each worker when the object directory is large.

    .venv/bin/python bench/bench_object_changes.py [--objects 100000] [--runs 3]

A placement (``PUT /scope-members``) or an assignment (``PUT /assignments``) bumps the policy version; every
worker then rebuilds its whole policy before its next request (``compile_live_policy``: every stored binding,
placement and assignment read from the Store, then ``compile_policy``). This measures that rebuild for
config/examples/field-service.yaml on SQLite with N work orders placed in 4 customers' worth of customers and
each assigned to one of N/10 technicians, beside the same config with no objects, and splits it into the
Store read and the compile. Median of ``--runs`` rebuilds; figures are seconds per rebuild per worker.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import yaml  # noqa: E402

from rolegate.authz import compile_policy  # noqa: E402
from rolegate.authz.stored import ASSIGNMENTS, MEMBERS, assigned_of, member_of  # noqa: E402
from rolegate.config.loader import load_config_text  # noqa: E402
from rolegate.server.policy_state import compile_live_policy  # noqa: E402
from rolegate.store import open_store  # noqa: E402

CUSTOMERS = ("c100", "c101", "c200", "c201")
CHUNK = 1000


async def fill(store, n: int) -> None:
    at = "2026-12-07T00:00:00+00:00"
    for start in range(0, n, CHUNK):
        ids = range(start, min(n, start + CHUNK))
        await store.put_many(MEMBERS, [(f"workorder:{i}", {"parent": f"customer:{CUSTOMERS[i % 4]}",
                                                           "by": "app:fieldservice", "at": at}, 0) for i in ids])
        await store.put_many(ASSIGNMENTS, [(f"workorder:{i}", {"users": [{"user": f"tech{i // 10}",
                                                                         "by": "app:fieldservice", "at": at}]}, 0)
                                           for i in ids])


async def timed(fn, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


async def measure(n: int, runs: int, tmp: Path) -> dict[str, float]:
    raw = yaml.safe_load((ROOT / "config/examples/field-service.yaml").read_text())
    raw["storage"] = {"url": f"sqlite:///{tmp}/bench-{n}.db"}
    raw.pop("daypass", None)  # no day passes stored: nothing to read there
    config = load_config_text(yaml.safe_dump(raw), base_dir=tmp)
    store = await open_store(config.storage, base_dir=tmp)
    try:
        if n:
            await fill(store, n)
        now = time.time()
        total = await timed(lambda: compile_live_policy(config, store, now), runs)

        async def read() -> None:
            await store.list(MEMBERS)
            await store.list(ASSIGNMENTS)
        read_s = await timed(read, runs)
        member_records, assigned_records = await store.list(MEMBERS), await store.list(ASSIGNMENTS)

        async def parse() -> tuple[dict, dict]:  # as compile_live_policy turns the records into its input
            return (dict(m for r in member_records if (m := member_of(r.key, r.value)) is not None),
                    {r.key: assigned_of(r.key, r.value) for r in assigned_records})
        parse_s = await timed(parse, runs)
        members, assigned = await parse()

        async def compile_only() -> None:
            compile_policy(config, scope_parents=members, assignments=assigned)
        compile_s = await timed(compile_only, runs)
    finally:
        await store.close()
    return {"total": total, "read": read_s, "parse": parse_s, "compile": compile_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        rows = [(0, asyncio.run(measure(0, args.runs, Path(d))))]
        for n in sorted({args.objects // 10, args.objects}):
            rows.append((n, asyncio.run(measure(n, args.runs, Path(d)))))
    base = rows[0][1]["total"]
    print("one placement or assignment change: the policy rebuild each worker does before its next request")
    print(f"{'work orders (placed + assigned)':>32} {'rebuild s':>10} {'store read s':>13} {'parse s':>8} "
          f"{'compile s':>10} {'ms per 1,000 objects':>21}")
    for n, r in rows:
        per = f"{(r['total'] - base) / n * 1e6:21.1f}" if n else f"{'':>21}"
        print(f"{n:>32,} {r['total']:10.3f} {r['read']:13.3f} {r['parse']:8.3f} {r['compile']:10.3f} {per}")
    print("rebuild: compile_live_policy (Store read of every namespace, parsing, compile_policy); store read: the "
          "placements and assignments alone; parse: their records into the compiler's input; compile: "
          "compile_policy alone on it")


if __name__ == "__main__":
    main()
