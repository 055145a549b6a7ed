"""``rolegate sync -c FILE [--dry-run] [--force] [--json]``: one full directory sync, by hand.

Prints the diff. Exit 0 when applied (or a clean dry run), 2 for a config error, 4 when the
sync failed (directory unreachable, bad answer), 5 when refused by ``max_deletions``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TextIO

from rolegate.cli import EXIT_ERROR, EXIT_OK, add_config_argument, load_or_exit
from rolegate.store import open_store

EXIT_FAILED = 4
EXIT_REFUSED = 5
SHOW = 20  # entries per section in the human-readable report


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("sync", help="sync users and groups from the directory now")
    add_config_argument(parser)
    parser.add_argument("--dry-run", action="store_true", help="read and compare, apply nothing")
    parser.add_argument("--force", action="store_true", help="apply even past the max_deletions threshold")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    if config.directory is None:
        print(f"rolegate: {args.config} has no directory section; nothing to sync", file=sys.stderr)
        return EXIT_ERROR
    result = asyncio.run(_sync(config, dry_run=args.dry_run, force=args.force))
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, sort_keys=True, default=str))
    else:
        print_report(result, sys.stdout)
    if result.error is not None:
        return EXIT_FAILED
    if result.refused:
        return EXIT_REFUSED
    return EXIT_OK


async def _sync(config: Any, *, dry_run: bool, force: bool) -> Any:
    from rolegate.directory import DirectorySync  # lazy: directory, ldap3 (see rolegate.cli)

    store = await open_store(config.storage)
    try:
        sync = DirectorySync(config, store, progress=Progress(sys.stderr))
        return await sync.sync_now(full=True, force=force, dry_run=dry_run)
    finally:
        await store.close()


class Progress:
    """A counting line on a terminal; on anything else a line every 10,000 entries."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, what: str, count: int) -> None:
        if self.tty:
            self.stream.write(f"\rreading {what}: {count:,}   ")
            self.stream.flush()
        elif count and count % 10_000 == 0:
            print(f"reading {what}: {count:,}", file=self.stream, flush=True)


def print_report(result: Any, out: TextIO) -> None:
    """The diff for a person: counts first, then the first entries of each kind."""
    if out.isatty():
        print(file=sys.stderr)  # end the progress line
    kind = "full sync" + (" (dry run)" if result.dry_run else "")
    if result.error is not None:
        print(f"{kind} FAILED: {result.error}\nnothing was applied; the last good snapshot keeps serving", file=out)
        return
    diff = result.diff
    counts = diff.counts()
    print(f"{kind}: {result.users} users, {result.groups} groups read in {result.duration:.2f}s", file=out)
    print("changes: " + (", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v) or "none"), file=out)

    def section(title: str, items: list[Any], line: Any) -> None:
        if not items:
            return
        print(f"{title} ({len(items)}):", file=out)
        for item in items[:SHOW]:
            print(f"  {line(item)}", file=out)
        if len(items) > SHOW:
            print(f"  ... and {len(items) - SHOW} more (--json lists all)", file=out)

    def user_line(change: Any) -> str:
        parts = [change.username]
        parts += [f"{k}: {_short(o)} -> {_short(n)}" for k, (o, n) in change.fields.items() if k != "attributes"]
        if "attributes" in change.fields:
            parts.append("attributes changed")
        if change.groups_added:
            parts.append("+groups " + ",".join(change.groups_added))
        if change.groups_removed:
            parts.append("-groups " + ",".join(change.groups_removed))
        if change.roles:
            parts.append("roles " + "; ".join(change.roles))
        return "  ".join(parts)

    def group_line(change: Any) -> str:
        parts = [change.name]
        if change.renamed_from:
            parts.append(f"renamed from {change.renamed_from}")
        if change.members_added:
            parts.append(f"+{len(change.members_added)} members ({_names(change.members_added)})")
        if change.members_removed:
            parts.append(f"-{len(change.members_removed)} members ({_names(change.members_removed)})")
        return "  ".join(parts)

    section("users added", diff.users_added, user_line)
    section("users removed", diff.users_removed, user_line)
    section("users changed", diff.users_changed, user_line)
    section("groups added", diff.groups_added, group_line)
    section("groups removed", diff.groups_removed, group_line)
    section("groups changed", diff.groups_changed, group_line)
    if result.issues:
        section("directory data problems (skipped or ignored)", list(result.issues), str)
    if result.refused:
        print(
            f"REFUSED: {result.refusal}. Nothing was applied. Check the directory and the "
            f"users filter; run again with --force to apply anyway.",
            file=out,
        )
    elif result.dry_run:
        print("dry run: nothing was applied", file=out)
    elif result.applied:
        print(
            "applied" + (" (forced past max_deletions)" if result.forced and result.pending_deletions else ""), file=out
        )


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")
