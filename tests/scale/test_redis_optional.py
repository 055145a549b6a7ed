"""Redis is a cache: with it down, instances start and serve, and the CLI revokes a pass.

SLOW: runs its own PostgreSQL and Redis (tests/support/private_services.py); the machine's are never touched.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from rolegate_lab import lab_client_session
from tests.scale.fleet import STORE_POLL_BOUND, Backend, readyz, report
from tests.support.serve import RolegateProcess

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@pytest.fixture
def fleet_backend(private_backend: Backend) -> Backend:
    """This test stops Redis: its own (tests/scale/conftest.py), never the machine's."""
    return private_backend


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rolegate", *args], capture_output=True, text=True, timeout=60)


async def test_with_redis_down_instances_start_and_serve_and_the_cli_revokes_a_pass(
    make_fleet, make_idp, lab_backend, fleet_backend, tmp_path
):
    import re

    from tests.scale.test_instances import daypass_sections, every_worker, fmt, only, redeem_on

    redis = fleet_backend.redis
    fleet = make_fleet(2, workers=1)
    idp = make_idp([fleet.client()])
    fleet.start([daypass_sections(fleet, i, idp, lab_backend.url, "1h") for i in range(2)])
    config = str(fleet.procs[0].config_path)
    issued = cli(
        "daypass",
        "issue",
        "-c",
        config,
        "--template",
        "sub",
        "--scope",
        "building:a",
        "--name",
        "Jan",
        "--out",
        str(tmp_path),
    )
    assert issued.returncode == 0, issued.stdout + issued.stderr
    link = re.search(r"Link: (\S+)", issued.stdout).group(1)
    pass_id = re.search(r"Day pass ([0-9a-f]{16}) issued", issued.stdout).group(1)
    async with lab_client_session() as phone:
        assert await redeem_on(phone, link, fleet.urls[0]) == 303
        cookie = "; ".join(f"{c.key}={c.value}" for c in phone.cookie_jar)

    await asyncio.to_thread(redis.stop)
    try:
        # An instance (re)started while Redis is down starts and serves.
        fleet.procs[1].stop()
        fleet.procs[1] = RolegateProcess(fleet.procs[1].config_path.read_text(), fleet.workdir / "instance1-again")
        fleet.procs[1].start(90)
        await asyncio.sleep(STORE_POLL_BOUND)
        assert fleet.procs[1].worker_pids(), f"no worker serves:\n{fleet.procs[1].log()[-4000:]}"
        usable = await every_worker(fleet, "/buildings/a/notes", cookie)
        status, ready = readyz(fleet.procs[1])
        listed = cli("daypass", "list", "-c", config)
        revoked = cli("daypass", "revoke", "-c", config, pass_id, "--reason", "done")
        await asyncio.sleep(STORE_POLL_BOUND)
        after = await every_worker(fleet, "/buildings/a/notes", cookie)
        queried = cli("audit", "query", "-c", config, "--kind", "daypass")
    finally:
        await asyncio.to_thread(redis.start)
    report(
        f"Redis down: restarted instance /readyz {status} {ready.get('checks', {}).get('storage')}; pass on both "
        f"instances {fmt(usable)}; daypass list exit {listed.returncode}, revoke exit {revoked.returncode}, "
        f"audit query exit {queried.returncode}; after the revoke {fmt(after)}"
    )
    for done in (listed, revoked, queried):
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    assert pass_id in listed.stdout, listed.stdout
    assert only(usable, 200), fmt(usable)
    assert ready.get("checks", {}).get("storage", {}).get("cache") == "unavailable", ready
    assert only(after, 401), fmt(after)
    assert pass_id in queried.stdout, queried.stdout
