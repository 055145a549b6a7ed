"""A worker slot left without a serving worker for too long makes the instance not ready (issue 23).

The supervisor with real child processes (forked, so nothing but this module is needed in them): one
that says "ready" and serves, then replacements that never do (stuck opening something). After
``MISSING_SECONDS`` (shortened here) the supervisor's status says ``unavailable`` with the slot named;
before it, the slot being replaced is only ``degraded``. Not a crash loop: the replacement never died.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time

import pytest

from rolegate.server import supervisor as sup

CTX = multiprocessing.get_context("fork")


def _serve(conn) -> None:
    conn.send(("ready", 0, os.getpid()))
    time.sleep(120)


def _stuck(conn) -> None:
    time.sleep(120)  # never says ready (a start that hangs)


async def test_a_slot_missing_longer_than_the_bound_is_not_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sup, "MISSING_SECONDS", 1.5, raising=False)  # raising: the old code had none
    spawned: list = []

    def spawn(index: int):
        parent, child = CTX.Pipe(duplex=True)
        proc = CTX.Process(target=_serve if not spawned else _stuck, args=(child,), daemon=True)
        proc.start()
        child.close()
        spawned.append(proc)
        return proc, parent

    supervisor = sup.Supervisor(1, spawn)
    try:
        assert await supervisor.start(timeout=30)
        assert supervisor.status()["state"] == "ok"
        os.kill(spawned[0].pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(spawned) < 2:  # replaced after 0.1 s, by one that hangs
            assert time.monotonic() < deadline, supervisor.status()
            await asyncio.sleep(0.05)
        early = supervisor.status()
        while not supervisor.status().get("not_ready"):
            assert time.monotonic() < deadline, supervisor.status()
            await asyncio.sleep(0.1)
        late = supervisor.status()
    finally:
        await supervisor.stop(1.0)
        for proc in spawned:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
    assert early["state"] == "degraded" and "not_ready" not in early, early
    assert late["state"] == "unavailable", late
    [missing] = late["not_ready"]
    assert missing["worker"] == 0 and missing["reason"] == "missing" and missing["down_for"] >= 1.5, missing
    assert missing["last_exit"] == "killed by SIGKILL", missing
    assert late["processes"][0]["state"] == "starting", late
