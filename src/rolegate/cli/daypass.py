"""``rolegate daypass issue|list|revoke -c FILE``: day passes from the command line.

The CLI is a trusted local operator: it may issue any template at any scope the template allows,
and every action is audited as ``cli:<os user>``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rolegate.cli import EXIT_ERROR, EXIT_OK, add_config_argument, load_or_exit
from rolegate.errors import RolegateError
from rolegate.store import open_store
from rolegate.store.version_board import VersionBoard, board_path_for

EXIT_NOT_FOUND = 1


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("daypass", help="issue, list and revoke day passes")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    issue = actions.add_parser("issue", help="issue a pass; prints its link and writes its QR code")
    add_config_argument(issue)
    issue.add_argument("--template", required=True, help="a template under daypass.templates")
    issue.add_argument("--scope", required=True, help="where the pass grants access, e.g. building:a")
    issue.add_argument("--name", default="", help="the holder's name")
    issue.add_argument("--company", default="", help="the holder's company")
    issue.add_argument("--reason", default="", help="why the pass is needed (audited)")
    issue.add_argument("--out", default=".", metavar="DIR", help="where to write the QR code (PNG and SVG)")
    issue.set_defaults(run=run_issue)

    listing = actions.add_parser("list", help="list active passes (--all: recently ended ones too)")
    add_config_argument(listing)
    listing.add_argument("--all", action="store_true", help="include expired and revoked passes")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=run_list)

    revoke = actions.add_parser("revoke", help="revoke a pass by its id or its link")
    add_config_argument(revoke)
    revoke.add_argument("target", metavar="ID_OR_LINK")
    revoke.add_argument("--reason", default="", help="why (audited)")
    revoke.set_defaults(run=run_revoke)


def operator() -> str:
    """Who runs the CLI, as the audit trail names them."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


async def _with_state(config: Any, config_path: str, action: Callable[..., Awaitable[int]]) -> int:
    """Open the Store, the version board and the audit log like a worker does; close them after."""
    from rolegate.audit import AuditLog  # lazy: the audit package (see rolegate.cli)

    base_dir = Path(config_path).resolve().parent
    store = await open_store(config.storage, base_dir=base_dir)
    board = VersionBoard(board_path_for(config.storage.url, base_dir))
    audit = AuditLog.from_config(store, config, base_dir=base_dir)
    audit.start()
    try:
        return await action(store, board, audit)
    finally:
        await audit.close()
        board.close()
        await store.close()


def _needs_daypass(config: Any) -> bool:
    if config.daypass is None:
        print("rolegate: day passes are not configured (no daypass section)", file=sys.stderr)
        return False
    return True


def run_issue(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    if not _needs_daypass(config):
        return EXIT_ERROR
    from rolegate.identity.daypass import issue_pass  # lazy: day passes, aiohttp (see rolegate.cli)
    from rolegate.identity.daypass.expiry import format_local

    async def issue(store: Any, board: Any, audit: Any) -> int:
        try:
            issued = await issue_pass(
                store,
                board,
                config,
                template=args.template,
                scope=args.scope,
                name=args.name,
                company=args.company,
                reason=args.reason,
                issuer=operator(),
                issuer_may_issue=None,
                now=time.time(),
                audit=audit,
            )
        except RolegateError as exc:
            print(f"rolegate: daypass issue: {exc.public_message} ({exc.detail})", file=sys.stderr)
            return EXIT_ERROR
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        png, svg = out / f"daypass-{issued.id}.png", out / f"daypass-{issued.id}.svg"
        # The QR code *is* the credential: readable by the operator only.
        _write_private(png, issued.qr_png)
        _write_private(svg, issued.qr_svg.encode())
        zone = config.daypass.templates[args.template].timezone
        rec = issued.record
        print(
            f"Day pass {issued.id} issued: template {rec.template}, role {rec.role} at {rec.scope}, "
            f"for {rec.name or '-'} ({rec.company or '-'}), valid until {format_local(rec.expires_at, zone)}"
        )
        print(f"Link: {issued.link}")
        print(f"QR code written to {png} and {svg}")
        return EXIT_OK

    return asyncio.run(_with_state(config, args.config, issue))


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def run_list(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    if not _needs_daypass(config):
        return EXIT_ERROR
    from rolegate.identity.daypass import list_passes  # lazy: day passes, aiohttp (see rolegate.cli)
    from rolegate.identity.daypass.expiry import format_local

    async def listing(store: Any, board: Any, audit: Any) -> int:
        now = time.time()
        shown = 0
        for rec in await list_passes(store):
            status = rec.status(now)
            if status != "active" and not args.all:
                continue
            shown += 1
            if args.json:
                data = {k: v for k, v in rec.to_dict().items() if k != "code_hash"}
                print(json.dumps({**data, "status": status}, sort_keys=True))
                continue
            tpl = config.daypass.templates.get(rec.template)
            zone = tpl.timezone if tpl is not None else "UTC"
            print(
                f"{rec.id}  {status:<8} {rec.template:<14} {rec.scope:<16} until {format_local(rec.expires_at, zone)}"
                f"  devices {len(rec.redeemed)}/{rec.devices}  {rec.name} ({rec.company})  by {rec.issued_by}"
            )
        if not shown and not args.json:
            print("no active day passes" if not args.all else "no day passes")
        return EXIT_OK

    return asyncio.run(_with_state(config, args.config, listing))


def _token_service(config: Any, store: Any, board: Any) -> Any:
    """The token service, so revoking a pass also ends the app tokens redeemed from it (None: no tokens)."""
    if config.session is None and config.tokens.key_secret is None:
        return None
    try:
        from rolegate.tokens import TokenStage  # lazy: tokens, aiohttp (see rolegate.cli)

        return TokenStage(config, store, board=board, current_version=lambda: 0).service
    except Exception as exc:  # noqa: BLE001 - the pass is revoked either way; its binding is gone
        print(
            f"rolegate: daypass revoke: app tokens of the pass not revoked ({exc}); they lose all access "
            "with the pass's binding",
            file=sys.stderr,
        )
        return None


def run_revoke(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    if not _needs_daypass(config):
        return EXIT_ERROR
    # lazy: day passes, aiohttp (see rolegate.cli)
    from rolegate.identity.daypass import PassNotFound, pass_id_from, revoke_pass

    pass_id = pass_id_from(args.target)
    if pass_id is None:
        print(f"rolegate: daypass revoke: {args.target!r} is neither a pass id nor a day pass link", file=sys.stderr)
        return EXIT_ERROR

    async def revoke(store: Any, board: Any, audit: Any) -> int:
        try:
            rec, changed = await revoke_pass(
                store,
                board,
                pass_id,
                by=operator(),
                now=time.time(),
                reason=args.reason or None,
                audit=audit,
                tokens=_token_service(config, store, board),
            )
        except PassNotFound:
            print(f"rolegate: daypass revoke: no day pass {pass_id}", file=sys.stderr)
            return EXIT_NOT_FOUND
        print(
            f"Day pass {rec.id} {'revoked' if changed else 'was already revoked'} "
            f"({rec.name}, {rec.company}, {rec.scope})"
        )
        return EXIT_OK

    return asyncio.run(_with_state(config, args.config, revoke))
