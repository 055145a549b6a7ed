"""Retention by age: delete the oldest events behind a signed checkpoint, so verify still holds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rolegate.audit import checkpoint as cp
from rolegate.store.base import Store, VersionConflict

PAGE = 5000


@dataclass(frozen=True, slots=True)
class PruneResult:
    deleted: int
    checkpoint_seq: int | None  # the checkpoint now in force (None: nothing was ever pruned)
    skipped: str | None = None  # why nothing was done, when so


async def prune(
    store: Store, *, before_ts: float, key: bytes, max_events: int = 1_000_000, now: float | None = None
) -> PruneResult:
    """Delete the leading run of events older than ``before_ts`` (at most ``max_events`` per call),
    except the newest of them, which the signed checkpoint names and which stays as the chain's anchor.

    The checkpoint is written first and only then are rows deleted: a crash in between leaves rows the
    checkpoint already covers, which verify accepts. The checkpoint write is conditional on the version
    read, so two workers pruning at once cannot move it backwards.
    """
    record = await store.get(cp.NAMESPACE, cp.KEY)
    current = cp.Checkpoint.from_json(record.value) if record is not None else None
    if current is not None and not current.valid(key):
        return PruneResult(0, current.seq, "the existing checkpoint's signature is invalid; run audit verify")
    start = current.seq if current else 0
    last: dict[str, Any] | None = None
    after, budget = start, max_events
    # Events are appended in seq order but stamped when emitted, so ts is only nearly monotonic:
    # prune the contiguous run of old events and stop at the first young one.
    while budget > 0:
        page = await store.audit_rows(after_seq=after, limit=min(PAGE, budget))
        young = False
        for row in page:
            if row["ts"] >= before_ts:
                young = True
                break
            last = row
        if young or len(page) < min(PAGE, budget):
            break
        budget -= len(page)
        after = page[-1]["seq"]
    if last is None:
        return PruneResult(0, current.seq if current else None, "no event is old enough")
    anchor = cp.Checkpoint(
        last["seq"], last["hash"], float(last["ts"]), round(time.time() if now is None else now, 6)
    ).signed(key)
    try:
        await store.put(
            cp.NAMESPACE, cp.KEY, anchor.to_json(), expected_version=record.version if record is not None else 0
        )
    except VersionConflict:
        return PruneResult(0, current.seq if current else None, "another process is pruning")
    # The checkpoint's own event stays: the table is never emptied, so the Store keeps extending the
    # chain from it (an empty table would restart at seq 1 from GENESIS).
    deleted = await store.audit_delete_before(anchor.seq)
    return PruneResult(deleted, anchor.seq)


async def prune_expired(store: Store, *, retention_seconds: float, key: bytes, now: float | None = None) -> PruneResult:
    """Apply ``audit.retention``: prune events older than now - retention."""
    moment = time.time() if now is None else now
    return await prune(store, before_ts=moment - retention_seconds, key=key, now=moment)
