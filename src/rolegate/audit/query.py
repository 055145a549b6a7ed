"""Reading the audit trail: filters shared by ``rolegate audit query`` and the admin API."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from rolegate.audit.events import KINDS
from rolegate.store.base import Store

MAX_LIMIT = 100_000
_RELATIVE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """What to select. ``user`` matches who acted; ``decision`` implies kind ``decision``."""

    user: str | None = None
    path_prefix: str | None = None
    decision: str | None = None  # allow | deny | would-deny
    kind: str | None = None
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive
    after_seq: int = 0  # paging: continue after this seq
    limit: int = 1000
    newest_first: bool = False

    def problems(self) -> list[str]:
        out = []
        if self.kind is not None and self.kind not in KINDS:
            out.append(f"unknown kind {self.kind!r}; choose from {', '.join(KINDS)}")
        if self.decision is not None and self.decision not in ("allow", "deny", "would-deny"):
            out.append("decision must be allow, deny or would-deny")
        if self.decision is not None and self.kind not in (None, "decision"):
            out.append("a decision filter selects decision events only")
        if not 1 <= self.limit <= MAX_LIMIT:
            out.append(f"limit must be between 1 and {MAX_LIMIT}")
        return out


def parse_time(text: str, now: float | None = None) -> float:
    """ISO 8601 (``2025-01-31``, ``2025-01-31T08:00:00+01:00``; naive means UTC), epoch seconds, or an
    age such as ``15m``, ``24h``, ``7d`` (that long ago)."""
    text = text.strip()
    if m := _RELATIVE.match(text):
        return (time.time() if now is None else now) - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time; write 2025-01-31T08:00:00Z, epoch seconds or an age like 24h"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def row_to_event(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the event a person or the admin API reads: seq, time, kind, hash, then the body."""
    try:
        body = json.loads(row["body"])
    except ValueError:
        body = {"unparseable_body": row["body"][:2000]}
    if not isinstance(body, dict):
        body = {"unparseable_body": row["body"][:2000]}
    ts = float(row["ts"])
    when = datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return {"seq": row["seq"], "ts": ts, "time": when, "kind": row["kind"], "hash": row["hash"], **body}


async def query_events(store: Store, filters: AuditFilters) -> list[dict[str, Any]]:
    """Events matching ``filters``, oldest first unless ``newest_first``; raises ValueError on bad filters."""
    problems = filters.problems()
    if problems:
        raise ValueError("; ".join(problems))
    kinds: tuple[str, ...] = ()
    equals: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    if filters.kind is not None:
        kinds = (filters.kind,)
    if filters.decision is not None:
        kinds = ("decision",)
        equals["decision"] = filters.decision
    if filters.user is not None:
        equals["user"] = filters.user
    if filters.path_prefix:
        prefixes["path"] = filters.path_prefix
    rows = await store.audit_find(
        after_seq=filters.after_seq,
        limit=filters.limit,
        kinds=kinds,
        since=filters.since,
        until=filters.until,
        equals=equals,
        prefixes=prefixes,
        newest_first=filters.newest_first,
    )
    return [row_to_event(r) for r in rows]
