"""``rolegate serve -c FILE``: run the proxy (master + workers) until SIGTERM."""

from __future__ import annotations

import argparse

from rolegate.cli import add_config_argument


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="run the proxy")
    add_config_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rolegate.server.master import serve  # lazy: the server, aiohttp (see rolegate.cli)

    return serve(args.config, args.log_level)
