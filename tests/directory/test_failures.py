"""The directory failing: killed mid-sync, down at start, back again. Nothing partial is ever applied."""

from __future__ import annotations

import asyncio

import pytest

from rolegate.directory import DirectorySync, load_snapshot
from rolegate.directory.persist import COUNTER

from .conftest import add_in_chunks

pytestmark = pytest.mark.lab


async def test_killed_mid_sync_changes_nothing_and_recovers(fresh_slapd, config_for, store) -> None:
    slapd = fresh_slapd
    add_in_chunks(slapd, [f"temp{i:04d}" for i in range(3000)])
    killed = []

    def progress(what: str, count: int) -> None:
        # Runs in the sync thread between pages: the server dies with two thirds still unread.
        if what == "users" and count == 1000 and not killed:
            killed.append(count)
            slapd.kill()

    sync = DirectorySync(config_for(slapd, page_size=100), store)
    assert (await sync.sync_now(full=True)).ok
    good = sync.snapshot
    counter = await store.counter(COUNTER)
    slapd.ldapmodify("dn: uid=bob,ou=people,dc=example,dc=com\nchangetype: modify\nreplace: mail\nmail: b@new\n")

    sync.progress = progress
    failed = await sync.sync_now(full=True)
    assert killed and failed.error and not failed.applied
    assert sync.status.state == "degraded" and sync.status.consecutive_failures == 1
    assert sync.status.last_error and sync.snapshot is good
    assert await store.counter(COUNTER) == counter
    assert (await load_snapshot(store)).user("bob").email == "bob@example.com"
    assert len(good.users) == 3015

    # still down: incremental fails the same way
    down = await sync.sync_now(full=False)
    assert down.error and sync.status.consecutive_failures == 2 and sync.snapshot is good

    slapd.restart()
    back = await sync.sync_now(full=True)
    assert back.ok and back.applied, back.error
    assert sync.status.state == "ok" and sync.status.consecutive_failures == 0 and sync.status.last_error is None
    assert sync.snapshot.user("bob").email == "b@new"


async def test_background_loop_backs_off_and_recovers(fresh_slapd, config_for, store) -> None:
    slapd = fresh_slapd
    slapd.stop()
    # A frozen clock: next_attempt - last_attempt is then exactly the back-off the loop chose (the
    # wall-clock difference would also count the failed attempt's own duration).
    sync = DirectorySync(
        config_for(slapd, interval="50ms", retry_max="200ms", full_interval="1h"), store, clock=lambda: 1_800_000_000.0
    )
    await sync.start()
    try:
        for _ in range(200):  # bounded wait, no timing asserted
            if sync.status.consecutive_failures >= 3:
                break
            await asyncio.sleep(0.05)
        assert sync.status.state == "degraded" and sync.status.last_success is None
        assert not sync.status.ready
        assert sync.status.next_attempt - sync.status.last_attempt <= 0.2 + 1e-6  # capped back-off
        slapd.restart()
        for _ in range(200):
            if sync.status.state == "ok":
                break
            await asyncio.sleep(0.05)
        assert sync.status.state == "ok" and sync.snapshot.user("bob") is not None
        assert sync.status.ready and sync.status.users == 15
    finally:
        await sync.stop()


async def test_start_serves_the_stored_snapshot_before_the_first_sync(fresh_slapd, config_for, store) -> None:
    first = DirectorySync(config_for(fresh_slapd), store)
    assert (await first.sync_now(full=True)).ok
    fresh_slapd.stop()
    second = DirectorySync(config_for(fresh_slapd, interval="1h"), store)
    await second.start()
    try:
        assert second.snapshot is not None and second.snapshot.user("bob") is not None
        for _ in range(100):
            if second.status.state == "degraded":
                break
            await asyncio.sleep(0.05)
        assert second.status.state == "degraded" and second.snapshot.user("bob") is not None
    finally:
        await second.stop()


async def test_wrong_password_is_a_failure_without_the_password(fresh_slapd, config_for, store, caplog) -> None:
    sync = DirectorySync(config_for(fresh_slapd, bind_password="wrong-secret-123"), store)
    result = await sync.sync_now(full=True)
    assert result.error and "invalidCredentials" in result.error.replace(" ", "") or "Credentials" in result.error
    assert "wrong-secret-123" not in caplog.text and "wrong-secret-123" not in (result.error or "")
