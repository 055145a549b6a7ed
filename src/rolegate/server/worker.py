"""One worker process: its own event loop, its own Runtime, sharing the listen port (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

from aiohttp import web

from rolegate.config import load_config
from rolegate.errors import ConfigError
from rolegate.server import metrics
from rolegate.server.connections import GuardedRunner, Limits
from rolegate.server.malformed import ServerLog
from rolegate.server.runtime import Runtime, RuntimeHolder

log = logging.getLogger("rolegate.worker")


def worker_main(config_path: str, host: str, port: int, index: int, ready: Any, log_level: str) -> None:
    """Entry point of a spawned worker process."""
    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s")
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    asyncio.run(_serve(config_path, host, port, index, ready))


async def reload_runtime(holder: RuntimeHolder) -> bool:
    """Swap in a Runtime built from the config file; on any problem keep the running one."""
    assert holder.config_path is not None
    old = holder.runtime
    try:
        config = load_config(holder.config_path)
        new = await Runtime.create(config, base_dir=holder.base_dir, generation=old.generation + 1,
                                   audit_retention=old.audit is not None and old.audit._retention_seconds is not None)
    except ConfigError as exc:
        metrics.CONFIG_RELOADS.labels("rejected").inc()
        log.error("config reload rejected, keeping the running config:\n  %s", "\n  ".join(exc.problems))
        return False
    holder.runtime = new
    metrics.CONFIG_RELOADS.labels("applied").inc()
    log.info("config reloaded (generation %d)", new.generation)
    # Let requests already running on the old runtime finish before closing its connections.
    asyncio.get_running_loop().call_later(30, lambda: asyncio.ensure_future(old.close()))
    return True


async def _serve(config_path: str, host: str, port: int, index: int, ready: Any) -> None:
    from rolegate.app import build_app

    config = load_config(config_path)
    base_dir = Path(config_path).resolve().parent
    holder = RuntimeHolder(await Runtime.create(config, base_dir=base_dir, audit_retention=index == 0), config_path)
    app = build_app(holder)
    # logger: a request aiohttp's parser refuses is one rate-limited INFO line, not a traceback (see malformed).
    # GuardedRunner: server.timeouts and server.max_connections (slow and surplus clients are closed).
    runner = GuardedRunner(app, Limits.from_config(config.server), handle_signals=False, access_log=None,
                           logger=ServerLog())
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=True, backlog=2048,
                       shutdown_timeout=config.server.drain_timeout.total_seconds())
    await site.start()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reload_runtime(holder)))
    if ready is not None:
        ready.send(("ready", index, os.getpid()))
        ready.close()
    log.debug("worker %d (pid %d) serving on %s:%d", index, os.getpid(), host, port)
    flusher = asyncio.ensure_future(metrics.flush_forever())
    await stop.wait()
    log.info("worker %d draining", index)
    # Stops accepting, waits for in-flight requests up to drain_timeout, then closes.
    await runner.cleanup()
    await holder.runtime.close()
    flusher.cancel()
    metrics.flush_buffered()
