"""A directory that was down is synced again within one interval of coming back: the back-off is capped."""

from __future__ import annotations

import asyncio

import pytest

from rolegate.directory import DirectorySync

pytestmark = pytest.mark.lab


async def test_the_back_off_never_exceeds_the_interval(fresh_slapd, config_for, store) -> None:
    slapd = fresh_slapd
    slapd.stop()
    # A frozen clock: next_attempt - last_attempt is then exactly the delay the loop chose. retry_max
    # stays at its default (5 min), far above the interval.
    sync = DirectorySync(config_for(slapd, interval="2s", full_interval="1h"), store, clock=lambda: 1_800_000_000.0)
    await sync.start()
    try:
        delays = []
        for _ in range(300):  # bounded: 3 failures take about 1 + 2 s with the capped back-off
            if sync.status.consecutive_failures > len(delays) and sync.status.next_attempt is not None:
                delays.append(sync.status.next_attempt - sync.status.last_attempt)
            if len(delays) >= 3:
                break
            await asyncio.sleep(0.05)
        assert len(delays) >= 3, f"only {len(delays)} failed attempts were seen"
        assert delays[0] <= 1.0 + 1e-6  # the first retry comes soon
        assert all(delay <= 2.0 + 1e-6 for delay in delays), delays  # never longer than the interval
        slapd.restart()
        for _ in range(200):
            if sync.status.state == "ok":
                break
            await asyncio.sleep(0.05)
        assert sync.status.state == "ok" and sync.snapshot.user("bob") is not None
    finally:
        await sync.stop()
