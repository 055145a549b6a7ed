"""Naive aiohttp pass-through: the baseline rolegate's forwarder must beat.

One shared ClientSession, bodies streamed both ways, nothing clever.
Usage: naive_proxy.py PORT UPSTREAM_URL [--workers N]
"""

import sys

import aiohttp
from aiohttp import web

from _serve import serve  # bench/_serve.py: uvloop, SO_REUSEPORT workers

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length", "host"}


def make_app(upstream: str) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        session = request.app["session"]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        data = request.content if request.body_exists else None
        async with session.request(request.method, upstream + request.raw_path, headers=headers,
                                   data=data, allow_redirects=False) as up:
            resp = web.StreamResponse(status=up.status, headers={
                k: v for k, v in up.headers.items() if k.lower() not in HOP})
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    async def session_ctx(app: web.Application):
        app["session"] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app["session"].close()

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


if __name__ == "__main__":
    serve(lambda: make_app(sys.argv[2].rstrip("/")), int(sys.argv[1]), sys.argv[3:])
