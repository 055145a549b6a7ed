"""Run an aiohttp app on a port with uvloop, optionally as N SO_REUSEPORT workers."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Callable

from aiohttp import web


def serve(make_app: Callable[[], web.Application], port: int, argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    if not args.no_uvloop:
        try:
            import uvloop
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    children = []
    for _ in range(args.workers - 1):
        pid = os.fork()
        if pid == 0:
            children = []
            break
        children.append(pid)

    def stop(*_):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        raise SystemExit(0)

    if children:  # only the parent relays; workers die on SIGTERM's default action
        signal.signal(signal.SIGTERM, stop)
    web.run_app(make_app(), host="127.0.0.1", port=port, access_log=None,
                reuse_port=args.workers > 1, print=None, handle_signals=False)
