"""The audit chain on PostgreSQL holds every event exactly once, whatever the network did to a commit.

A commit whose answer is lost (the connection drops after COMMIT was sent: a restart, a failover) is
ambiguous: the writer retries the batch, and the event's id decides whether it is stored already.
``audit verify`` names an event stored twice, a gap and a reordering on PostgreSQL.

The first two tests use a fresh database on the machine's PostgreSQL (they stop nothing); the last one
restarts a PostgreSQL of its own (tests/support/private_services.py) under POST load through two instances.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import pytest

from rolegate.audit.chain import chain_hash
from rolegate.audit.events import AuditEvent, new_event_id
from rolegate.audit.log import AuditLog
from rolegate.audit.verify import verify_chain
from rolegate.config.sections.storage import StorageConfig
from rolegate.store import StoreUnavailable, make_store, migrate
from tests.scale.fleet import JSON, Backend, report
from tests.store.backends import fresh_database

pytestmark = [pytest.mark.lab]


class _LostAnswers:
    """A Store whose first ``lose`` audit commits succeed but answer as if the connection dropped."""

    def __init__(self, store, lose: int) -> None:
        self._store = store
        self.lose = lose

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def append_audit(self, entries, chain):
        seqs = await self._store.append_audit(entries, chain)
        if self.lose:
            self.lose -= 1
            raise StoreUnavailable("PostgreSQL is unavailable: connection was closed in the middle of operation")
        return seqs


async def _open(url: str):
    config = StorageConfig(url=url)
    await migrate(config)
    store = make_store(config)
    await store.open()
    return store


def _event(n: int) -> AuditEvent:
    return AuditEvent(
        "decision",
        {"v": 1, "id": new_event_id(), "user": "alice", "path": f"/api/{n}", "method": "POST", "decision": "allow"},
    )


async def test_a_retry_after_an_ambiguous_commit_stores_each_event_once() -> None:
    async with fresh_database() as url:
        store = await _open(url)
        try:
            audit = AuditLog(_LostAnswers(store, lose=2), linger=0)
            audit.start()
            events = [_event(n) for n in range(20)]
            # Durable writes in two waves: the first commits of each are acknowledged by nobody.
            first = await asyncio.gather(*(audit.emit_durable(e) for e in events[:10]))
            second = await asyncio.gather(*(audit.emit_durable(e) for e in events[10:]))
            await audit.close()
            rows = await store.audit_rows(limit=1000)
            report_ = await verify_chain(store, None)
        finally:
            await store.close()
    ids = [json.loads(r["body"])["id"] for r in rows]
    assert audit.failed_batches >= 2, audit.stats()  # the ambiguous commits were retried
    assert sorted(ids) == sorted(e.id for e in events), f"{len(rows)} rows for {len(events)} events"
    # Each caller got the seq its event is stored under (the one its first, unacknowledged commit gave it).
    by_id = {json.loads(r["body"])["id"]: r["seq"] for r in rows}
    assert [by_id[e.id] for e in events] == [*first, *second]
    assert report_.ok and report_.checked == len(events), report_.to_json()


async def _append_raw(store, seq: int, prev: str, body: str, ts: float = 1.0) -> str:
    """One row as an older rolegate (no event_id column filled) or a retried copy would leave it."""
    digest = chain_hash(prev, seq, ts, "decision", body)
    async with store._conn() as conn:
        await conn.execute(
            "INSERT INTO audit (seq, ts, kind, body, prev_hash, hash) VALUES ($1,$2,$3,$4,$5,$6)",
            seq,
            ts,
            "decision",
            body,
            prev,
            digest,
        )
    return digest


@pytest.mark.parametrize("damage", ["duplicate", "gap", "reorder"])
async def test_verify_names_a_duplicate_a_gap_and_a_reordering_on_postgres(damage: str) -> None:
    async with fresh_database() as url:
        store = await _open(url)
        try:
            events = [_event(n) for n in range(5)]
            audit = AuditLog(store, linger=0)
            audit.start()
            for e in events:
                await audit.emit_durable(e)
            await audit.close()
            assert (await verify_chain(store, None)).ok
            tail = await store.audit_tail()
            rows = await store.audit_rows(limit=100)
            if damage == "duplicate":
                # Event seq 2 written again, well chained, under seq 6: what a blind retry leaves.
                await _append_raw(store, 6, tail["hash"], rows[1]["body"], rows[1]["ts"])
                expect, where = "recorded twice", 6
            elif damage == "gap":
                async with store._conn() as conn:
                    await conn.execute("DELETE FROM audit WHERE seq=3")
                expect, where = "missing", 3
            else:
                async with store._conn() as conn, conn.transaction():
                    # Swap the contents of seq 3 and 4 (each row keeps its own hash and link).
                    await conn.execute("UPDATE audit SET seq=-3 WHERE seq=3")
                    await conn.execute("UPDATE audit SET seq=3 WHERE seq=4")
                    await conn.execute("UPDATE audit SET seq=4 WHERE seq=-3")
                expect, where = "", 3
            result = await verify_chain(store, None)
        finally:
            await store.close()
    assert not result.ok, result.to_json()
    assert result.problem.seq == where and expect in result.problem.what, result.to_json()


# -- three PostgreSQL restarts under write load through two instances ----------------------------------------

WRITERS_PER_INSTANCE = 6
MAX_WRITES = 20000
RESTARTS = 3


@pytest.fixture
def fleet_backend(private_backend: Backend) -> Backend:
    """This test restarts the database: its own (tests/scale/conftest.py), never the machine's."""
    return private_backend


