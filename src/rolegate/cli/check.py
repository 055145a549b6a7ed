"""``rolegate check -c FILE``: validate a config and report every problem with file, line and key."""

from __future__ import annotations

import argparse

from rolegate.cli import EXIT_ERROR, EXIT_OK, add_config_argument, load_or_exit
from rolegate.proxy.route_table import compile_routes


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("check", help="validate a config file")
    add_config_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    table, problems = compile_routes(config)
    if problems:
        print(f"rolegate: {args.config}: {len(problems)} route problem(s):")
        for problem in problems:
            print(f"  {problem}")
        return EXIT_ERROR
    # Everything else `serve` compiles before it starts or reloads: upstreams (TLS files
    # included) and redactions. A config that passes check must not fail there.
    from rolegate.server.runtime import Compiled  # lazy: the server, aiohttp (see rolegate.cli)

    Compiled(config)  # ConfigError: printed with every problem, exit 2 (see rolegate.cli.main)
    print(
        f"{args.config}: OK ({len(config.routes)} routes, {len(config.roles)} roles, "
        f"{len(config.permissions)} permissions, {len(config.upstreams)} upstreams)"
    )
    return EXIT_OK
