"""``rolegate audit verify|query|prune -c FILE``: prove, read and trim the audit trail.

verify exits 0 when the chain and every readable JSONL copy are intact, 1 when the chain was tampered
with (naming the first bad event) or a copy has a gap, a torn or edited line, or differs from the store,
2 when it cannot run (config, store, missing checkpoint key).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from pathlib import Path
from typing import Any

from rolegate.cli import EXIT_ERROR, EXIT_OK, add_config_argument, load_or_exit
from rolegate.store import StoreUnavailable, open_store

EXIT_TAMPERED = 1
CSV_COLUMNS = (
    "seq",
    "time",
    "kind",
    "user",
    "decision",
    "method",
    "path",
    "status",
    "permission",
    "scope",
    "object",
    "reasons",
    "client",
    "ref",
    "id",
    "hash",
    "details",
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("audit", help="verify, query or prune the audit trail")
    actions = parser.add_subparsers(dest="audit_command", metavar="ACTION")
    actions.required = True

    verify = actions.add_parser("verify", help="walk the hash chain; exit 1 naming the first tampered event")
    add_config_argument(verify)
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(run=run_verify)

    query = actions.add_parser("query", help="print events matching filters")
    add_config_argument(query)
    query.add_argument("--user", help="who acted (the signed-in user, admin or issuer)")
    query.add_argument("--path-prefix", metavar="P", help="request paths starting with P")
    query.add_argument("--decision", choices=("allow", "deny", "would-deny"))
    query.add_argument("--kind", help="decision, request, admin_change, daypass, sync, signin or signout")
    query.add_argument("--since", metavar="T", help="ISO time, epoch seconds or an age like 24h")
    query.add_argument("--until", metavar="T", help="ISO time, epoch seconds or an age like 1h")
    query.add_argument("--limit", type=int, default=1000, metavar="N")
    query.add_argument("--newest-first", action="store_true")
    query.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    query.set_defaults(run=run_query)

    prune = actions.add_parser("prune", help="apply audit.retention now (behind a signed checkpoint)")
    add_config_argument(prune)
    prune.add_argument("--older-than", metavar="T", help="override: prune events before this time or age")
    prune.set_defaults(run=run_prune)


async def _with_store(config: Any, config_path: str, action):
    store = await open_store(config.storage, base_dir=Path(config_path).resolve().parent)
    try:
        return await action(store)
    finally:
        await store.close()


def run_verify(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    from rolegate.audit.checkpoint import checkpoint_key  # lazy: the audit package (see rolegate.cli)
    from rolegate.audit.verify import CannotVerify, CopyReport, compare_with_copy, verify_chain, verify_copy

    base_dir = Path(args.config).resolve().parent
    copies = [Path(name[len("jsonl:") :]) for name in config.audit.sinks if name.startswith("jsonl:")]
    copies = [p if p.is_absolute() else base_dir / p for p in copies]
    checked: list[CopyReport] = []

    async def check(store):
        report = await verify_chain(store, checkpoint_key(config))
        for copy in copies:
            if not copy.exists():
                report.notes.append(f"{copy} does not exist; not compared")
                continue
            if report.ok:
                problem = await compare_with_copy(store, str(copy))
                if problem is not None:
                    report.ok, report.problem = False, problem
                else:
                    report.notes.append(f"the newest event in {copy} matches the store")
            # Every line of every copy: whole, unedited, the store's event, and no gap.
            checked.append(await verify_copy(store, copy))
        if "stdout" in config.audit.sinks:
            report.notes.append("the stdout sink cannot be read back here; check the copy your collector keeps")
        return report

    try:
        report = asyncio.run(_with_store(config, args.config, check))
    except (CannotVerify, StoreUnavailable, OSError) as exc:
        print(f"rolegate: audit verify: {exc}", file=sys.stderr)
        return EXIT_ERROR
    copies_ok = all(copy.ok for copy in checked)
    if args.json:
        print(
            json.dumps(
                {**report.to_json(), "ok": report.ok and copies_ok, "copies": [copy.to_json() for copy in checked]},
                indent=2,
            )
        )
        return EXIT_OK if report.ok and copies_ok else EXIT_TAMPERED
    if report.ok:
        span = f"seq {report.first_seq}..{report.last_seq}" if report.checked else "no events"
        anchor = f", anchored at signed checkpoint seq {report.checkpoint_seq}" if report.checkpoint_seq else ""
        print(f"audit chain OK: {report.checked} events ({span}){anchor}")
        for note in report.notes:
            print(f"  note: {note}")
    else:
        print(f"audit chain TAMPERED: {report.problem}")
        print(f"  {report.checked} events before it verified")
    for copy in checked:
        span = f"seq {copy.first_seq}..{copy.last_seq}" if copy.lines else "no events"
        if copy.ok:
            print(f"copy {copy.sink} OK: {copy.lines} lines ({span})")
        else:
            more = f", {copy.unlisted} more not listed" if copy.unlisted else ""
            print(
                f"copy {copy.sink} DAMAGED: {len(copy.problems) + copy.unlisted} problems in {copy.lines} "
                f"good lines ({span}){more}"
            )
            for problem in copy.problems:
                print(f"  {problem}")
        for note in copy.notes:
            print(f"  note: {note}")
    return EXIT_OK if report.ok and copies_ok else EXIT_TAMPERED


def run_query(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    # lazy: the audit package (see rolegate.cli)
    from rolegate.audit.query import AuditFilters, parse_time, query_events

    try:
        filters = AuditFilters(
            user=args.user,
            path_prefix=args.path_prefix,
            decision=args.decision,
            kind=args.kind,
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
            limit=args.limit,
            newest_first=args.newest_first,
        )
        problems = filters.problems()
        if problems:
            raise ValueError("; ".join(problems))
    except ValueError as exc:
        print(f"rolegate: audit query: {exc}", file=sys.stderr)
        return EXIT_ERROR
    events = asyncio.run(_with_store(config, args.config, lambda s: query_events(s, filters)))
    out = sys.stdout
    if args.format == "jsonl":
        for event in events:
            out.write(json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n")
    else:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for event in events:
            writer.writerow(_csv_row(event))
    return EXIT_OK


def _csv_row(event: dict[str, Any]) -> list[str]:
    shown = set(CSV_COLUMNS) | {"ts", "v"}
    details = {k: v for k, v in event.items() if k not in shown and v not in (None, [], {})}
    row = []
    for column in CSV_COLUMNS:
        value = details if column == "details" else event.get(column)
        if value is None or value == {} or value == []:
            row.append("")
        elif isinstance(value, (list, dict)):
            row.append(
                json.dumps(value, separators=(",", ":"), ensure_ascii=False)
                if column == "details"
                else "; ".join(map(str, value))
                if isinstance(value, list)
                else json.dumps(value)
            )
        else:
            text = str(value)
            # Cells starting with = + - @ are formulas to a spreadsheet: defuse them.
            row.append("'" + text if text[:1] in ("=", "+", "-", "@") else text)
    return row


def run_prune(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    from rolegate.audit.checkpoint import checkpoint_key  # lazy: the audit package (see rolegate.cli)
    from rolegate.audit.query import parse_time
    from rolegate.audit.retention import prune, prune_expired

    key = checkpoint_key(config)
    if key is None:
        print(
            "rolegate: audit prune: no key signs the checkpoint; set audit.checkpoint_secret or session.secret",
            file=sys.stderr,
        )
        return EXIT_ERROR
    if args.older_than:
        try:
            before = parse_time(args.older_than)
        except ValueError as exc:
            print(f"rolegate: audit prune: {exc}", file=sys.stderr)
            return EXIT_ERROR
        action = lambda s: prune(s, before_ts=before, key=key)  # noqa: E731
    elif config.audit.retention is not None:
        seconds = config.audit.retention.total_seconds()
        action = lambda s: prune_expired(s, retention_seconds=seconds, key=key)  # noqa: E731
    else:
        print("rolegate: audit prune: audit.retention is not set (or pass --older-than)", file=sys.stderr)
        return EXIT_ERROR
    result = asyncio.run(_with_store(config, args.config, action))
    if result.skipped:
        print(f"nothing pruned: {result.skipped}")
        if "invalid" in result.skipped:
            return EXIT_TAMPERED
    else:
        print(f"pruned {result.deleted} events; signed checkpoint at seq {result.checkpoint_seq}")
    return EXIT_OK