@pytest.mark.slow
async def test_three_postgres_restarts_under_post_load_lose_and_duplicate_no_event(
    make_fleet, make_idp, lab_backend, fleet_backend
):
    from tests.scale.test_faults import audit_verify, lost_writes, start_fleet, storage_becomes

    postgres = fleet_backend.postgres
    fleet, cookie = await start_fleet(make_fleet, make_idp, lab_backend, "30s")
    await storage_becomes(fleet, "database", "ok", 15)

    class Writes:
        outcomes: list = []
        stopping = False

    load = Writes()
    load.outcomes = []

    async def writer(http: aiohttp.ClientSession, instance: int) -> None:
        from tests.scale.test_faults import Outcome

        base = fleet.urls[instance]
        while not load.stopping and len(load.outcomes) < MAX_WRITES:
            path = f"/api/load/{uuid.uuid4().hex}"
            started = time.monotonic()
            try:
                async with http.post(
                    base + path, data=b"x" * 64, headers={**JSON, "Cookie": cookie}, allow_redirects=False
                ) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 0
            load.outcomes.append(Outcome(started, time.monotonic(), "write", instance, path, status))

    async def run() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            await asyncio.gather(*(writer(http, i) for i in range(fleet.count) for _ in range(WRITERS_PER_INSTANCE)))

    runner = asyncio.ensure_future(run())
    try:
        await asyncio.sleep(1.5)
        for _ in range(RESTARTS):
            # A fast shutdown drops every connection, commits in flight included; back at once.
            await asyncio.to_thread(postgres.stop)
            await asyncio.to_thread(postgres.start)
            await storage_becomes(fleet, "database", "ok", 30)
            await asyncio.sleep(1.5)
    finally:
        load.stopping = True
        await asyncio.wait_for(runner, 60)
    acked, missing, duplicates = await lost_writes(fleet, load)
    verify = audit_verify(fleet)
    report(
        f"{RESTARTS} PostgreSQL restarts under POST load ({len(load.outcomes)} writes, 2 instances): "
        f"acknowledged {acked}, missing from audit {len(missing)}, duplicated events {duplicates}; "
        f"audit verify exit {verify.returncode}"
    )
    assert acked and not missing, missing[:5]
    assert duplicates == 0, f"{duplicates} decision events stored twice\n{fleet.log()[-3000:]}"
    assert verify.returncode == 0, verify.stdout + verify.stderr
