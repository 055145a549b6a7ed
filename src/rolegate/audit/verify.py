"""Walk the audit chain and name the first event that was edited, deleted, inserted, moved or stored twice."""

from __future__ import annotations

import json
import os
import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rolegate.audit import checkpoint as cp
from rolegate.audit.chain import GENESIS, chain_hash
from rolegate.store.base import Store

PAGE = 5000
# Event ids remembered while walking the chain, to name one stored twice (a retried write). A retry
# lands within seconds of the first copy, so a window this wide catches it at bounded memory.
DUPLICATE_WINDOW = 1 << 20


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
    checked: int = 0  # events whose hash and link were checked
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoint_seq: int | None = None  # events up to here were pruned under a signed checkpoint
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "checkpoint_seq": self.checkpoint_seq,
            "problem": {"seq": self.problem.seq, "what": self.problem.what} if self.problem else None,
            "notes": self.notes,
        }


class CannotVerify(Exception):
    """Verification could not run (e.g. a checkpoint exists but no key is configured)."""


async def _rows(store: Store, after: int) -> AsyncIterator[dict[str, Any]]:
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


def _event_id(body: Any) -> str | None:
    try:
        event_id = json.loads(body).get("id")
    except (TypeError, ValueError, AttributeError):
        return None
    return event_id if isinstance(event_id, str) and event_id else None


def _judge(
    row: dict[str, Any], expected_seq: int, expected_prev: str, prev_seq: int | None, next_row: dict[str, Any] | None
) -> Problem | None:
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
        return Problem(
            seq, f"it does not link to {before}: an event was inserted or reordered here, or {before} was rewritten"
        )
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
            raise CannotVerify(
                "a retention checkpoint exists but no key is configured to check its signature "
                "(set audit.checkpoint_secret or session.secret as when it was written)"
            )
        if not anchor.valid(key):
            report.ok = False
            report.problem = Problem(
                None, f"its signature does not match (seq {anchor.seq}): tampered, or signed with another key"
            )
            return report
        report.checkpoint_seq = anchor.seq
        expected_seq, expected_prev = anchor.seq + 1, anchor.hash

    prev_seq: int | None = anchor.seq if anchor else None
    pending: dict[str, Any] | None = None  # judged once the next row is known (to spot an edited hash)
    # event id -> seq of the last DUPLICATE_WINDOW events: a well-chained event whose id was stored
    # before is the same event recorded twice (an audit trail that double-counts is wrong too).
    seen: dict[str, int] = {}
    order: deque[str] = deque()

    def judge(row: dict[str, Any], next_row: dict[str, Any] | None) -> bool:
        nonlocal expected_seq, expected_prev, prev_seq
        problem = _judge(row, expected_seq, expected_prev, prev_seq, next_row)
        event_id = _event_id(row["body"]) if problem is None else None
        if event_id is not None and event_id in seen:
            problem = Problem(
                row["seq"],
                f"its event id {event_id} is stored already at seq {seen[event_id]}: "
                "the same event recorded twice (a retried write)",
            )
        if problem is not None:
            report.ok, report.problem = False, problem
            return False
        if event_id is not None:
            seen[event_id] = row["seq"]
            order.append(event_id)
            if len(order) > DUPLICATE_WINDOW:
                seen.pop(order.popleft(), None)
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
                    report.problem = Problem(
                        row["seq"], "it differs from the event the signed checkpoint names: edited"
                    )
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
        report.notes.append(
            "the audit log is empty"
            if anchor is None
            else f"only the checkpoint's event (seq {anchor.seq}) is kept; every older one was pruned"
        )
    return report


