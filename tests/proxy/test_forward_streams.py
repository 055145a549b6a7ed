"""1 GiB each way through the Forwarder with flat memory (bounded RSS growth, no timings)."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import pytest
from aiohttp import web

from rolegate.errors import RolegateError
from rolegate.proxy.forward import Forwarder
from rolegate.proxy.upstream_pool import Upstream

GIB = 1024**3
BLOCK = b"\xa5" * (256 * 1024)
RSS_BUDGET = 100 * 1024**2

pytestmark = pytest.mark.slow


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class RssWatch:
    """Samples RSS while a transfer runs; peak growth over the starting point."""

    def __init__(self) -> None:
        self.base = rss()
        self.peak = self.base
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss())
            await asyncio.sleep(0.02)

    def stop(self) -> int:
        self._task.cancel()
        self.peak = max(self.peak, rss())
        return self.peak - self.base


async def start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def upstream_app() -> web.Application:
    async def upload(request: web.Request) -> web.Response:
        n = 0
        async for chunk in request.content.iter_any():
            n += len(chunk)
        return web.json_response({"n": n})

    async def download(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        resp = web.StreamResponse()
        if request.query.get("length"):
            resp.content_length = n
        await resp.prepare(request)
        sent = 0
        while sent < n:
            piece = BLOCK if n - sent >= len(BLOCK) else BLOCK[: n - sent]
            await resp.write(piece)
            sent += len(piece)
        await resp.write_eof()
        return resp

    app = web.Application(client_max_size=2**40)
    app.router.add_post("/upload", upload)
    app.router.add_get("/download/{n}", download)
    return app


@pytest.fixture
async def big():
    up_runner, up_port = await start_app(upstream_app())
    fwd = Forwarder({"up": Upstream("up", f"http://127.0.0.1:{up_port}", read_timeout=60)}, max_body=2 * GIB)

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await fwd.forward(request, "up", request.raw_path)
        except RolegateError as exc:
            return web.json_response({"error": exc.code}, status=exc.status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    px_runner, px_port = await start_app(app)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))
    yield f"http://127.0.0.1:{px_port}", session
    await session.close()
    await fwd.close()
    await px_runner.cleanup()
    await up_runner.cleanup()


async def test_1gib_chunked_upload_flat_memory(big):
    base, session = big

    async def gen():
        for _ in range(GIB // len(BLOCK)):
            yield BLOCK

    watch = RssWatch()
    async with session.post(base + "/upload", data=gen()) as r:
        assert r.status == 200
        assert (await r.json())["n"] == GIB
    growth = watch.stop()
    print(f"RSS growth {growth / 2**20:.1f} MiB")
    assert growth < RSS_BUDGET, f"RSS grew by {growth / 2**20:.0f} MiB"


async def test_1gib_content_length_upload_flat_memory(big):
    base, session = big

    async def gen():
        for _ in range(GIB // len(BLOCK)):
            yield BLOCK

    watch = RssWatch()
    async with session.post(base + "/upload", data=gen(), headers={"Content-Length": str(GIB)}) as r:
        assert r.status == 200
        assert (await r.json())["n"] == GIB
    growth = watch.stop()
    print(f"RSS growth {growth / 2**20:.1f} MiB")
    assert growth < RSS_BUDGET, f"RSS grew by {growth / 2**20:.0f} MiB"


@pytest.mark.parametrize("query", ["", "?length=1"])
async def test_1gib_download_flat_memory(big, query):
    base, session = big
    watch = RssWatch()
    n = 0
    h = hashlib.sha256()
    async with session.get(base + f"/download/{GIB}{query}") as r:
        assert r.status == 200
        if query:
            assert r.headers["Content-Length"] == str(GIB)
        async for chunk in r.content.iter_any():
            n += len(chunk)
            if n <= 1024**2:
                h.update(chunk)
    growth = watch.stop()
    print(f"RSS growth {growth / 2**20:.1f} MiB")
    assert n == GIB
    assert growth < RSS_BUDGET, f"RSS grew by {growth / 2**20:.0f} MiB"
