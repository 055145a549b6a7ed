"""A PostgreSQL outage longer than a blip, through two real instances: readiness and writes tell the truth.

SLOW: runs its own PostgreSQL and Redis (tests/support/private_services.py); the machine's are never touched.
While the database is away no write can be recorded, so:

- every instance's /readyz turns 503 with the dedicated status ``writes_unavailable`` within a few probes,
  and once it did, every read (back to back from the moment the stop begins) says so until the database is
  started again: no flap back to 200;
- writes are refused at once (503, ``Retry-After``), not after the audit's 10 s durable timeout;
- a refused write is in the audit afterwards as refused (``"refused": "audit_unavailable"``), never as a
  plain allowed write; every write that got a 2xx has its event, once;
- everything recovers by itself when the database is back.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass

import aiohttp
import pytest

from rolegate.config.sections.storage import StorageConfig
from rolegate.store import open_store
from tests.scale.fleet import JSON, Backend, poll_until, readyz, report

pytestmark = [pytest.mark.lab, pytest.mark.slow]

OUTAGE = 15.0
WRITERS_PER_INSTANCE = 3
MAX_WRITES = 20000
# Answers each writer must get while the database is away (from 2 s after the stop to 1 s before the start):
# at once means many; waiting out the audit's 10 s durable timeout allows at most two.
MIN_ANSWERS_PER_WRITER = 5


@pytest.fixture
def fleet_backend(private_backend: Backend) -> Backend:
    """This test stops the database: its own (tests/scale/conftest.py), never the machine's."""
    return private_backend


@dataclass
class Write:
    writer: int
    started: float
    ended: float
    path: str
    status: int
    retry_after: str | None


