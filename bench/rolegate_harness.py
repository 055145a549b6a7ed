"""rolegate's data path without the rest of the pipeline, until `rolegate serve` is wired.

normalize_path (rolegate.proxy.paths, when present) + Forwarder on a catch-all
route: what a `mode: public` route costs.
Usage: rolegate_harness.py PORT UPSTREAM_URL [--workers N]
"""

import sys

from aiohttp import web

from _serve import serve
from rolegate.errors import RolegateError
from rolegate.proxy.forward import Forwarder
from rolegate.proxy.upstream_pool import Upstream

try:
    from rolegate.proxy.paths import normalize_path
except ImportError:  # written by another helper; the bench still runs without it
    def normalize_path(raw: str) -> str:
        return raw


def make_app(upstream: str) -> web.Application:
    forwarder = Forwarder({"app": Upstream("app", upstream, pool_size=256)}, max_body=64 * 2**20)

    async def handler(request: web.Request) -> web.StreamResponse:
        path, sep, query = request.raw_path.partition("?")
        try:
            return await forwarder.forward(request, "app", normalize_path(path) + sep + query)
        except RolegateError as exc:
            return web.Response(status=exc.status, text=exc.public_message)

    async def close(app: web.Application) -> None:
        await forwarder.close()

    app = web.Application()
    app.on_cleanup.append(close)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


if __name__ == "__main__":
    serve(lambda: make_app(sys.argv[2]), int(sys.argv[1]), sys.argv[3:])
