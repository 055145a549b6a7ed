"""When the audit cannot be written (a full disk, a broken sink) nothing is lost in silence.

Unit level, against a real SQLite store and real files; the whole story through ``rolegate serve`` on
a full tmpfs is tests/faults/test_full_disk.py.
"""

from __future__ import annotations

from rolegate.audit.chain import chain_hash
from rolegate.store.base import StoreUnavailable

import pytest


async def fill_audit_connection(store, pages: int = 20) -> None:
    """SQLite answers SQLITE_FULL past max_page_count, exactly as on a full disk (per connection)."""
    await store.append_audit([(1.0, "decision", "{}")], chain_hash)  # opens the audit connection
    await store._run_audit(lambda db: db.execute(f"PRAGMA max_page_count={pages}").fetchall())


async def test_a_full_database_says_so_not_cannot_rollback(store) -> None:
    await fill_audit_connection(store)
    with pytest.raises(StoreUnavailable) as failed:
        await store.append_audit([(1.0, "decision", "x" * 3000)] * 200, chain_hash)
    assert "disk is full" in str(failed.value)
    assert "cannot rollback" not in str(failed.value)
    # The connection is usable again once there is room.
    await store._run_audit(lambda db: db.execute("PRAGMA max_page_count=1000000").fetchall())
    seqs = await store.append_audit([(2.0, "decision", "{}")], chain_hash)
    assert seqs == [2]