def last_copied(path: str) -> tuple[int, str] | None:
    """The (seq, hash) of the newest whole line of a JSONL copy, or None when it has none."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        # Read backwards in blocks until a whole line (a torn last line after a crash is skipped).
        block, data = 65536, b""
        while True:
            start = max(0, size - len(data) - block)
            handle.seek(start)
            data = handle.read(size - start)
            for line in reversed(data.split(b"\n")[1 if start else 0 :]):
                try:
                    copy = json.loads(line)
                    if (
                        isinstance(copy, dict)
                        and isinstance(copy.get("seq"), int)
                        and isinstance(copy.get("hash"), str)
                    ):
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
        return Problem(
            seq,
            f"missing from the store, but {path} recorded it (the store ends at seq "
            f"{tail['seq'] if tail else 0}): events were cut off the end",
        )
    if rows[0]["hash"] != hash_:
        return Problem(seq, f"its hash differs from the copy in {path}: the chain was rewritten")
    return None


# -- copies (JSONL sinks) ---------------------------------------------------------------------------

# Problems listed per copy; the rest are counted.
COPY_PROBLEMS_LISTED = 20
# The widest seq span one copy may cover (a bitmap of this many bits: 32 MiB).
_MAX_SPAN = 1 << 28
_EVENT_FIELD = b',"event":'


@dataclass(slots=True)
class CopyReport:
    """What ``verify_copy`` found in one JSONL copy: every line checked, gaps and torn lines named."""

    sink: str
    lines: int = 0  # whole, well-formed event lines
    first_seq: int | None = None
    last_seq: int | None = None
    problems: list[str] = field(default_factory=list)
    unlisted: int = 0  # problems beyond COPY_PROBLEMS_LISTED
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, what: str) -> None:
        if len(self.problems) < COPY_PROBLEMS_LISTED:
            self.problems.append(what)
        else:
            self.unlisted += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "sink": self.sink,
            "ok": self.ok,
            "lines": self.lines,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "problems": self.problems,
            "unlisted_problems": self.unlisted,
            "notes": self.notes,
        }


class _Seqs:
    """The seqs seen in a copy, as a bitmap (a copy is nearly in order, but several workers interleave)."""

    __slots__ = ("base", "bits", "low", "high")

    def __init__(self) -> None:
        self.base = 0
        self.bits = bytearray()
        self.low: int | None = None
        self.high: int | None = None

    def add(self, seq: int) -> bool | None:
        """True: new; False: seen before; None: too far from the others to track."""
        low, high = self.low, self.high
        if low is None or high is None:  # both None or both set: set together below
            self.base = seq - seq % 8
        elif max(high, seq) - min(low, seq) >= _MAX_SPAN:
            return None
        if seq < self.base:
            grow = (self.base - seq + 7) // 8 + 1024
            self.bits[:0] = bytes(grow)
            self.base -= grow * 8
        index = seq - self.base
        byte, mask = index >> 3, 1 << (index & 7)
        if byte >= len(self.bits):
            self.bits.extend(bytes(byte - len(self.bits) + 1 + 1024))
        if self.bits[byte] & mask:
            return False
        self.bits[byte] |= mask
        self.low = seq if self.low is None else min(self.low, seq)
        self.high = seq if self.high is None else max(self.high, seq)
        return True

    def missing(self) -> list[tuple[int, int]]:
        """Ranges (first, last) of seqs between the lowest and highest seen that were not seen."""
        if self.low is None or self.high is None:
            return []
        gaps: list[tuple[int, int]] = []
        start: int | None = None  # first seq of the gap being walked
        previous = -2
        for match in re.finditer(rb"[^\xff]", self.bits):  # bytes with a seq missing; 0xFF bytes are whole
            byte = match.start()
            if start is not None and byte != previous + 1:
                gaps.append((start, self.base + (previous + 1) * 8 - 1))  # the whole bytes between end it
                start = None
            value = self.bits[byte]
            for bit in range(8):
                seq = self.base + byte * 8 + bit
                if seq < self.low:
                    continue
                if seq > self.high:
                    return gaps
                if value & (1 << bit):
                    if start is not None:
                        gaps.append((start, seq - 1))
                        start = None
                elif start is None:
                    start = seq
            previous = byte
        return gaps


def _read_line(line: bytes) -> tuple[int, str] | str:
    """(seq, hash) of a whole, self-consistent copy line, or why it is not one."""
    if not line.endswith(b"\n"):
        return "it has no newline: a write was cut short (torn)"
    try:
        copy = json.loads(line)
    except ValueError:
        return "it is not one whole JSON line: torn or edited"
    if not isinstance(copy, dict):
        return "it is not an event line"
    seq, hash_, prev, ts, kind = (copy.get(k) for k in ("seq", "hash", "prev_hash", "ts", "kind"))
    at = line.find(_EVENT_FIELD)
    if (
        not isinstance(seq, int)
        or isinstance(seq, bool)
        or not isinstance(hash_, str)
        or not isinstance(prev, str)
        or not isinstance(kind, str)
        or not isinstance(ts, (int, float))
        or isinstance(ts, bool)
        or at < 0
        or not line.endswith(b"}\n")
    ):
        return "it lacks seq, ts, kind, prev_hash, hash or event: not an event line"
    body = line[at + len(_EVENT_FIELD) : -2].decode("utf-8", "surrogateescape")
    if chain_hash(prev, seq, float(ts), kind, body) != hash_:
        return f"seq {seq}: its hash does not match its contents: edited"
    return seq, hash_


async def _against_store(
    store: Store, lines: list[tuple[int, str, int]], span: tuple[int, int] | None, report: CopyReport
) -> None:
    """Compare copied (seq, hash, line number) with the store's rows, a run of nearby seqs per query."""
    lines.sort()
    index = 0
    while index < len(lines):
        first = lines[index][0]
        end = index
        while end + 1 < len(lines) and lines[end + 1][0] - first < PAGE:
            end += 1
        last = lines[end][0]
        rows = await store.audit_rows(after_seq=first - 1, limit=last - first + 1)
        held = {row["seq"]: row["hash"] for row in rows}
        for seq, hash_, number in lines[index : end + 1]:
            stored = held.get(seq)
            if stored is not None:
                if stored != hash_:
                    report.problem(
                        f"seq {seq} (line {number}) differs from the store's event: one of them was "
                        "edited or the chain rewritten"
                    )
            elif span is None or seq > span[1]:
                report.problem(
                    f"seq {seq} (line {number}) is missing from the store, which ends at seq "
                    f"{span[1] if span else 0}: events were cut off the end"
                )
            elif seq >= span[0]:
                report.problem(f"seq {seq} (line {number}) is missing from the store: deleted")
        index = end + 1


