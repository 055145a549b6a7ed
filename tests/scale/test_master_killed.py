"""``kill -9`` of one instance's master: its workers go with it, the other instance keeps serving, and the
instance restarted on the same port is the only one answering there (no orphan worker with the old config).

Runs on the machine's PostgreSQL and Redis (a fresh database and key prefix; nothing is stopped).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.scale.fleet import poll_until, report
from tests.support.serve import RolegateProcess
from tests.support.workers import on_every_worker

pytestmark = [pytest.mark.lab, pytest.mark.slow]

# How long the test waits for the orphaned workers before it calls it a failure (it reports how long it took).
ORPHAN_WAIT = 10.0


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_kill_9_of_a_master_takes_its_workers_within_a_second(make_fleet, make_idp, lab_backend):
    fleet = make_fleet(2, workers=2)
    idp = make_idp([fleet.client()])
    fleet.start([fleet.config(i, idp, lab_backend.url) for i in range(2)])
    victim, other = fleet.procs
    workers = victim.worker_pids()
    assert len(workers) == 2, workers
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(10)

    async def gone() -> bool:
        return not any(alive(p) for p in workers)

    ok, took = await poll_until(gone, ORPHAN_WAIT, 0.02)
    left = [p for p in workers if alive(p)]
    try:
        # The other instance serves on, with every worker.
        others = await on_every_worker(other, None, "GET", fleet.urls[1] + "/api/notes/1")
        # Restarted on the same port, the instance's new workers are the only ones answering there.
        victim = fleet.procs[0] = RolegateProcess(victim.config_path.read_text(), fleet.workdir / "instance0-again")
        victim.start(90)
        fresh = victim.worker_pids()
        answered = await on_every_worker(victim, None, "GET", fleet.urls[0] + "/api/notes/1")
    finally:
        for pid in left:  # never leave an orphan behind on the machine
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    report(
        f"kill -9 of a master (2 workers): workers gone after {took:.2f} s; other instance {others[:4]}; "
        f"restarted workers {fresh}"
    )
    assert ok, f"workers {left} still alive {ORPHAN_WAIT:.0f} s after their master was killed"
    assert others and all(200 <= status < 500 for _, status in others), others
    assert {pid for pid, _ in answered} <= set(fresh), (answered, fresh, workers)