async def test_a_database_outage_makes_readiness_false_and_refuses_writes_at_once(
    make_fleet, make_idp, lab_backend, fleet_backend
):
    from tests.scale.test_faults import start_fleet, storage_becomes

    postgres = fleet_backend.postgres
    fleet, cookie = await start_fleet(make_fleet, make_idp, lab_backend, "60s")
    await storage_becomes(fleet, "database", "ok", 15)
    writes: list[Write] = []
    stopping = False

    async def writer(http: aiohttp.ClientSession, number: int) -> None:
        base = fleet.urls[number % fleet.count]
        while not stopping and len(writes) < MAX_WRITES:
            path = f"/api/load/{uuid.uuid4().hex}"
            started = time.monotonic()
            retry_after = None
            try:
                async with http.post(
                    base + path, data=b"x" * 64, headers={**JSON, "Cookie": cookie}, allow_redirects=False
                ) as resp:
                    await resp.read()
                    status, retry_after = resp.status, resp.headers.get("Retry-After")
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 0
            writes.append(Write(number, started, time.monotonic(), path, status, retry_after))
            await asyncio.sleep(0.05)

    async def run() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            await asyncio.gather(*(writer(http, n) for n in range(fleet.count * WRITERS_PER_INSTANCE)))

    runner = asyncio.ensure_future(run())
    states: list = []
    reads: list[tuple[float, int, int, dict]] = []  # (monotonic, instance, status, body)
    watching = True
    stopping_at = stopped = 0.0

    async def watch() -> None:
        """Every instance's /readyz, from the moment the stop begins until the database is started again:
        back to back for the first seconds (the connections go and the audit's error changes meanwhile,
        partly before pg_ctl returns), then 10 times a second."""
        while watching:
            for number, proc in enumerate(fleet.procs):
                status, body = await asyncio.to_thread(readyz, proc)
                reads.append((time.monotonic(), number, status, body))
            await asyncio.sleep(0 if not stopped or time.monotonic() < stopped + 3 else 0.1)

    try:
        await asyncio.sleep(1.5)
        watcher = None
        try:
            stopping_at = time.monotonic()
            watcher = asyncio.ensure_future(watch())
            await asyncio.to_thread(postgres.stop)
            stopped = time.monotonic()

            async def not_ready() -> bool:
                return all(readyz(p)[0] == 503 for p in fleet.procs)

            ok, not_ready_in = await poll_until(not_ready, 10, 0.1)
            states = [readyz(p) for p in fleet.procs]
            assert ok, f"/readyz did not turn 503 on every instance while the database was away: {states}"
            await asyncio.sleep(max(0.0, stopped + OUTAGE - time.monotonic()))
        finally:
            watching = False
            if watcher is not None:
                await watcher
            await asyncio.to_thread(postgres.start)
        back = time.monotonic()

        async def ready() -> bool:
            return all(readyz(p)[0] == 200 for p in fleet.procs)

        ok, ready_in = await poll_until(ready, 30, 0.1)
        assert ok, f"/readyz not 200 again after the database came back: {[readyz(p) for p in fleet.procs]}"
        ready_at = time.monotonic()
        await asyncio.sleep(3)
    finally:
        stopping = True
        await asyncio.wait_for(runner, 60)

    # The audit as stored, by path.
    store = await open_store(StorageConfig(url=fleet.db_url))
    try:
        rows = await store.audit_find(
            kinds=("decision",), equals={"method": "POST"}, prefixes={"path": "/api/load/"}, limit=10 * MAX_WRITES
        )
    finally:
        await store.close()
    events: dict[str, list[dict]] = {}
    for row in rows:
        body = json.loads(row["body"])
        events.setdefault(body["path"], []).append(body)

    during = [w for w in writes if w.started >= stopped + 2 and w.ended <= back - 1]
    per_writer = {n: sum(1 for w in during if w.writer == n) for n in range(fleet.count * WRITERS_PER_INSTANCE)}
    refused = [w for w in writes if w.status == 503]
    acked = [w for w in writes if 200 <= w.status < 300]
    report(
        f"PostgreSQL stopped {back - stopped:.0f} s under POST load ({len(writes)} writes, 2 instances): /readyz "
        f"503 within {not_ready_in:.1f} s ({[s[1].get('status') for s in states]}), 200 again {ready_in:.1f} s "
        f"after the start; {len(reads)} /readyz reads from the stop on (pg_ctl took {stopped - stopping_at:.1f} s); "
        f"answers per writer during the outage {per_writer}; 503 {len(refused)}, 2xx {len(acked)}"
    )

    # Once an instance said not ready (from the stop on), every later read says so until the start: no flap
    # back to 200 while the database is away. (Before its first 503 it may still have been answering.)
    flapped = []
    for number in range(fleet.count):
        mine = [r for r in reads if r[1] == number]
        first = next((i for i, r in enumerate(mine) if r[2] == 503), None)
        assert first is not None, f"instance {number}: no 503 among {len(mine)} reads during the outage"
        flapped += [
            (
                round(at - stopped, 3),
                f"instance {n}",
                status,
                body.get("status"),
                body.get("checks", {}).get("storage"),
                body.get("checks", {}).get("audit"),
            )
            for at, n, status, body in mine[first:]
            if status != 503 or body.get("status") != "writes_unavailable"
        ]
    assert not flapped, (
        f"{len(flapped)} of {len(reads)} /readyz reads during the outage went back to ready after "
        f"a 503 (s after pg_ctl returned, instance, status, ...): {flapped[:3]}"
    )
    assert all(n >= MIN_ANSWERS_PER_WRITER for n in per_writer.values()), per_writer
    assert during and all(w.status == 503 for w in during), [w for w in during if w.status != 503][:5]
    assert all(w.retry_after for w in refused), [w for w in refused if not w.retry_after][:5]
    # A refused write is never in the audit as a plain allowed write: an allowed version a lost commit stored
    # is followed by a refused event that names it (the trail is append-only); an acknowledged one is, once.
    corrected = {e["corrects"] for path_events in events.values() for e in path_events if e.get("corrects")}
    refused_as_allowed = [
        w.path for w in refused for e in events.get(w.path, []) if "refused" not in e and e["id"] not in corrected
    ]
    assert not refused_as_allowed, refused_as_allowed[:5]
    assert all(len(events.get(w.path, [])) == 1 and "refused" not in events[w.path][0] for w in acked), [
        (w.path, events.get(w.path)) for w in acked if len(events.get(w.path, [])) != 1
    ][:5]
    # Writes pass again on both instances once /readyz says so.
    after = [w for w in writes if w.started > ready_at + 0.5]
    assert after and all(200 <= w.status < 300 for w in after), [w for w in after if w.status >= 300][:5]
