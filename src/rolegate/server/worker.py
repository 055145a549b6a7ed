"""One worker process: its own event loop, its own Runtime, sharing the listen port (SO_REUSEPORT).

It ends on SIGTERM/SIGINT, and when the master is gone (its end of the ready pipe closes), by
draining (``drain``): no new connections, the accepted ones answered, then exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from multiprocessing.connection import Connection
from pathlib import Path

from aiohttp import web

from rolegate.config import Config, load_config
from rolegate.errors import ConfigError
from rolegate.server import metrics
from rolegate.server.connections import GuardedRunner, Limits
from rolegate.server.drain import Listener
from rolegate.server.lean_auth import start_lean
from rolegate.web.malformed import ServerLog
from rolegate.server.rundir import RunDir
from rolegate.server.runtime import Runtime, RuntimeHolder
from rolegate.store import StoreUnavailable

log = logging.getLogger("rolegate.worker")


def worker_main(
    config_path: str,
    host: str,
    port: int,
    index: int,
    ready: Connection | None,
    log_level: str,
    config: Config | None = None,
    run_dir: str | None = None,
) -> None:
    """Entry point of a spawned worker process.

    ``config``: the master's running config (a replacement worker starts with it even when the file
    has since been broken); ``run_dir``: the server's runtime directory, held while this runs.
    """
    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s")
    held = RunDir.attach(run_dir) if run_dir is not None else None
    try:
        import uvloop  # not installed on Windows (see pyproject.toml): the stdlib loop then

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    try:
        snapshots = Path(run_dir) / "directory" if run_dir is not None else None
        asyncio.run(_serve(config_path, host, port, index, ready, config, snapshots))
    finally:
        if held is not None:
            held.release()


async def reload_runtime(holder: RuntimeHolder) -> bool:
    """Swap in a Runtime built from the config file; on any problem keep the running one."""
    assert holder.config_path is not None
    old = holder.runtime
    try:
        config = load_config(holder.config_path)
        new = await Runtime.create(
            config,
            base_dir=holder.base_dir,
            generation=old.generation + 1,
            audit_retention=old.audit is not None and old.audit._retention_seconds is not None,
            snapshot_dir=old.snapshot_dir,
        )
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


# A worker whose Store does not answer as it starts (the database went away after the master's start wait,
# or this worker replaces one that died during an outage) tries again this far apart (the last repeats).
RUNTIME_RETRY_SECONDS = (1.0, 2.0, 5.0)


async def _create_runtime(
    config: Config,
    base_dir: Path,
    index: int,
    ready: Connection | None,
    stop: asyncio.Event,
    snapshot_dir: Path | None = None,
) -> Runtime | None:
    """``Runtime.create``, waiting out a Store that does not answer: one log line per attempt, and the master
    is told once (``("waiting", index, pid, why)``) so the wait is not taken for a stuck or failed start.
    None: stopped (SIGTERM, or the master gone) while waiting."""
    attempts = 0
    while True:
        try:
            return await Runtime.create(
                config, base_dir=base_dir, audit_retention=index == 0, snapshot_dir=snapshot_dir
            )
        except StoreUnavailable as exc:
            delay = RUNTIME_RETRY_SECONDS[min(attempts, len(RUNTIME_RETRY_SECONDS) - 1)]
            attempts += 1
            log.warning("worker %d: %s; retrying in %.0fs", index, str(exc).rstrip("."), delay)
            if attempts == 1 and ready is not None:
                try:
                    ready.send(("waiting", index, os.getpid(), str(exc)))
                except OSError:
                    return None  # the master is gone
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return None
        except asyncio.TimeoutError:
            pass


async def _serve(
    config_path: str,
    host: str,
    port: int,
    index: int,
    ready: Connection | None,
    config: Config | None,
    snapshot_dir: Path | None = None,
) -> None:
    from rolegate.app import build_app  # server -> app: a known exception (tests/test_layers.py), kept lazy

    config = config if config is not None else load_config(config_path)
    base_dir = Path(config_path).resolve().parent
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if ready is not None:  # the master gone while this worker waits for the Store: stop waiting
        loop.add_reader(ready.fileno(), stop.set)
    runtime = await _create_runtime(config, base_dir, index, ready, stop, snapshot_dir)
    if ready is not None:
        loop.remove_reader(ready.fileno())
    if runtime is None:
        log.info("worker %d: stopped while waiting for the storage", index)
        return
    holder = RuntimeHolder(runtime, config_path)
    app = build_app(holder)
    listener = Listener(host, port)
    # logger: a request aiohttp's parser refuses is one rate-limited INFO line, not a traceback (see malformed).
    # GuardedRunner: server.timeouts and server.max_connections (slow and surplus clients are closed).
    runner = GuardedRunner(
        app, Limits.from_config(config.server), handle_signals=False, access_log=None, logger=ServerLog()
    )
    await runner.setup()
    site = web.SockSite(
        runner, listener.sock, backlog=2048, shutdown_timeout=config.server.drain_timeout.total_seconds()
    )
    await site.start()
    lean = await start_lean(holder, runner)  # server.forward_auth.listen, else None

    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reload_runtime(holder)))
    if ready is not None:
        _watch_master(ready, index, stop)
    log.debug("worker %d (pid %d) serving on %s:%d", index, os.getpid(), host, port)
    flusher = asyncio.ensure_future(metrics.flush_forever())
    await stop.wait()
    log.info("worker %d draining", index)
    await listener.drain()
    if lean is not None:
        await lean.drain(config.server.drain_timeout.total_seconds())
    # Stops accepting, waits for in-flight requests up to drain_timeout, then closes.
    await runner.cleanup()
    await holder.runtime.close()
    flusher.cancel()
    metrics.flush_buffered()


def _watch_master(ready: Connection, index: int, stop: asyncio.Event) -> None:
    """Say "ready" through the master's pipe, then keep it as the lifeline: the master never writes to
    it, so it becoming readable means end-of-file, the master is gone (even by kill -9)."""
    loop = asyncio.get_running_loop()
    try:
        ready.send(("ready", index, os.getpid()))
    except OSError:
        log.warning("worker %d: the master is gone before this worker was ready; exiting", index)
        stop.set()
        return

    def master_gone() -> None:
        loop.remove_reader(ready.fileno())
        if not stop.is_set():
            log.warning("worker %d: the master process is gone; draining and exiting", index)
            stop.set()

    loop.add_reader(ready.fileno(), master_gone)
