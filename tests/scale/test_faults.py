"""PostgreSQL and Redis go away under load, through two real ``rolegate serve`` instances.

SLOW: each test runs its own PostgreSQL cluster and Redis server (tests/support/private_services.py,
``fleet_backend`` below) and stops / starts those; the machine's shared servers are never touched. A
bounded load (4 clients per instance, reads and writes with a signed-in session, for at most ~25 s)
runs throughout; afterwards:

- 5xx only inside the outage window (plus the few seconds the pools need to reconnect);
- no lost audit event: every write that got a 2xx has its durable decision event in ``audit``;
- sign-ins during the outage fail closed (no session cookie, the next request is 401);
- decisions are served from the last known state while the outage is shorter than
  ``storage.max_staleness``, and the first request after that bound is refused (503; /readyz 503);
- /readyz reports the outage on every instance, and everything recovers by itself: every wait for
  recovery ends in an assertion naming what was observed when it did not come.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import pytest

from rolegate.config.sections.storage import StorageConfig
from rolegate.store import open_store
from rolegate_lab import idp_login, lab_client_session
from tests.scale.fleet import HTML, JSON, Backend, Fleet, poll_until, readyz, report, sign_in

pytestmark = [pytest.mark.lab, pytest.mark.slow]

CLIENTS_PER_INSTANCE = 4
MAX_REQUESTS = 20000
# Pools reconnect on their next use; allow this long after the server is back before 5xx count as bugs.
RECOVERY_GRACE = 5.0
# How long /readyz and the pools may take to see the servers back before the test calls it a failure.
RECOVERY_TIMEOUT = 30.0


@pytest.fixture
def fleet_backend(private_backend: Backend) -> Backend:
    """These tests stop and start the servers: their own (tests/scale/conftest.py), never the machine's."""
    return private_backend


@dataclass
class Outcome:
    started: float
    ended: float
    kind: str  # "read" | "write"
    instance: int
    path: str
    status: int  # 0: connection error / timeout


@dataclass
class Load:
    """Authenticated reads and writes through every instance until stopped (bounded in count)."""

    fleet: Fleet
    cookie: str
    outcomes: list[Outcome] = field(default_factory=list)
    stopping: bool = False

    async def client(self, http: aiohttp.ClientSession, instance: int) -> None:
        base = self.fleet.urls[instance]
        n = 0
        while not self.stopping and len(self.outcomes) < MAX_REQUESTS:
            n += 1
            kind = "write" if n % 2 == 0 else "read"
            path = f"/api/load/{uuid.uuid4().hex}"
            started = time.monotonic()
            try:
                async with http.request(
                    "POST" if kind == "write" else "GET",
                    base + path,
                    data=b"x" * 64,
                    headers={**JSON, "Cookie": self.cookie},
                    allow_redirects=False,
                ) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 0
            self.outcomes.append(Outcome(started, time.monotonic(), kind, instance, path, status))
            await asyncio.sleep(0.01)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await asyncio.gather(
                *(self.client(http, i) for i in range(self.fleet.count) for _ in range(CLIENTS_PER_INSTANCE))
            )

    def summary(self, window: tuple[float, float]) -> dict[str, int]:
        lo, hi = window
        out: dict[str, int] = {}
        for o in self.outcomes:
            when = "outage" if o.ended >= lo and o.started <= hi else "normal"
            klass = (
                "2xx"
                if 200 <= o.status < 300
                else ("5xx" if o.status >= 500 else ("conn" if o.status == 0 else str(o.status)))
            )
            key = f"{o.kind}/{when}/{klass}"
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))


async def try_sign_in(base: str, username: str) -> tuple[int, str | None]:
    """A new sign-in through the IdP; (callback status, session cookie or None)."""
    async with lab_client_session() as http:
        async with http.get(f"{base}/.rolegate/login", params={"rd": "/"}, headers=HTML, allow_redirects=False) as resp:
            if resp.status != 302:
                return resp.status, None
            location = resp.headers["Location"]
        callback = await idp_login(http, location, username, "demo")
        async with http.get(callback.url, headers=HTML, allow_redirects=False) as resp:
            await resp.read()
            cookies = [m for m in resp.cookies.values() if m.value and not m.key.startswith("rolegate_login_")]
            return resp.status, "; ".join(f"{m.key}={m.value}" for m in cookies) or None


