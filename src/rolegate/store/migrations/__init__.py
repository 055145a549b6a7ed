"""Versioned PostgreSQL schema: ``NNNN_name.sql`` files applied in order, recorded in schema_migrations.

``rolegate migrate`` applies what is missing; a PostgreSQL store refuses to open while the database
is behind this code. Migrations only ever add (expand), so older instances keep running against a
newer schema during a rolling upgrade.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from rolegate.store.asyncpg_types import Connection

_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql\Z")
# pg_advisory_lock key held while migrating, so two `rolegate migrate` runs cannot interleave.
MIGRATION_LOCK = 0x726F6C65_6D696772  # "rolemigr"


class MigrationRequired(Exception):
    """The database schema is older than this rolegate; run ``rolegate migrate``."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def available() -> list[Migration]:
    """Every migration shipped with this rolegate, by version."""
    found = []
    for entry in resources.files(__package__).iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration files must be numbered 0001, 0002, ... without gaps; found {versions}")
    return found


def latest_version() -> int:
    return len(available())


_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


async def applied_versions(conn: Connection) -> dict[int, str]:
    """version -> checksum of what the database has; empty when it was never migrated."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    return {r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")}


async def apply(conn: Connection) -> list[Migration]:
    """Apply every missing migration, each in its own transaction; return those applied now."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(_CREATE_LEDGER)
        done = await applied_versions(conn)
        applied = []
        for migration in available():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied.append(migration)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


def changed(done: dict[int, str]) -> list[Migration]:
    """Applied migrations whose file has changed since (a packaging mistake worth a warning)."""
    return [m for m in available() if m.version in done and done[m.version] != m.checksum]
