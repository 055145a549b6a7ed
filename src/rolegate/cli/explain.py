"""``rolegate explain``: why would this user be allowed or denied? Exit 0 allowed, 3 denied, 2 error."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from rolegate.cli import EXIT_ERROR, EXIT_OK, add_config_argument, load_or_exit
from rolegate.errors import AmbiguousPath
from rolegate.proxy.paths import normalize_path, split_segments
from rolegate.proxy.route_table import compile_routes
from rolegate.store import StoreUnavailable, open_store
from rolegate.store.sqlite import sqlite_path

EXIT_DENIED = 3


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "explain",
        help="explain an authorization decision",
        description="Explain whether a user may make a request (exit 0 allowed, 3 denied).",
    )
    add_config_argument(parser)
    parser.add_argument("--user", required=True, help="username")
    parser.add_argument("--groups", help="comma-separated groups; stand in for the directory ('what if')")
    parser.add_argument("--daypass", help="day pass id the request is made with")
    parser.add_argument("--method", help="HTTP method (with --url)")
    parser.add_argument("--url", help="request URL or path, e.g. /buildings/a/dashboard?x=1")
    parser.add_argument("--permission", help="permission to check instead of a request")
    parser.add_argument("--scope", help="scope for --permission, e.g. building:a")
    parser.add_argument("--object", help="object for --permission, e.g. task:42")
    parser.add_argument("--at", help="evaluate at this ISO date-time instead of now")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def _fail(message: str) -> int:
    print(f"rolegate explain: {message}", file=sys.stderr)
    return EXIT_ERROR


def run(args: argparse.Namespace) -> int:
    if (args.url is None) == (args.permission is None):
        return _fail("give either --method/--url or --permission [--scope] [--object]")
    if args.url is not None and (args.scope or args.object):
        return _fail("--scope and --object go with --permission; with --url they come from the route")
    now = None
    if args.at:
        try:
            now = datetime.fromisoformat(args.at)
        except ValueError:
            return _fail(f"--at {args.at!r} is not an ISO date-time")
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
    config = load_or_exit(args.config)

    from rolegate.authz import Identity  # lazy: authz (see rolegate.cli)
    from rolegate.authz.explain import explain

    notes: list[str] = []
    policy, user = asyncio.run(_live_state(args.config, config, args.user, args.groups is None, notes))
    disabled = False
    if args.groups is not None:
        groups = [g.strip() for g in args.groups.split(",") if g.strip()]
        notes.append("groups from --groups stand in for the directory")
    elif config.directory is None:
        groups = []
        notes.append(
            "no --groups given and no directory configured: evaluated with no groups "
            "(the proxy uses the IdP's groups claim)"
        )
    elif user is None:
        groups = []
        disabled = True
        notes.append(
            f"{args.user!r} is not in the synced directory snapshot: the proxy refuses unknown users; "
            "pass --groups to ask 'what if'"
        )
    else:
        groups = sorted(user.groups)
        disabled = user.disabled
        notes.append(
            f"groups from the synced directory: {', '.join(groups) or '(none)'}"
            + ("; the account is DISABLED" if disabled else "")
        )
    identity = Identity(args.user, groups, daypass=args.daypass, disabled=disabled)
    notes.extend(f"policy: {p}" for p in policy.problems)

    if args.permission is not None:
        result = explain(policy, identity, args.permission, args.scope, args.object, now)
    else:
        result = explain_request(config, policy, identity, args.method or "GET", args.url, now)
    result.notes[:0] = notes
    _print(result.to_dict(), args.json, result.to_text())
    return EXIT_OK if result.allowed else EXIT_DENIED


def explain_request(config, policy, identity, method: str, url: str, now=None, table=None):
    """Explain a request (method + URL or path) as the proxy would decide it: normalized path, matched route.

    An ambiguous path is denied (the proxy answers it with 400). ``table``: the compiled route table,
    when the caller asks many questions of one config.
    """
    from rolegate.authz.explain import Explanation, explain_route  # lazy: authz (see rolegate.cli)

    method = method.upper()
    parts = urlsplit(url)
    host = parts.hostname if parts.scheme else None
    raw_path = parts.path or "/"
    try:
        path = normalize_path(raw_path)
    except AmbiguousPath as exc:
        return Explanation(
            False,
            f"the path {raw_path!r} is rejected (400)",
            None,
            None,
            None,
            identity.username,
            sorted(identity.groups),
            identity.daypass,
            [],
            reasons=[f"deny: the path is rejected as ambiguous (400): {exc.detail}"],
            policy_version=policy.version,
        )
    if table is None:
        table, _problems = compile_routes(config)
    match = table.match(method, host, split_segments(path))
    query = parse_qs(parts.query, keep_blank_values=True)

    def query_get(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    result = explain_route(policy, identity, match, method, path, query_get, lambda _: None, now)
    if match is not None and match.route.scope and "{header." in match.route.scope:
        result.notes.append("the scope comes from a request header, which the command line cannot supply")
    return result


async def _live_state(config_path: str, config, username: str, want_user: bool, notes: list[str]):
    """The policy the proxy enforces now (config + stored state) and the user's directory entry."""
    from rolegate.authz import compile_policy  # lazy: authz, server.policy_state (see rolegate.cli)
    from rolegate.server.policy_state import compile_live_policy

    base_dir = Path(config_path).resolve().parent
    if config.storage.url.startswith("sqlite:"):
        db = sqlite_path(config.storage.url)
        if not (db if db.is_absolute() else base_dir / db).exists():
            notes.append("no store exists yet for this config: evaluated against the config file only")
            return compile_policy(config), None
    try:
        store = await open_store(config.storage, base_dir=base_dir)
    except (StoreUnavailable, OSError, ValueError) as exc:
        notes.append(f"the store could not be opened ({exc}): evaluated against the config file only")
        return compile_policy(config), None
    try:
        policy = await compile_live_policy(config, store, time.time())
        user = None
        if want_user and config.directory is not None:
            from rolegate.directory import load_snapshot  # lazy: directory, ldap3 (see rolegate.cli)

            snapshot = await load_snapshot(store)
            user = snapshot.user(username) if snapshot is not None else None
        return policy, user
    except StoreUnavailable as exc:
        notes.append(f"the store is unavailable ({exc}): evaluated against the config file only")
        return compile_policy(config), None
    finally:
        await store.close()


def _print(payload: dict, as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        print(text)
        for note in payload.get("notes", []) if "note:" not in text else ():
            print(f"  note: {note}")
