"""Code run in separate processes by the contract tests (spawned, so it must be importable)."""

from __future__ import annotations

import asyncio
import hashlib
import time

from rolegate.config.sections.storage import StorageConfig
from rolegate.store import make_store


def chain(prev_hash: str, seq: int, ts: float, kind: str, body: str) -> str:
    """A stand-in for the audit package's chain function."""
    return hashlib.sha256(f"{prev_hash}|{seq}|{ts!r}|{kind}|{body}".encode()).hexdigest()


def append_audit(config_json: str, worker: int, batches: int, batch_size: int) -> list[int]:
    """Append ``batches`` batches through a store of this process's own; return the seqs got."""

    async def main() -> list[int]:
        store = make_store(StorageConfig.model_validate_json(config_json))
        await store.open()
        try:
            seqs: list[int] = []
            for b in range(batches):
                entries = [(time.time(), f"w{worker}", f"{worker}:{b}:{i}") for i in range(batch_size)]
                seqs += await store.append_audit(entries, chain)
            return seqs
        finally:
            await store.close()

    return asyncio.run(main())


def hold_lease(config_json: str, name: str, ready_path: str) -> None:
    """Take the lease, report whether it is held through ``ready_path``, then hold until killed."""

    async def main() -> None:
        store = make_store(StorageConfig.model_validate_json(config_json))
        await store.open()
        async with store.leader_lock(name) as lease:
            with open(ready_path + ".tmp", "w") as f:
                f.write("held" if lease else "not held")
            import os

            os.replace(ready_path + ".tmp", ready_path)
            await asyncio.sleep(3600)

    asyncio.run(main())
