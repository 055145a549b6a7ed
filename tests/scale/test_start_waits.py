"""An instance started while its database is down waits for it, and the storage's state is in /metrics.

SLOW: runs its own PostgreSQL and Redis (tests/support/private_services.py); the machine's are never touched.

- Started with PostgreSQL stopped, ``rolegate serve`` does not exit: the master logs one line per attempt
  (the URL without its password, why, when it tries again), starts no worker, /healthz answers and /readyz is
  503 ``waiting_for_storage``; once PostgreSQL is up it starts its workers and serves, with no restart: a
  signed-in request is answered and a write audited. SIGTERM during the wait exits 0. (Before: each worker
  died in ``Runtime.create`` with a traceback and serve exited 1.)
- The storage's state is in the internal listener's /metrics: ``rolegate_storage_up{backend="database"|"cache"}``,
  ``rolegate_storage_writes_unavailable``; stopping Redis, then PostgreSQL, shows there and in /readyz, and
  starting them again shows too.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import urllib.request
import uuid

import aiohttp
import pytest

from rolegate.config.sections.storage import StorageConfig
from rolegate.store import open_store
from rolegate_lab import free_port, lab_client_session
from tests.scale.fleet import Backend, poll_until, readyz, report, sign_in, status_of
from tests.support.serve import RolegateProcess

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PASSWORD = "start-wait-secret-pw"  # trust auth ignores it; the log must never show it
WAITING_LINE = re.compile(
    r"storage postgresql://postgres:\*\*\*@127\.0\.0\.1:\d+/postgres\S* unreachable "
    r"\(connection refused\); retrying in \d+s"
)
# Liveness bounds for a loaded shared machine, not measurements (those are printed).
BOUND = 90.0


@pytest.fixture
def fleet_backend(private_backend: Backend) -> Backend:
    """These tests stop the servers: their own (tests/scale/conftest.py), never the machine's."""
    return private_backend