async def verify_copy(store: Store, path: str | Path) -> CopyReport:
    """Check every line of a JSONL copy: whole and self-consistent (its hash), the same as the store's
    event, and no seq missing between the copy's first and last line. Events the store holds beyond the
    copy's last line are a note (they are copied just after each commit, or owed by a failing sink)."""
    path = Path(path)
    report = CopyReport(f"jsonl:{path}")
    head = await store.audit_rows(after_seq=0, limit=1)
    tail = await store.audit_tail()
    span = (head[0]["seq"], tail["seq"]) if head and tail else None
    seen = _Seqs()
    pending: list[tuple[int, str, int]] = []
    offset = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            read = _read_line(line)
            if isinstance(read, str):
                report.problem(f"line {number} (byte {offset}): {read}")
            else:
                seq, hash_ = read
                fresh = seen.add(seq)
                if fresh is None:
                    report.problem(f"line {number}: seq {seq} is far outside the copy's other seqs: edited")
                elif not fresh:
                    report.problem(f"line {number}: seq {seq} appears twice")
                else:
                    report.lines += 1
                    pending.append((seq, hash_, number))
                    if len(pending) >= PAGE:
                        await _against_store(store, pending, span, report)
                        pending = []
            offset += len(line)
    if pending:
        await _against_store(store, pending, span, report)
    report.first_seq, report.last_seq = seen.low, seen.high
    for first, last in seen.missing():
        count = last - first + 1
        held = "" if span is None or last < span[0] or first > span[1] else " (the store has them)"
        report.problem(
            f"events {first}..{last} ({count}) are missing from the copy{held}: a write that failed, or lines deleted"
            if count > 1
            else f"event {first} is missing from the copy{held}: a write that failed, or a line deleted"
        )
    if span is not None and (seen.high is None or span[1] > seen.high):
        after = seen.high + 1 if seen.high is not None else span[0]
        report.notes.append(
            f"the store holds seq {max(after, span[0])}..{span[1]}, newer than the copy's last "
            "line: not copied yet, or owed by a sink that cannot be written"
        )
    return report
