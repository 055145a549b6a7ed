"""An acknowledged write survives a power cut: its audit event is on disk — fsynced, not only in the page
cache — before the write reaches the backend.

A kill -9 cannot show this (the page cache outlives the process), so the syscalls are watched instead:
``strace`` follows the worker and records every fsync/fdatasync with the file it was called on and a
wall-clock time; the backend records when each write arrived, and the client when it sent it. For every
write, SQLite's WAL and the JSONL sink must each have been synced between the two.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import aiohttp
import pytest

from tests.audit.test_committed_before_forwarded import durable_config, start_checking_backend
from tests.support.serve import RolegateProcess

pytestmark = pytest.mark.lab

SYNC = re.compile(r"^\d+\s+(\d+\.\d+) f(?:data)?sync\(\d+<([^>]*)>\) = 0", re.M)


async def test_each_write_is_synced_to_disk_before_the_backend_sees_it(tmp_path):
    assert shutil.which("strace"), "strace is installed by scripts/setup.sh"
    db_path = tmp_path / "rolegate.db"
    runner, backend_url, seen = await start_checking_backend(db_path)
    config = durable_config(db_path, backend_url, ("store", f"jsonl:{tmp_path / 'audit.jsonl'}"))
    proc = RolegateProcess(config, tmp_path)
    proc.start()
    trace = tmp_path / "strace.log"
    [worker] = proc.worker_pids()
    tracer = subprocess.Popen(
        ["strace", "-f", "-qq", "-ttt", "-y", "-e", "trace=fsync,fdatasync", "-p", str(worker), "-o", str(trace)],
        stderr=subprocess.DEVNULL,
    )
    sent: dict[str, float] = {}
    try:
        time.sleep(1.0)  # strace attaches to every thread of the worker
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for i in range(15):
                path = f"/orders/w{i}"
                sent[path] = time.time()
                async with http.post(proc.url + path, data=b"{}") as resp:
                    assert resp.status == 200, await resp.text()
    finally:
        tracer.terminate()
        tracer.wait(10)
        proc.stop()
        await runner.cleanup()

    arrivals = {path: arrived for path, _, arrived in seen}
    syncs = [(float(t), name) for t, name in SYNC.findall(trace.read_text())]
    wal = [t for t, name in syncs if name.endswith("rolegate.db-wal")]
    jsonl = [t for t, name in syncs if name.endswith("audit.jsonl")]
    for path, started in sent.items():
        arrived = arrivals[path]
        assert any(started <= t <= arrived for t in wal), f"{path}: no WAL sync between sending and arrival"
        assert any(started <= t <= arrived for t in jsonl), f"{path}: no JSONL sync between sending and arrival"