async def lost_writes(fleet: Fleet, load: Load) -> tuple[int, list[str], int]:
    """(acknowledged writes, those without a decision event in the audit table, duplicate events)."""
    acked = [o.path for o in load.outcomes if o.kind == "write" and 200 <= o.status < 300]
    store = await open_store(StorageConfig(url=fleet.db_url))
    try:
        rows = await store.audit_find(
            kinds=("decision",), equals={"method": "POST"}, prefixes={"path": "/api/load/"}, limit=10 * MAX_REQUESTS
        )
    finally:
        await store.close()
    seen: dict[str, int] = {}
    for row in rows:
        path = json.loads(row["body"])["path"]
        seen[path] = seen.get(path, 0) + 1
    return len(acked), [p for p in acked if p not in seen], sum(n - 1 for n in seen.values() if n > 1)


def audit_verify(fleet: Fleet) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rolegate", "audit", "verify", "-c", str(fleet.procs[0].config_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def storage_states(fleet: Fleet) -> list[tuple[int, dict]]:
    out = []
    for proc in fleet.procs:
        status, body = readyz(proc)
        out.append((status, body.get("checks", {}).get("storage", {})))
    return out


async def start_fleet(make_fleet, make_idp, lab_backend, max_staleness: str) -> tuple[Fleet, str]:
    fleet = make_fleet(2, workers=1)
    idp = make_idp([fleet.client()])
    fleet.start([fleet.config(i, idp, lab_backend.url, storage={"max_staleness": max_staleness}) for i in range(2)])
    async with lab_client_session() as browser:
        cookie = await sign_in(browser, fleet.urls[0], "alice")
    return fleet, cookie


async def storage_becomes(fleet: Fleet, part: str, state: str, timeout: float) -> float:
    """Wait until every instance's /readyz says ``part`` is ``state``; seconds it took. Fails loudly, with what
    /readyz said and the instances' last output, when that does not happen within ``timeout``."""

    async def check() -> bool:
        return all(s.get(part) == state for _, s in storage_states(fleet))

    ok, took = await poll_until(check, timeout, 0.1)
    assert ok, (
        f"/readyz storage.{part} not {state!r} on every instance after {took:.1f} s: "
        f"{storage_states(fleet)}\n{fleet.log()[-3000:]}"
    )
    return took


def in_window(o: Outcome, window: tuple[float, float]) -> bool:
    return o.ended >= window[0] and o.started <= window[1]


