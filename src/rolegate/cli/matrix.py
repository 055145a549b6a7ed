"""``rolegate matrix``: the role x permission table (Markdown, CSV or self-contained HTML)."""

from __future__ import annotations

import argparse
import sys

from rolegate.cli import EXIT_ERROR, EXIT_OK, add_config_argument, load_or_exit


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("matrix", help="print the role x permission matrix")
    add_config_argument(parser)
    parser.add_argument("--format", choices=["md", "csv", "html"], default="md")
    parser.add_argument("--roles", help="comma-separated roles to show as columns (default: all)")
    parser.add_argument("--scope", help="only roles bound at this scope, e.g. building:a")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    from rolegate.authz.matrix import build_matrix, render  # lazy: authz (see rolegate.cli)

    roles = [r.strip() for r in args.roles.split(",") if r.strip()] if args.roles else None
    try:
        matrix = build_matrix(config, roles=roles, scope=args.scope)
    except ValueError as exc:
        print(f"rolegate matrix: {exc}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(render(matrix, args.format))
    return EXIT_OK
