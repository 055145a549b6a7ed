"""``rolegate migrate -c FILE``: bring the store's schema up to date (idempotent; prints what it did).

Run it once per upgrade, before the new version serves (e.g. a Kubernetes Job or an init container);
several concurrent runs are safe. ``--check`` applies nothing and exits 1 when migrations are pending.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from rolegate.cli import EXIT_OK, add_config_argument, load_or_exit
from rolegate.store import StoreUnavailable, migrate, migrations
from rolegate.store.urls import redact_url

EXIT_PENDING = 1
EXIT_UNAVAILABLE = 4


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("migrate", help="create or upgrade the database schema")
    add_config_argument(parser)
    parser.add_argument("--check", action="store_true", help="apply nothing; exit 1 if the schema is behind")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    storage = config.storage
    where = redact_url(storage.url)
    try:
        if args.check:
            return _check(storage, where)
        applied = asyncio.run(migrate(storage, base_dir=Path(args.config).resolve().parent))
    except StoreUnavailable as exc:
        print(f"rolegate migrate: {exc}; is the database running and storage.url right?")
        return EXIT_UNAVAILABLE
    if not storage.is_postgres:
        print(f"{where}: SQLite creates and upgrades its schema itself; nothing to migrate")
    elif applied:
        for label in applied:
            print(f"{where}: applied {label}")
    else:
        print(f"{where}: schema is up to date; nothing to apply")
    return EXIT_OK


def _check(storage, where: str) -> int:
    if not storage.is_postgres:
        print(f"{where}: SQLite needs no migrations")
        return EXIT_OK
    from rolegate.store.postgres import connect  # lazy: asyncpg (see rolegate.cli)

    async def pending() -> list[str]:
        conn = await connect(storage.url, timeout=storage.connect_timeout.total_seconds())
        try:
            done = await migrations.applied_versions(conn)
        finally:
            await conn.close()
        for changed in migrations.changed(done):
            print(f"{where}: warning: {changed.label} differs from the version that was applied")
        return [m.label for m in migrations.available() if m.version not in done]

    missing = asyncio.run(pending())
    for label in missing:
        print(f"{where}: pending {label}")
    if missing:
        print("run `rolegate migrate -c <config>` to apply")
        return EXIT_PENDING
    print(f"{where}: schema is up to date")
    return EXIT_OK