async def test_postgres_restart_under_load_within_max_staleness(make_fleet, make_idp, lab_backend, fleet_backend):
    """PostgreSQL stopped for ~3 s (max_staleness 30 s): reads keep being decided, writes wait or fail."""
    postgres = fleet_backend.postgres
    fleet, cookie = await start_fleet(make_fleet, make_idp, lab_backend, "30s")
    await storage_becomes(fleet, "database", "ok", 15)
    load = Load(fleet, cookie)
    runner = asyncio.ensure_future(load.run())
    signin_during = readyz_during = None
    try:
        await asyncio.sleep(2)
        outage_start = time.monotonic()
        try:
            await asyncio.to_thread(postgres.stop)
            stopped = time.monotonic()
            await storage_becomes(fleet, "database", "unavailable", 10)
            readyz_during = storage_states(fleet)
            signin_during = await try_sign_in(fleet.urls[1], "erin")
            await asyncio.sleep(max(0.0, 3 - (time.monotonic() - stopped)))
        finally:
            await asyncio.to_thread(postgres.start)
        back = time.monotonic()
        recovered_in = await storage_becomes(fleet, "database", "ok", RECOVERY_TIMEOUT)

        async def writes_pass_everywhere() -> bool:
            recent = [o for o in load.outcomes if o.kind == "write" and o.started > time.monotonic() - 1]
            return all(any(o.instance == i and 200 <= o.status < 300 for o in recent) for i in range(fleet.count))

        ok, writes_in = await poll_until(writes_pass_everywhere, RECOVERY_TIMEOUT, 0.1)
        assert ok, (
            f"writes did not pass again on every instance {writes_in:.0f} s after PostgreSQL was back: "
            f"{load.summary((outage_start, time.monotonic()))}\n{fleet.log()[-3000:]}"
        )
        # Keep the load on past the grace, so what comes after the outage is seen, not assumed.
        await asyncio.sleep(max(2.0, back + RECOVERY_GRACE + 2 - time.monotonic()))
    finally:
        load.stopping = True
        await asyncio.wait_for(runner, 60)

    window = (outage_start, back + RECOVERY_GRACE)
    summary = load.summary(window)
    acked, missing, duplicates = await lost_writes(fleet, load)
    report(
        f"PostgreSQL stop {back - outage_start:.1f} s under load ({len(load.outcomes)} requests, 2 instances): "
        f"{summary}; /readyz ok again {recovered_in:.1f} s after start, writes pass again {writes_in:.1f} s after; "
        f"acknowledged writes {acked}, missing from audit {len(missing)}, duplicated events {duplicates}; "
        f"sign-in during outage -> {signin_during[0]}"
    )

    # 5xx / connection errors only inside the outage window.
    outside = [o for o in load.outcomes if (o.status >= 500 or o.status == 0) and not in_window(o, window)]
    assert not outside, outside[:5]
    # After the grace every request passes again on both instances, with the session signed in before.
    after = [o for o in load.outcomes if o.started > window[1]]
    assert {o.instance for o in after} == {0, 1} and all(200 <= o.status < 300 for o in after), summary
    # Decisions kept being served from the last known state (max_staleness 30 s > the outage).
    during_reads = [o for o in load.outcomes if o.kind == "read" and o.started >= outage_start and o.ended <= back]
    refused = [o for o in during_reads if o.status != 200]
    errors = [line for line in fleet.log().splitlines() if " -> 5" in line or "Error: " in line]
    assert during_reads and not refused, "\n".join(
        [f"reads refused within max_staleness: {summary}", *map(str, refused[:5]), *errors[:20]]
    )
    # No acknowledged write without its audit event.
    assert acked and not missing, missing[:5]
    # A new sign-in during the outage failed closed: no session came out of it.
    status, new_cookie = signin_during
    assert status >= 500 and new_cookie is None, signin_during
    # The database went "unavailable" on every instance's /readyz, which still answered.
    assert all(s.get("database") == "unavailable" for _, s in readyz_during), readyz_during
    assert all(code == 200 for code, _ in storage_states(fleet)), storage_states(fleet)
    result = audit_verify(fleet)
    assert result.returncode == 0, result.stdout + result.stderr
    # A sign-in works again, by itself.
    status, new_cookie = await try_sign_in(fleet.urls[1], "erin")
    assert status == 302 and new_cookie, (status, new_cookie)


async def test_postgres_outage_longer_than_max_staleness_fails_closed_then_recovers(
    make_fleet, make_idp, lab_backend, fleet_backend
):
    """docs/operations.md (Scale-out): "decisions keep being served from the last known state for at most
    storage.max_staleness, then fail closed (503)": the first request after that bound is refused on every
    instance."""
    postgres = fleet_backend.postgres
    max_staleness = 3.0
    fleet, cookie = await start_fleet(make_fleet, make_idp, lab_backend, f"{max_staleness:.0f}s")
    await storage_becomes(fleet, "database", "ok", 15)
    probe_timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=probe_timeout) as http:

        async def read(i: int) -> int:
            async with http.get(fleet.urls[i] + "/api/notes/1", headers={**JSON, "Cookie": cookie}) as resp:
                await resp.read()
                return resp.status

        assert [await read(i) for i in range(2)] == [200, 200]
        try:
            await asyncio.to_thread(postgres.stop)
            stopped = time.monotonic()
            # Within max_staleness: served from the last known state (a worker last heard from the Store at
            # most one Store poll before the stop, so the first reads are well inside the bound).
            first = [await read(i) for i in range(2)]
            # The bound: nothing between here and the reads below touches the instances.
            await asyncio.sleep(max(0.0, stopped + max_staleness + 0.3 - time.monotonic()))
            refused = [await read(i) for i in range(2)]

            async def not_ready() -> bool:
                return all(code == 503 for code, _ in storage_states(fleet))

            ok, _ = await poll_until(not_ready, 10, 0.1)
            states = storage_states(fleet)
            assert ok, f"/readyz did not turn 503 on every instance during the outage: {states}"
        finally:
            await asyncio.to_thread(postgres.start)

        async def served() -> bool:
            return [await read(i) for i in range(2)] == [200, 200] and all(
                code == 200 for code, _ in storage_states(fleet)
            )

        ok, recovered = await poll_until(served, RECOVERY_TIMEOUT, 0.1)
        assert ok, (
            f"not served again {recovered:.0f} s after PostgreSQL was back: reads "
            f"{[await read(i) for i in range(2)]}, /readyz {storage_states(fleet)}\n{fleet.log()[-3000:]}"
        )
    report(
        f"PostgreSQL stopped, max_staleness {max_staleness:.0f}s: first reads after the stop {first}; first "
        f"reads {max_staleness + 0.3:.1f} s after the stop {refused}; /readyz 503 {states[0][1]}; served again "
        f"{recovered:.1f} s after the start"
    )
    assert first == [200, 200], first
    assert refused == [503, 503], refused


