"""A write's audit event is committed before the write reaches the backend (``audit.durable_writes``).

The backend here is a real HTTP server that, when a write arrives, looks in the Store's audit table (another
SQLite connection: it sees committed rows only) for the decision event of that very request. A pipeline that
forwarded first and recorded after would let the backend act on writes the trail may never hold.
"""

from __future__ import annotations

import json
import sqlite3
import time

import aiohttp
import pytest
from aiohttp import web

from tests.support.serve import RolegateProcess

pytestmark = pytest.mark.lab


async def start_checking_backend(db_path) -> tuple[web.AppRunner, str, list[tuple[str, bool, float]]]:
    """A backend that notes, for each request, whether its decision event was already committed, and when
    (wall clock) the request arrived."""
    seen: list[tuple[str, bool, float]] = []

    async def handle(request: web.Request) -> web.Response:
        arrived = time.time()
        path = request.path
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT body FROM audit WHERE kind = 'decision'").fetchall()
        present = any(json.loads(body).get("path") == path for (body,) in rows)
        seen.append((path, present, arrived))
        return web.json_response({"audited_before_arrival": present})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", seen


def durable_config(db_path, backend_url: str, sinks: tuple[str, ...] = ("store",)) -> dict:
    """One worker, durable writes, a public write route to the checking backend."""
    return {
        "server": {"listen": "127.0.0.1:0", "public_url": "http://127.0.0.1:8080", "workers": 1},
        "storage": {"url": f"sqlite:///{db_path}"},
        "upstreams": {"app": {"url": backend_url}},
        "routes": [{"path": "/orders/**", "mode": "public", "upstream": "app"}],
        "audit": {"sinks": list(sinks), "durable_writes": True},
    }


async def test_every_write_is_in_the_store_when_the_backend_receives_it(tmp_path):
    db_path = tmp_path / "rolegate.db"
    runner, backend_url, seen = await start_checking_backend(db_path)
    proc = RolegateProcess(durable_config(db_path, backend_url), tmp_path)
    proc.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for i in range(20):
                for method in ("POST", "PUT", "DELETE"):
                    async with http.request(method, f"{proc.url}/orders/{method.lower()}-{i}", data=b"{}") as resp:
                        assert resp.status == 200, await resp.text()
    finally:
        proc.stop()
        await runner.cleanup()
    assert len(seen) == 60
    late = [path for path, present, _ in seen if not present]
    assert not late, f"{len(late)} of 60 writes reached the backend before their audit event was committed: {late[:5]}"
