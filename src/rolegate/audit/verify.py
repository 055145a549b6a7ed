"""Walk the audit chain and name the first event that was edited, deleted, inserted or moved."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rolegate.audit import checkpoint as cp
from rolegate.audit.chain import GENESIS, chain_hash
from rolegate.store.base import Store

PAGE = 5000


@dataclass(slots=True)
class Problem:
    """What is wrong and where: ``seq`` is None for the checkpoint itself."""

    seq: int | None
    what: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.what}" if self.seq is not None else f"checkpoint: {self.what}"


@dataclass(slots=True)
class VerifyReport:
    ok: bool = True
    checked: int = 0                      # events whose hash and link were checked
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoint_seq: int | None = None     # events up to here were pruned under a signed checkpoint
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "first_seq": self.first_seq, "last_seq": self.last_seq,
                "checkpoint_seq": self.checkpoint_seq,
                "problem": {"seq": self.problem.seq, "what": self.problem.what} if self.problem else None,
                "notes": self.notes}


class CannotVerify(Exception):
    """Verification could not run (e.g. a checkpoint exists but no key is configured)."""


async def _rows(store: Store, after: int):
    while True:
        page = await store.audit_rows(after_seq=after, limit=PAGE)
        for row in page:
            yield row
        if len(page) < PAGE:
            return
        after = page[-1]["seq"]


def _rehash(row: dict[str, Any]) -> str | None:
    try:
        return chain_hash(row["prev_hash"], row["seq"], float(row["ts"]), row["kind"], row["body"])
    except (TypeError, ValueError, AttributeError):
        return None


def _judge(row: dict[str, Any], expected_seq: int, expected_prev: str, prev_seq: int | None,
           next_row: dict[str, Any] | None) -> Problem | None:
    seq = row["seq"]
    if seq != expected_seq:
        missing = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}..{seq - 1}"
        return Problem(expected_seq, f"event(s) {missing} are missing: deleted from the log")
    recomputed = _rehash(row)
    if recomputed is None:
        return Problem(seq, "the row is malformed (a column has the wrong type): edited")
    self_ok = recomputed == row["hash"]
    link_ok = row["prev_hash"] == expected_prev
    before = f"seq {prev_seq}" if prev_seq is not None else "the start of the chain"
    if self_ok and link_ok:
        return None
    if not self_ok and link_ok:
        if next_row is not None and next_row.get("prev_hash") == recomputed:
            return Problem(seq, "its stored hash was edited (the contents still match the next event's link)")
        return Problem(seq, "its contents (ts, kind or body) or its hash were edited after it was written")
    if self_ok and not link_ok:
        return Problem(seq, f"it does not link to {before}: an event was inserted or reordered here, "
                            f"or {before} was rewritten")
    return Problem(seq, f"it neither links to {before} nor matches its own hash: inserted, moved or edited")


async def verify_chain(store: Store, key: bytes | None) -> VerifyReport:
    """Check every kept event from the signed checkpoint (or genesis) to the tail."""
    report = VerifyReport()
    expected_seq, expected_prev = 1, GENESIS
    anchor: cp.Checkpoint | None = None
    record = await store.get(cp.NAMESPACE, cp.KEY)
    if record is not None:
        try:
            anchor = cp.Checkpoint.from_json(record.value)
        except ValueError as exc:
            report.ok, report.problem = False, Problem(None, f"malformed ({exc}): tampered")
            return report
        if key is None:
            raise CannotVerify("a retention checkpoint exists but no key is configured to check its signature "
                               "(set audit.checkpoint_secret or session.secret as when it was written)")
        if not anchor.valid(key):
            report.ok = False
            report.problem = Problem(None, f"its signature does not match (seq {anchor.seq}): tampered, "
                                           "or signed with another key")
            return report
        report.checkpoint_seq = anchor.seq
        expected_seq, expected_prev = anchor.seq + 1, anchor.hash

    prev_seq: int | None = anchor.seq if anchor else None
    pending: dict[str, Any] | None = None  # judged once the next row is known (to spot an edited hash)

    def judge(row: dict[str, Any], next_row: dict[str, Any] | None) -> bool:
        nonlocal expected_seq, expected_prev, prev_seq
        problem = _judge(row, expected_seq, expected_prev, prev_seq, next_row)
        if problem is not None:
            report.ok, report.problem = False, problem
            return False
        report.checked += 1
        report.first_seq = report.first_seq or row["seq"]
        report.last_seq = row["seq"]
        expected_seq, expected_prev, prev_seq = row["seq"] + 1, row["hash"], row["seq"]
        return True

    anchor_seen = anchor is None
    async for row in _rows(store, 0 if anchor is None else anchor.seq - 1):
        if anchor is not None and row["seq"] <= anchor.seq:
            # Pruning keeps the checkpoint's own event (and, after a crash mid-prune, older ones: those
            # were skipped by the query above); it must be exactly the event the checkpoint names.
            if row["seq"] == anchor.seq:
                anchor_seen = True
                if row["hash"] != anchor.hash or _rehash(row) != anchor.hash:
                    report.ok = False
                    report.problem = Problem(row["seq"], "it differs from the event the signed checkpoint names: "
                                                         "edited")
                    return report
            continue
        if not anchor_seen:
            assert anchor is not None
            report.ok = False
            report.problem = Problem(anchor.seq, "the event the signed checkpoint names is missing: deleted")
            return report
        if pending is not None and not judge(pending, row):
            return report
        pending = row
    if pending is not None:
        judge(pending, None)
    elif not anchor_seen:
        assert anchor is not None
        report.ok = False
        report.problem = Problem(anchor.seq, "the event the signed checkpoint names is missing: deleted")
        return report
    if report.ok and report.checked == 0:
        report.notes.append("the audit log is empty" if anchor is None else
                            f"only the checkpoint's event (seq {anchor.seq}) is kept; every older one was pruned")
    return report


def last_copied(path: str) -> tuple[int, str] | None:
    """The (seq, hash) of the newest whole line of a JSONL copy, or None when it has none."""
    import json
    import os

    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        # Read backwards in blocks until a whole line (a torn last line after a crash is skipped).
        block, data = 65536, b""
        while True:
            start = max(0, size - len(data) - block)
            handle.seek(start)
            data = handle.read(size - start)
            for line in reversed(data.split(b"\n")[1 if start else 0:]):
                try:
                    copy = json.loads(line)
                    if isinstance(copy, dict) and isinstance(copy.get("seq"), int) and isinstance(copy.get("hash"), str):
                        return copy["seq"], copy["hash"]
                except ValueError:
                    continue
            if start == 0:
                return None


async def compare_with_copy(store: Store, path: str) -> Problem | None:
    """Check the store still holds the newest event a JSONL copy recorded, unchanged: this catches
    events cut off the end of the log and a rewritten, re-hashed tail, which the chain alone cannot."""
    newest = last_copied(path)
    if newest is None:
        return None
    seq, hash_ = newest
    rows = await store.audit_rows(after_seq=seq - 1, limit=1)
    if not rows or rows[0]["seq"] != seq:
        tail = await store.audit_tail()
        return Problem(seq, f"missing from the store, but {path} recorded it (the store ends at seq "
                            f"{tail['seq'] if tail else 0}): events were cut off the end")
    if rows[0]["hash"] != hash_:
        return Problem(seq, f"its hash differs from the copy in {path}: the chain was rewritten")
    return None
