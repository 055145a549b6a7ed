"""The ``rolegate`` command line: one module per sub-command, each with ``register`` and ``run``.

Exit codes: 0 success, 2 usage or config error, 3 denied (explain), other non-zero for failures.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from rolegate import __version__
from rolegate.config import load_config
from rolegate.errors import ConfigError
from rolegate.store.base import StoreUnavailable
from rolegate.store.migrations import MigrationRequired

# sub-command -> module under rolegate.cli; order is the order of --help.
COMMANDS = {
    "serve": "serve",
    "check": "check",
    "explain": "explain",
    "matrix": "matrix",
    "test": "cases",
    "sync": "sync",
    "daypass": "daypass",
    "apps": "apps",
    "audit": "audit",
    "migrate": "migrate",
}

EXIT_OK = 0
EXIT_ERROR = 2

# Start-up: build_parser imports every sub-command module, so `rolegate --help` and every command pay for what
# those modules import at the top. A sub-command imports inside its function ("lazy: ... (see rolegate.cli)")
# what only it needs and what costs: the server and aiohttp (serve ~350 ms, check ~290 ms), day passes and tokens
# (~215 ms each), admin.state (test, ~190 ms), identity.app_credentials and cryptography (apps, ~190 ms),
# directory and ldap3 (sync, explain, test, ~70 ms), authz (explain, test, matrix, ~25 ms), the audit package
# (audit, daypass, apps, ~20 ms), asyncpg (migrate --check, ~18 ms). Together ~450-500 ms of CPU and ~640 modules
# that `rolegate --help` (~300 ms of CPU) does not load. Config, store and proxy are imported at the top: main()
# loads the store for every command, and moving them up cost --help ~35 ms. (Process time after build_parser,
# min of 5 runs, 2026-12-07.)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rolegate", description="Identity-aware reverse proxy.")
    parser.add_argument("--version", action="version", version=f"rolegate {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(f"rolegate.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"rolegate.cli.{module_name}":
                raise
            continue
        module.register(sub)
    return parser


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="the rolegate YAML config")


def load_or_exit(path: str):
    """Load the config for a command, or print every problem and exit 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print_config_error(exc)
        raise SystemExit(EXIT_ERROR) from None


def print_config_error(exc: ConfigError) -> None:
    print(
        f"rolegate: invalid configuration ({len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}):",
        file=sys.stderr,
    )
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except ConfigError as exc:
        print_config_error(exc)
        return EXIT_ERROR
    except (StoreUnavailable, MigrationRequired) as exc:
        # The database (or Redis where it is required) cannot be used now: one line, never a traceback.
        print(f"rolegate {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
