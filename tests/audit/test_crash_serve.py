"""kill -9 of `rolegate serve` (master and workers) during a bounded load of write requests: every write
that got a response has its audit event, and the chain still verifies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys

import aiohttp
import pytest

from tests.support.serve import RolegateProcess

pytestmark = pytest.mark.lab


def config(backend_url: str, tmp) -> dict:
    return {
        "server": {"listen": "127.0.0.1:0", "public_url": "http://127.0.0.1:8080", "workers": 2},
        "storage": {"url": f"sqlite:///{tmp}/rolegate.db"},
        "upstreams": {"app": {"url": backend_url}},
        "routes": [{"path": "/orders/**", "mode": "public", "upstream": "app"}],
        "audit": {"sinks": ["store"], "durable_writes": True},
    }


async def test_kill_9_under_write_load_loses_no_acknowledged_write(tmp_path, lab_backend):
    proc = RolegateProcess(config(lab_backend.url, tmp_path), tmp_path)
    proc.start()
    acknowledged: list[str] = []
    stop = asyncio.Event()

    async def client(n: int, http: aiohttp.ClientSession) -> None:
        for i in range(400):  # bounded
            if stop.is_set():
                return
            path = f"/orders/c{n}-{i}"
            try:
                async with http.post(proc.url + path, data=b'{"qty": 1}') as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        acknowledged.append(path)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return  # the server is gone

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        clients = [asyncio.ensure_future(client(n, http)) for n in range(8)]
        while len(acknowledged) < 150 and not all(c.done() for c in clients):
            await asyncio.sleep(0.02)
        # SIGKILL everything at once: the master and both workers get no chance to flush.
        pids = [proc.proc.pid, *proc.worker_pids()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stop.set()
        await asyncio.gather(*clients)
    proc.proc.wait(10)
    assert len(acknowledged) >= 150

    with sqlite3.connect(tmp_path / "rolegate.db") as db:
        rows = db.execute("SELECT kind, body FROM audit").fetchall()
    recorded = {json.loads(body).get("path") for kind, body in rows if kind == "decision"}
    missing = [p for p in acknowledged if p not in recorded]
    assert not missing, f"{len(missing)} acknowledged writes have no audit event, e.g. {missing[:5]}"

    result = subprocess.run(
        [sys.executable, "-m", "rolegate", "audit", "verify", "-c", str(proc.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
