"""``rolegate apps key create|list|revoke -c FILE``: API keys of the apps configured under ``apps:``.

``create`` prints the key once, alone on stdout (``KEY=$(rolegate apps key create ...)``), and its id on
stderr; the Store keeps only a hash of its secret. ``revoke`` takes the key id (or the key itself) and bites
at the app's next request on every worker. The CLI is a trusted local operator, audited as ``cli:<os user>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime, timezone
from typing import Any

from rolegate.cli import EXIT_ERROR, EXIT_OK, add_config_argument, load_or_exit
from rolegate.cli.daypass import _with_state, operator

EXIT_NOT_FOUND = 1


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("apps", help="API keys of the apps that write the object directory")
    things = parser.add_subparsers(dest="thing", metavar="THING")
    things.required = True
    key = things.add_parser("key", help="create, list and revoke an app's API keys")
    actions = key.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    create = actions.add_parser("create", help="make a key for an app; prints it once")
    add_config_argument(create)
    create.add_argument("--app", required=True, help="an app under apps: with api_keys: true")
    create.add_argument("--label", default="", help="what the key is for (shown in lists, audited)")
    create.set_defaults(run=run_create)

    listing = actions.add_parser("list", help="list keys (never their secrets)")
    add_config_argument(listing)
    listing.add_argument("--app", help="only this app's keys")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=run_list)

    revoke = actions.add_parser("revoke", help="revoke a key by its id (or the key itself)")
    add_config_argument(revoke)
    revoke.add_argument("key", metavar="ID_OR_KEY")
    revoke.set_defaults(run=run_revoke)


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def run_create(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    app = config.apps.get(args.app)
    if app is None:
        known = ", ".join(sorted(config.apps)) or "none configured"
        print(f"rolegate: apps key create: no app {args.app!r} under apps: ({known})", file=sys.stderr)
        return EXIT_ERROR
    if not app.api_keys:
        print(
            f"rolegate: apps key create: app {args.app!r} does not accept API keys (set api_keys: true)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    from rolegate.identity.app_credentials import create_key  # lazy: identity, cryptography (see rolegate.cli)

    async def create(store: Any, board: Any, audit: Any) -> int:
        key, record = await create_key(store, args.app, by=operator(), label=args.label, audit=audit)
        print(
            f"API key {record.id} created for app {args.app}; it is shown once, below. Send it as "
            "'Authorization: Bearer <key>'.",
            file=sys.stderr,
        )
        print(key)
        return EXIT_OK

    return asyncio.run(_with_state(config, args.config, create))


def run_list(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    from rolegate.identity.app_credentials import list_keys  # lazy: identity, cryptography (see rolegate.cli)

    async def listing(store: Any, board: Any, audit: Any) -> int:
        shown = 0
        for record in await list_keys(store):
            if (args.app and record.app != args.app) or (record.revoked_at is not None and not args.all):
                continue
            shown += 1
            if args.json:
                print(
                    json.dumps(
                        {**record.public(), "status": "revoked" if record.revoked_at else "active"}, sort_keys=True
                    )
                )
                continue
            status = f"revoked {_when(record.revoked_at)} by {record.revoked_by}" if record.revoked_at else "active"
            print(
                f"{record.id}  {record.app:<16} {status:<10} created {_when(record.created_at)} by "
                f"{record.created_by}  {record.label}"
            )
        if not shown and not args.json:
            print("no API keys" if args.all else "no active API keys")
        return EXIT_OK

    return asyncio.run(_with_state(config, args.config, listing))


def run_revoke(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    # lazy: identity, cryptography (see rolegate.cli)
    from rolegate.identity.app_credentials import parse_key, revoke_key

    parsed = parse_key(args.key)
    key_id = parsed[0] if parsed is not None else args.key
    if len(key_id) != 16 or any(c not in "0123456789abcdef" for c in key_id):
        print(
            "rolegate: apps key revoke: give the key id (16 hex digits, from 'rolegate apps key list') or the key",
            file=sys.stderr,
        )
        return EXIT_ERROR

    async def revoke(store: Any, board: Any, audit: Any) -> int:
        result = await revoke_key(store, key_id, by=operator(), audit=audit)
        if result is None:
            print(f"rolegate: apps key revoke: no API key {key_id}", file=sys.stderr)
            return EXIT_NOT_FOUND
        record, changed = result
        print(f"API key {record.id} of app {record.app} {'revoked' if changed else 'was already revoked'}")
        return EXIT_OK

    return asyncio.run(_with_state(config, args.config, revoke))
