"""How many audit events per second one worker's AuditLog sustains into SQLite (WAL, synchronous=FULL).

Run: .venv/bin/python bench/bench_audit.py [--seconds S] [--dir DIR]

Scenarios: fire-and-forget emit (one producer, then flush), and emit_durable from 1, 64 and 256
concurrent tasks (each awaits its commit, as a write request does with durable_writes), with and
without a fsynced JSONL copy, plus verify speed. Each scenario runs for about --seconds; the whole
run stays well under a minute. Prints a table; ack latency is the time emit_durable took.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rolegate.audit import AuditLog, decision_event, request_event, verify_chain  # noqa: E402
from rolegate.audit.sinks import JsonlSink  # noqa: E402
from rolegate.store.sqlite import SQLiteStore  # noqa: E402


async def open_store(directory: Path, name: str) -> SQLiteStore:
    store = SQLiteStore(f"sqlite:///{directory / name}.db")
    await store.open()
    return store


async def bench_emit(directory: Path, seconds: float) -> dict:
    store = await open_store(directory, "emit")
    log = AuditLog(store, queue_size=1_000_000, batch_size=256)
    log.start()
    start = time.perf_counter()
    n = 0
    # Produce in slices and yield, as requests would, until the time is up; then wait for the tail.
    while time.perf_counter() - start < seconds:
        for _ in range(1000):
            log.emit(decision_event(decision="deny", user="alice", method="GET", path=f"/buildings/a/x/{n}",
                                    permission="invoices:view", scope="building:a", latency_us=40))
            n += 1
        await asyncio.sleep(0)
    emit_done = time.perf_counter()
    await log.flush()
    elapsed = time.perf_counter() - start
    await log.close()
    await store.close()
    return {"scenario": "emit (fire and forget)", "tasks": 1, "events": n, "eps": n / elapsed,
            "batch": log.written / max(1, log.batches), "p50": None, "p99": None,
            "note": f"enqueue {1e6 * (emit_done - start) / n:.1f} us/event incl. building it"}


async def bench_durable(directory: Path, seconds: float, tasks: int, jsonl: bool) -> dict:
    name = f"durable{tasks}{'j' if jsonl else ''}"
    store = await open_store(directory, name)
    sinks = [JsonlSink(directory / f"{name}.jsonl")] if jsonl else None
    log = AuditLog(store, queue_size=100_000, batch_size=256, sinks=sinks)
    log.start()
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def writer(k: int) -> None:
        i = 0
        while time.perf_counter() < stop_at:
            event = request_event(user=f"user{k}", method="POST", path=f"/tasks/{k}/controls/{i}/perform",
                                  status=201, latency_us=900)
            t0 = time.perf_counter()
            await log.emit_durable(event)
            latencies.append(time.perf_counter() - t0)
            i += 1

    start = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(tasks)))
    elapsed = time.perf_counter() - start
    await log.close()
    await store.close()
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return {"scenario": "emit_durable" + (" + jsonl fsync" if jsonl else ""), "tasks": tasks,
            "events": len(ms), "eps": len(ms) / elapsed, "batch": log.written / max(1, log.batches),
            "p50": statistics.median(ms), "p99": ms[int(len(ms) * 0.99) - 1], "note": ""}


async def bench_verify(directory: Path) -> str:
    store = await open_store(directory, "emit")
    start = time.perf_counter()
    report = await verify_chain(store, None)
    elapsed = time.perf_counter() - start
    await store.close()
    return f"verify: {report.checked} events in {elapsed:.2f}s ({report.checked / elapsed:,.0f} events/s), ok={report.ok}"


async def main(seconds: float, directory: Path) -> None:
    rows = [await bench_emit(directory, seconds)]
    for tasks, jsonl in ((1, False), (64, False), (256, False), (64, True)):
        rows.append(await bench_durable(directory, seconds, tasks, jsonl))
    print(f"{'scenario':<28} {'tasks':>5} {'events':>8} {'events/s':>10} {'avg batch':>9} "
          f"{'ack p50 ms':>10} {'ack p99 ms':>10}  note")
    for r in rows:
        p50 = f"{r['p50']:.2f}" if r["p50"] is not None else "-"
        p99 = f"{r['p99']:.2f}" if r["p99"] is not None else "-"
        print(f"{r['scenario']:<28} {r['tasks']:>5} {r['events']:>8} {r['eps']:>10,.0f} {r['batch']:>9.1f} "
              f"{p50:>10} {p99:>10}  {r['note']}")
    print(await bench_verify(directory))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each scenario")
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go (default: a temp dir)")
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(main(args.seconds, args.dir))
    else:
        with tempfile.TemporaryDirectory(prefix="rolegate-bench-audit-") as tmp:
            print(f"databases in {tmp} (SQLite WAL, synchronous=FULL)")
            asyncio.run(main(args.seconds, Path(tmp)))
