"""Child process for the kill -9 test: emit durable events from many tasks, print ``ACK seq id`` for each.

usage: durable_child.py DB_PATH [CONCURRENCY] [JSONL_PATH]; runs until killed (or 1,000,000 events).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from rolegate.audit import AuditLog, request_event
from rolegate.audit.sinks import JsonlSink
from rolegate.store.sqlite import SQLiteStore


async def main(db_path: str, concurrency: int, jsonl: str | None) -> None:
    store = SQLiteStore(f"sqlite:///{Path(db_path).resolve()}")
    await store.open()
    log = AuditLog(store, batch_size=64, sinks=[JsonlSink(Path(jsonl))] if jsonl else None)
    log.start()
    out = sys.stdout

    async def emitter(n: int) -> None:
        for i in range(1_000_000 // concurrency):
            event = request_event(user=f"worker{n}", method="POST", path=f"/items/{n}/{i}", status=201)
            seq = await log.emit_durable(event)
            out.write(f"ACK {seq} {event.id}\n")
            out.flush()

    await asyncio.gather(*(emitter(n) for n in range(concurrency)))


if __name__ == "__main__":
    asyncio.run(
        main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 16, sys.argv[3] if len(sys.argv) > 3 else None)
    )