def metrics(proc: RolegateProcess) -> dict[str, float]:
    """The internal listener's samples by name{labels} (only the storage and worker families)."""
    with urllib.request.urlopen(proc.internal_url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(("rolegate_storage_", "rolegate_worker_up")):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def healthz(proc: RolegateProcess) -> int:
    try:
        with urllib.request.urlopen(proc.internal_url + "/healthz", timeout=10) as resp:
            return resp.status
    except OSError:
        return 0


async def test_an_instance_started_while_the_database_is_down_waits_then_serves(
    make_fleet, make_idp, lab_backend, fleet_backend
):
    postgres = fleet_backend.postgres
    fleet = make_fleet(1, workers=2)
    idp = make_idp([fleet.client()])
    config = fleet.config(0, idp, lab_backend.url)
    config["storage"]["url"] = config["storage"]["url"].replace("postgres@", f"postgres:{PASSWORD}@")
    internal = free_port()
    config["server"]["internal_listen"] = f"127.0.0.1:{internal}"
    fleet.prepare([config])  # migrated while the database is up (a deploy's init job)
    proc = fleet.procs[0]
    proc.internal_port = internal
    # A second instance of the same config, stopped by SIGTERM while it waits.
    other = RolegateProcess(
        {**config, "server": {**config["server"], "listen": "127.0.0.1:0", "internal_listen": "127.0.0.1:0"}},
        fleet.workdir / "other",
    )

    await asyncio.to_thread(postgres.stop)
    starting = asyncio.ensure_future(asyncio.to_thread(proc.start, 240))
    try:

        async def logged_twice_or_exited() -> bool:  # two attempts logged: it keeps trying, one line each
            exited = proc.proc is not None and proc.proc.poll() is not None
            return exited or sum(1 for line in proc.output if WAITING_LINE.search(line)) >= 2

        await poll_until(logged_twice_or_exited, BOUND, 0.2)
        assert proc.proc.poll() is None, f"serve exited ({proc.proc.returncode}):\n{proc.log()[-3000:]}"
        assert sum(1 for line in proc.output if WAITING_LINE.search(line)) >= 2, proc.log()
        health, (ready_status, ready) = healthz(proc), readyz(proc)
        waiting = metrics(proc)
        workers_during = proc.worker_pids()

        # SIGTERM while waiting: exits 0, at once (measured; the bound is only liveness).
        other_started = asyncio.ensure_future(asyncio.to_thread(other.start, 240))
        assert await asyncio.to_thread(other.wait_for_log, "unreachable (connection refused)", BOUND), other.log()
        stop_sent = time.monotonic()
        other.signal(signal.SIGTERM)
        other_rc = await asyncio.to_thread(other.proc.wait, 30)
        other_took = time.monotonic() - stop_sent
        with pytest.raises(RuntimeError):  # it never printed "serving"
            await other_started
        log_during = proc.log()
    finally:
        other.stop()
        await asyncio.to_thread(postgres.start)
    back = time.monotonic()
    try:
        await asyncio.wait_for(starting, BOUND)
    except Exception:  # noqa: BLE001 - say what serve printed
        raise AssertionError(f"serve did not start serving after the database came up:\n{proc.log()}") from None
    serving_in = time.monotonic() - back

    async def is_ready() -> bool:
        return readyz(proc)[0] == 200

    ok, ready_in = await poll_until(is_ready, BOUND, 0.1)
    assert ok, f"/readyz not 200 after the database came up: {readyz(proc)}\n{proc.log()[-3000:]}"
    ready_in += serving_in
    path = f"/api/start-wait/{uuid.uuid4().hex}"
    async with lab_client_session() as browser:
        cookie = await sign_in(browser, fleet.urls[0], "alice")
        read = await status_of(browser, fleet.urls[0] + "/api/load/read", cookie)
        async with aiohttp.ClientSession() as stranger:  # no cookie jar shared with the signed-in browser
            anonymous = await status_of(stranger, fleet.urls[0] + "/api/load/read", None)
        write = await status_of(browser, fleet.urls[0] + path, cookie, "POST", data=b"{}")
    store = await open_store(StorageConfig(url=fleet.db_url))
    try:
        rows = await store.audit_find(kinds=("decision",), equals={"method": "POST"}, prefixes={"path": path}, limit=10)
    finally:
        await store.close()
    after = metrics(proc)
    lines = [ln.rstrip() for ln in log_during.splitlines() if WAITING_LINE.search(ln)]
    report(
        f"started with PostgreSQL down: {len(lines)} wait line(s) ({lines[0] if lines else None!r}); /healthz "
        f"{health}, /readyz {ready_status} {ready.get('status')}; serving {serving_in:.1f} s and ready "
        f"{ready_in:.1f} s after PostgreSQL started; SIGTERM during the wait: exit {other_rc} in {other_took:.2f} s"
    )

    assert health == 200
    assert ready_status == 503 and ready["status"] == "waiting_for_storage", ready
    storage = ready["checks"]["storage"]
    assert storage["state"] == "waiting" and storage["database"] == "unavailable" and storage["attempts"] >= 2, storage
    assert not workers_during, f"workers started before the database answered: {workers_during}"
    assert waiting['rolegate_storage_up{backend="database"}'] == 0.0, waiting
    assert waiting["rolegate_storage_start_waiting"] == 1.0 and waiting["rolegate_storage_writes_unavailable"] == 1.0
    assert "Traceback" not in log_during, log_during
    assert PASSWORD not in proc.log() and PASSWORD not in json.dumps(ready), "the password is shown"
    assert other_rc == 0, other.log()
    # Served once the database answered, without a restart.
    assert (read, anonymous) == (200, 401) and 200 <= write < 300, (read, anonymous, write)
    assert len(rows) == 1 and json.loads(rows[0]["body"])["path"] == path, rows
    assert after['rolegate_storage_up{backend="database"}'] == 1.0 and after["rolegate_storage_start_waiting"] == 0.0
    assert "Traceback" not in proc.log(), proc.log()


async def test_database_and_cache_state_are_in_the_metrics_and_readyz(make_fleet, make_idp, lab_backend, fleet_backend):
    postgres, redis = fleet_backend.postgres, fleet_backend.redis
    fleet = make_fleet(1, workers=1)
    idp = make_idp([fleet.client()])
    fleet.start([fleet.config(0, idp, lab_backend.url)])
    proc = fleet.procs[0]
    seen: dict[str, tuple] = {}

    async def shows(phase: str, backend: str, up: float, readyz_says: str) -> None:
        key = f'rolegate_storage_up{{backend="{backend}"}}'

        async def check() -> bool:
            got = metrics(proc)
            status, body = readyz(proc)
            seen[phase] = (got, status, body)
            return got.get(key) == up and body.get("checks", {}).get("storage", {}).get(backend) == readyz_says

        ok, took = await poll_until(check, BOUND, 0.2)
        assert ok, f"{phase}: {key} not {up} / readyz storage.{backend} not {readyz_says}: {seen[phase]}"
        report(f"{phase}: {key} {up} and /readyz storage.{backend} {readyz_says} within {took:.1f} s")

    await shows("start", "database", 1.0, "ok")
    await shows("start", "cache", 1.0, "ok")
    await asyncio.to_thread(redis.stop)
    try:
        await shows("Redis stopped", "cache", 0.0, "unavailable")
        redis_down = seen["Redis stopped"]
    finally:
        await asyncio.to_thread(redis.start)
    await shows("Redis started", "cache", 1.0, "ok")
    await asyncio.to_thread(postgres.stop)
    try:
        await shows("PostgreSQL stopped", "database", 0.0, "unavailable")
        pg_down = seen["PostgreSQL stopped"]
    finally:
        await asyncio.to_thread(postgres.start)
    await shows("PostgreSQL started", "database", 1.0, "ok")
    final = seen["PostgreSQL started"]

    got, status, body = redis_down
    assert status == 200 and body["status"] == "degraded", body  # Redis is a cache: still ready
    assert got["rolegate_storage_writes_unavailable"] == 0.0, got
    assert got['rolegate_storage_unavailable_seconds{backend="cache"}'] > 0.0, got
    assert 'rolegate_storage_last_error_timestamp_seconds{backend="cache"}' in got, got
    got, status, body = pg_down
    assert status == 503 and body["status"] == "writes_unavailable", body
    assert got["rolegate_storage_writes_unavailable"] == 1.0 and got['rolegate_storage_up{backend="cache"}'] == 1.0
    assert 'rolegate_storage_last_error_timestamp_seconds{backend="database"}' in got, got
    got, status, body = final
    assert got["rolegate_storage_writes_unavailable"] == 0.0, got
    assert got['rolegate_storage_unavailable_seconds{backend="database"}'] == 0.0, got


async def test_a_worker_replaced_while_the_database_is_down_waits_for_it(
    make_fleet, make_idp, lab_backend, fleet_backend
):
    """A worker killed during an outage: its replacement cannot build its Runtime. It waits for the database
    (one line per attempt, slot ``waiting``, no traceback, no crash loop) and serves once it answers. Before:
    the replacement died with a traceback, again and again, each time after a longer back-off."""
    postgres = fleet_backend.postgres
    fleet = make_fleet(1, workers=2)
    idp = make_idp([fleet.client()])
    fleet.start([fleet.config(0, idp, lab_backend.url)])
    proc = fleet.procs[0]

    def slot0() -> dict:
        status, body = readyz(proc)
        return {**body.get("checks", {}).get("workers", {}).get("processes", [{}])[0], "_status": status}

    async def slot0_is(state: str) -> dict:
        async def check() -> bool:
            return slot0().get("state") == state

        ok, _ = await poll_until(check, BOUND, 0.2)
        assert ok, f"worker slot 0 not {state}: {slot0()}\n{proc.log()[-3000:]}"
        return slot0()

    await slot0_is("serving")
    await asyncio.to_thread(postgres.stop)
    try:
        killed = slot0()["pid"]
        mark = len(proc.output)
        os.kill(killed, signal.SIGKILL)
        waiting = await slot0_is("waiting")
        ok, _ = await poll_until(
            lambda: asyncio.sleep(
                0, sum(1 for ln in proc.output[mark:] if "worker 0: PostgreSQL at" in ln and "retrying in" in ln) >= 2
            ),
            BOUND,
            0.2,
        )
        assert ok, proc.log()[-3000:]
        during = "".join(proc.output[mark:])
    finally:
        await asyncio.to_thread(postgres.start)
    back = time.monotonic()
    serving = await slot0_is("serving")
    serving_in = time.monotonic() - back

    async def is_ready() -> bool:
        return readyz(proc)[0] == 200

    ok, _ = await poll_until(is_ready, BOUND, 0.1)
    assert ok, readyz(proc)
    report(
        f"worker killed during a PostgreSQL outage: replacement waiting ({waiting.get('restarts')} restart), "
        f"serving {serving_in:.1f} s after PostgreSQL started"
    )
    # No replacement died (multiprocessing prints "Process rolegate-worker-0:" and its traceback when one does).
    # asyncpg's own pool warning in the surviving worker may carry a traceback: not the replacement's.
    assert "Process rolegate-worker" not in during and "failed to start" not in during, during
    assert waiting["restarts"] == 1 and waiting["last_exit"]["reason"] == "killed by SIGKILL", waiting
    assert serving["restarts"] == 1 and serving["pid"] != killed, serving  # the same replacement, never a loop
