"""slapd stopped for a while, then started again: ``rolegate serve``'s sync is back within one interval.

While the directory is away the sync keeps failing and backs off; the back-off is capped at the
interval, so however long the outage was, the next attempt after slapd is back comes within one
interval. The outage here (32 s at a 2 s interval) is long enough that an uncapped back-off doubling
from the interval (4, 8, 16, 32 s) would next try 16 s or more after slapd is back.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.support.serve import RolegateProcess

pytestmark = pytest.mark.lab

INTERVAL = 2.0
OUTAGE = 32.0
# One interval for the next attempt, plus room for the sync itself and /readyz polling on a busy machine.
BACK_WITHIN = INTERVAL + 6.0


def directory_state(served: RolegateProcess) -> dict:
    status, body = served.readyz()
    return json.loads(body).get("checks", {}).get("directory", {})


async def wait_for(served: RolegateProcess, predicate, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    state = directory_state(served)
    while not predicate(state):
        if time.monotonic() > deadline:
            raise AssertionError(f"directory state not reached within {timeout:.0f}s: {state}\n{served.log()}")
        await asyncio.sleep(0.1)
        state = directory_state(served)
    return state


async def test_the_sync_is_back_within_one_interval_of_the_directory(tmp_path, fresh_slapd, lab_backend) -> None:
    slapd = fresh_slapd
    config = {
        "server": {
            "listen": "127.0.0.1:0",
            "public_url": "http://127.0.0.1:8080",
            "internal_listen": "127.0.0.1:0",
            "workers": 1,
        },
        "storage": {"url": f"sqlite:///{tmp_path}/rolegate.db"},
        "directory": {
            "url": slapd.url,
            "bind_dn": slapd.service_dn,
            "bind_password": slapd.service_password,
            "users": {"base": f"ou=people,{slapd.base_dn}"},
            "groups": {"base": f"ou=groups,{slapd.base_dn}"},
            "interval": f"{INTERVAL:g}s",
            "full_interval": "1h",
        },
        "permissions": ["workorders:view"],
        "upstreams": {"app": {"url": lab_backend.url}},
        "routes": [{"path": "/public/**", "mode": "public", "upstream": "app"}],
    }
    with RolegateProcess(config, tmp_path) as served:
        await wait_for(served, lambda s: s.get("state") == "ok" and s.get("users"), 30)

        slapd.stop()
        stopped = time.monotonic()
        degraded = await wait_for(served, lambda s: s.get("state") == "degraded", 15)
        assert served.readyz()[0] == 200  # the last good snapshot keeps serving
        await asyncio.sleep(max(0.0, stopped + OUTAGE - time.monotonic()))
        failures = directory_state(served).get("consecutive_failures", 0)
        assert failures >= 3, degraded  # it kept trying (and backing off) during the outage

        slapd.restart()
        back_at, restarted = time.time(), time.monotonic()
        state = await wait_for(
            served, lambda s: s.get("state") == "ok" and (s.get("last_success") or 0) >= back_at, BACK_WITHIN + 30
        )
        took = time.monotonic() - restarted
        print(
            f"slapd away {restarted - stopped:.1f}s ({failures} failed syncs); sync back {took:.1f}s after it "
            f"returned (interval {INTERVAL:g}s)"
        )
        assert took <= BACK_WITHIN, f"the sync came back {took:.1f}s after the directory (interval {INTERVAL:g}s)"
        assert state["users"] and served.readyz()[0] == 200