async def test_redis_restart_under_load(make_fleet, make_idp, lab_backend, fleet_backend):
    """Redis shut down for ~3 s (it comes back empty): sessions read from PostgreSQL, 5xx only inside the
    outage window, sign-ins during it fail closed, everything passes after it."""
    redis = fleet_backend.redis
    fleet, cookie = await start_fleet(make_fleet, make_idp, lab_backend, "30s")
    await storage_becomes(fleet, "cache", "ok", 15)
    load = Load(fleet, cookie)
    runner = asyncio.ensure_future(load.run())
    signin_during = readyz_during = None
    try:
        await asyncio.sleep(2)
        outage_start = time.monotonic()
        try:
            await asyncio.to_thread(redis.stop)
            stopped = time.monotonic()
            await storage_becomes(fleet, "cache", "unavailable", 10)
            readyz_during = storage_states(fleet)
            signin_during = await try_sign_in(fleet.urls[1], "erin")
            await asyncio.sleep(max(0.0, 3 - (time.monotonic() - stopped)))
        finally:
            await asyncio.to_thread(redis.start)
        back = time.monotonic()
        recovered_in = await storage_becomes(fleet, "cache", "ok", RECOVERY_TIMEOUT)
        # Keep the load on past the grace, so what comes after the outage is seen, not assumed.
        await asyncio.sleep(max(2.0, back + RECOVERY_GRACE + 2 - time.monotonic()))
    finally:
        load.stopping = True
        await asyncio.wait_for(runner, 60)

    window = (outage_start, back + RECOVERY_GRACE)
    summary = load.summary(window)
    acked, missing, duplicates = await lost_writes(fleet, load)
    report(
        f"Redis shutdown {back - outage_start:.1f} s under load ({len(load.outcomes)} requests, 2 instances): "
        f"{summary}; /readyz cache ok again {recovered_in:.1f} s after start; acknowledged writes {acked}, "
        f"missing from audit {len(missing)}, duplicated events {duplicates}; "
        f"sign-in during outage -> {signin_during[0]}"
    )
    outside = [o for o in load.outcomes if (o.status >= 500 or o.status == 0) and not in_window(o, window)]
    assert not outside, outside[:5]
    # After the grace every request passes again on both instances: the session signed in before the
    # outage survived a Redis that came back empty (no persistence), read from PostgreSQL.
    after = [o for o in load.outcomes if o.started > window[1]]
    assert {o.instance for o in after} == {0, 1} and all(200 <= o.status < 300 for o in after), summary
    assert acked and not missing, missing[:5]
    status, new_cookie = signin_during
    assert status >= 500 and new_cookie is None, signin_during
    assert all(s.get("cache") == "unavailable" and s.get("database") == "ok" for _, s in readyz_during), readyz_during
    status, new_cookie = await try_sign_in(fleet.urls[1], "erin")
    assert status == 302 and new_cookie, (status, new_cookie)
    result = audit_verify(fleet)
    assert result.returncode == 0, result.stdout + result.stderr
