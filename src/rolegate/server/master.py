"""The master process of ``rolegate serve``: spawns workers, reloads, drains, serves the internal listener.

Workers are separate processes (spawned, so no event-loop state is inherited), each with its own
socket on the same port via SO_REUSEPORT, so the kernel spreads connections across them. Keeping
them up (replacing, backing off, the lifeline that ends them with the master) is ``supervisor``'s;
the files they share while the server runs are ``rundir``'s.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from multiprocessing.connection import Connection
from typing import Any

from aiohttp import web
from prometheus_client import multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric

from rolegate.config import Config, load_config
from rolegate.errors import ConfigError
from rolegate.server.directory_runner import DirectoryRunner
from rolegate.server.internal import build_internal_app
from rolegate.server.rundir import RunDir
from rolegate.server.runtime import Compiled
from rolegate.server.supervisor import Supervisor
from rolegate.server.worker import worker_main
from rolegate.store import MigrationRequired, Store, open_store
from rolegate.store.urls import redact_url

log = logging.getLogger("rolegate.serve")

# How often the master asks a server-backed store (PostgreSQL, Redis) whether it answers, for /readyz.
STORE_PROBE_SECONDS = 1.0
# Before the first worker starts, the master waits for the database: attempts this far apart (the last repeats).
# There is no bound: like nginx waiting for its upstreams, an instance started before its database serves
# once the database answers; meanwhile /healthz answers, /readyz is 503 "waiting_for_storage".
START_RETRY_SECONDS = (1.0, 2.0, 5.0)


def _why(exc: BaseException) -> str:
    """A few words for why the store did not open (the innermost cause; never a URL, so never a password)."""
    seen: BaseException = exc
    while seen.__cause__ is not None and seen.__cause__ is not seen:
        seen = seen.__cause__
    if isinstance(seen, ConnectionRefusedError) or "connect call failed" in str(seen).lower():
        return "connection refused"
    if isinstance(seen, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    if isinstance(seen, socket.gaierror):
        return f"host not found: {seen.strerror or seen}"
    text = str(seen) or type(seen).__name__
    first = text.splitlines()[0]
    return first if len(first) <= 200 else first[:197] + "..."


class StoreProbe:
    """The master's view of the shared store for /readyz: one cheap round trip a second.

    ``database``: PostgreSQL answers a counter read; ``cache``: Redis takes a publish. The workers keep
    serving decisions from their last known state for ``storage.max_staleness`` after the database
    stopped answering; past that they refuse (503), and so does /readyz.
    """

    def __init__(self, config: Config, base_dir: Path | None) -> None:
        self.config = config
        self.base_dir = base_dir
        self.store: Store | None = None
        self.state: dict[str, str] = {"database": "starting"}
        if config.storage.cache_url:
            self.state["cache"] = "starting"
        self.database_ok_at = time.monotonic()
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None
        # The start wait (wait_until_open): True until the database first answered.
        self.waiting = False
        self.wait_started = time.monotonic()
        self.attempts = 0
        self.retry_at: float | None = None  # monotonic
        # Per backend, for /metrics: when it last answered (monotonic) and last failed (Unix time).
        self.ok_at: dict[str, float] = {}
        self.error_at: dict[str, float] = {}
        # When (monotonic) the last query the database answered was sent: /readyz holds "writes_unavailable"
        # until this is later than the moment it found writes unavailable (internal.build_internal_app).
        self.database_sent_at: float | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self.store is not None:
            try:
                await self.store.close()
            except Exception:  # noqa: BLE001
                pass

    async def wait_until_open(self, stop: asyncio.Event) -> bool:
        """Open the store before any worker starts, retrying while the database does not answer: one log
        line per attempt. True once open; False when ``stop`` is set meanwhile (SIGTERM: exit at once).
        ``MigrationRequired`` (the schema is behind) is not waited out: it is raised."""
        timeout = (self.config.storage.connect_timeout + self.config.storage.command_timeout).total_seconds()
        where = redact_url(self.config.storage.url)
        self.waiting, self.wait_started = True, time.monotonic()
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while True:
                self.attempts += 1
                sent = time.monotonic()
                attempt = asyncio.ensure_future(
                    asyncio.wait_for(open_store(self.config.storage, base_dir=self.base_dir), timeout)
                )
                await asyncio.wait({attempt, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not attempt.done():
                    attempt.cancel()
                    await asyncio.gather(attempt, return_exceptions=True)
                    return False
                try:
                    self.store = attempt.result()
                except MigrationRequired:
                    raise
                except Exception as exc:  # noqa: BLE001 - unreachable, starting up, timed out, refused
                    self._failed("database", str(exc) or type(exc).__name__)
                    delay = START_RETRY_SECONDS[min(self.attempts - 1, len(START_RETRY_SECONDS) - 1)]
                    self.retry_at = time.monotonic() + delay
                    log.warning(
                        "storage %s unreachable (%s); retrying in %.0fs (waiting %.0fs; no worker starts "
                        "until it answers)",
                        where,
                        _why(exc),
                        delay,
                        time.monotonic() - self.wait_started,
                    )
                    await asyncio.wait({stopped}, timeout=delay)
                    if stop.is_set():
                        return False
                    continue
                self._answered("database", sent)
                if self.attempts > 1:
                    log.warning(
                        "storage %s answers after %.0fs; starting workers", where, time.monotonic() - self.wait_started
                    )
                return True
        finally:
            self.waiting, self.retry_at = False, None
            stopped.cancel()

    def _failed(self, name: str, error: str) -> None:
        self.state[name] = "unavailable"
        self.error = error
        self.error_at[name] = time.time()

    def _answered(self, name: str, sent: float) -> None:
        self.state[name] = "ok"
        self.ok_at[name] = time.monotonic()
        if name == "database":
            self.database_ok_at = self.ok_at[name]
            self.database_sent_at = sent

    def collect(self) -> Iterator[Metric]:
        """Prometheus metric families for the internal listener (what /readyz's storage check knows)."""
        up = GaugeMetricFamily(
            "rolegate_storage_up",
            "1 while the master's probe finds this backend answering (database: PostgreSQL, cache: Redis)",
            labels=["backend"],
        )
        down_for = GaugeMetricFamily(
            "rolegate_storage_unavailable_seconds",
            "Seconds since this backend last answered, while it does not (else 0)",
            labels=["backend"],
        )
        last_error = GaugeMetricFamily(
            "rolegate_storage_last_error_timestamp_seconds",
            "When the probe last found this backend not answering (Unix time)",
            labels=["backend"],
        )
        writes = GaugeMetricFamily(
            "rolegate_storage_writes_unavailable",
            "1 while the database does not answer: writes are refused (503), /readyz 503",
        )
        waiting = GaugeMetricFamily(
            "rolegate_storage_start_waiting", "1 while the master waits for the database before starting any worker"
        )
        now = time.monotonic()
        for name, state in sorted(self.state.items()):
            up.add_metric([name], 1.0 if state == "ok" else 0.0)
            since = self.ok_at.get(name, self.wait_started)
            down_for.add_metric([name], 0.0 if state == "ok" else max(0.0, now - since))
            if name in self.error_at:
                last_error.add_metric([name], self.error_at[name])
        writes.add_metric([], 0.0 if self.state.get("database") == "ok" else 1.0)
        waiting.add_metric([], 1.0 if self.waiting else 0.0)
        yield from (up, down_for, last_error, writes, waiting)

    def status(self) -> dict[str, Any]:
        if self.waiting:
            out: dict[str, Any] = {
                "state": "waiting",
                **self.state,
                "waiting_for": round(time.monotonic() - self.wait_started, 1),
                "attempts": self.attempts,
            }
            if self.retry_at is not None:
                out["retry_in"] = round(max(0.0, self.retry_at - time.monotonic()), 1)
            if self.error:
                out["error"] = self.error
            return out
        down = [name for name, state in self.state.items() if state == "unavailable"]
        out = {"state": "unavailable" if down else "ok", **self.state}
        if "database" in down:
            out["unavailable_for"] = round(time.monotonic() - self.database_ok_at, 1)
        if down and self.error:
            out["error"] = self.error
        return out

    def stale(self) -> bool:
        """The database has not answered for longer than the workers may serve from memory."""
        return (
            self.state.get("database") == "unavailable"
            and time.monotonic() - self.database_ok_at > self.config.storage.max_staleness.total_seconds()
        )

    async def _run(self) -> None:
        timeout = (self.config.storage.connect_timeout + self.config.storage.command_timeout).total_seconds()
        while True:
            if self.store is None:
                try:
                    self.store = await asyncio.wait_for(
                        open_store(self.config.storage, base_dir=self.base_dir), timeout
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - StoreUnavailable names the server that failed
                    error = str(exc) or type(exc).__name__
                    self._failed("cache" if error.startswith("Redis") else "database", error)
            if self.store is not None:
                await self._probe("database", self.store.counters(["policy"]), timeout)
                if "cache" in self.state:
                    await self._probe("cache", self.store.publish("health", "ping"), timeout)
            await asyncio.sleep(STORE_PROBE_SECONDS)

    async def _probe(self, name: str, call: Awaitable[object], timeout: float) -> None:
        sent = time.monotonic()
        try:
            await asyncio.wait_for(call, timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - StoreUnavailable, a timeout, a dropped connection
            self._failed(name, str(exc) or type(exc).__name__)
            return
        self._answered(name, sent)


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (without listening) so that port 0 becomes a concrete port all workers share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock, sock.getsockname()[1]


def _runner_view(config: Config) -> tuple[Any, ...]:
    """The sections the directory runner is built from: when one changes, a reload restarts it."""
    return config.directory, config.storage, config.audit


class Master:
    def __init__(
        self, config_path: str, config: Config, log_level: str = "INFO", run_dir: RunDir | None = None
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.log_level = log_level
        self.run_dir = run_dir
        self.ctx = multiprocessing.get_context("spawn")
        self.supervisor = Supervisor(
            config.server.worker_count, self.spawn, on_dead=self._mark_dead, generation=lambda: self.generation
        )
        self.generation = 0  # counts applied reloads: a worker that started before one gets a SIGHUP
        self.host = config.server.listen[0]
        self.stopping = False
        self.port = 0
        self.internal_port: int | None = None
        self.config_mtime = self._mtime()
        self.started = time.time()
        self.last_reload_error: str | None = None
        self.directory: DirectoryRunner | None = None
        self._directory_swap: asyncio.Task[None] | None = None
        self.directory_started = False  # once True, a reload restarts the sync when its section changes
        self.storage: StoreProbe | None = None

    def _mtime(self) -> float:
        try:
            return os.stat(self.config_path).st_mtime
        except OSError:
            return 0.0

    # -- workers --------------------------------------------------------------

    def spawn(self, index: int) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        """Start worker ``index`` with the running (valid) config; the master keeps the pipe's other end.

        The pipe carries the worker's "ready" and is its lifeline: it must stay open while the worker runs.
        """
        parent, child = self.ctx.Pipe(duplex=True)
        run_dir = str(self.run_dir.path) if self.run_dir is not None else None
        proc = self.ctx.Process(
            target=worker_main,
            name=f"rolegate-worker-{index}",
            args=(self.config_path, self.host, self.port, index, child, self.log_level, self.config, run_dir),
            daemon=False,
        )
        proc.start()
        child.close()
        return proc, parent

    def readiness(self) -> dict[str, Any]:
        workers = self.supervisor.status()
        checks: dict[str, Any] = {"workers": workers}
        # One worker down (being replaced) leaves the others serving: still ready, but degraded. A slot in a
        # crash loop, or without a serving worker for longer than MISSING_SECONDS, makes it not ready
        # (supervisor's not_ready): a load balancer takes it out instead of flapping it on each restart.
        degraded = workers["state"] != "ok"
        if self.last_reload_error:
            checks["config"] = {"state": "degraded", "last_reload_error": self.last_reload_error}
            degraded = True
        if self.directory is not None:
            directory = checks["directory"] = self.directory.status()
            # Still serving from the last good snapshot: ready, but say so.
            degraded = degraded or directory.get("state") in ("degraded", "refused")
        if self.storage is not None:
            storage = checks["storage"] = self.storage.status()
            degraded = degraded or storage["state"] != "ok"
        ready = (
            workers["alive"] > 0
            and not self.stopping
            and not workers.get("not_ready")
            and not (self.storage is not None and self.storage.stale())
        )
        status = ("degraded" if degraded else "ok") if ready else "unavailable"
        if self.storage is not None and self.storage.waiting and not self.stopping:
            status = "waiting_for_storage"  # no worker yet: started while the database does not answer
        return {"ready": ready, "status": status, "checks": checks}

    def _mark_dead(self, pid: int) -> None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # (unannotated upstream)

    # -- reload ---------------------------------------------------------------

    def reload(self, reason: str) -> bool:
        """Validate the file; only a valid config is handed to the workers."""
        try:
            config = load_config(self.config_path)
            Compiled(config)  # routes, upstreams and redactions must compile too
        except ConfigError as exc:
            self.last_reload_error = "; ".join(exc.problems)
            log.error(
                "config reload (%s) rejected, keeping the running config:\n  %s", reason, "\n  ".join(exc.problems)
            )
            return False
        if config.server.listen != self.config.server.listen or config.server.workers != self.config.server.workers:
            log.warning("server.listen and server.workers take effect only after a restart")
        if self.directory_started and _runner_view(config) != _runner_view(self.config):
            self._directory_swap = asyncio.ensure_future(self._restart_directory(self._directory_swap, config))
        self.config = config
        self.generation += 1
        self.last_reload_error = None
        self.supervisor.signal_serving(signal.SIGHUP)
        log.info("config reloaded (%s)", reason)
        return True

    def _start_directory(self, config: Config) -> None:
        self.directory_started = True
        if config.directory is not None:
            self.directory = DirectoryRunner(config, Path(self.config_path).resolve().parent)
            self.directory.start()

    async def _restart_directory(self, previous: asyncio.Task[None] | None, config: Config) -> None:
        """Stop the sync and start it again under the reloaded ``directory`` section (or not at all),
        also when the ``storage`` or ``audit`` it writes to changed.

        The new runner's first sync is a full one, so a changed filter, base or mapping applies to
        every user, not only to entries that change afterwards. Restarts run one after the other.
        """
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        if self.stopping:
            return
        if self.directory is not None:
            await self.directory.stop()
            self.directory = None
        if self.stopping:
            return
        self._start_directory(config)
        log.info("directory sync %s with the reloaded settings", "restarted" if config.directory else "stopped")

    async def watch_file(self) -> None:
        while not self.stopping:
            await asyncio.sleep(1.0)
            mtime = self._mtime()
            if mtime and mtime != self.config_mtime:
                self.config_mtime = mtime
                self.reload("file changed")

    # -- lifecycle ------------------------------------------------------------

    async def run(self) -> int:
        host, port = self.config.server.listen
        reservation, self.port = reserve_port(host, port)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self.reload("SIGHUP"))

        if self.config.storage.is_postgres or self.config.storage.cache_url:
            # A server-backed store can be away when we start and go away later: the master waits for it
            # before the first worker, then probes it for /readyz and /metrics (SQLite is a local file).
            self.storage = StoreProbe(self.config, Path(self.config_path).resolve().parent)
        internal_runner = None
        if self.config.server.internal_listen is not None:
            collectors: list[Any] = [self.supervisor, *([self.storage] if self.storage is not None else [])]
            storage = self.storage
            answered = (lambda: storage.database_sent_at) if storage is not None else None
            internal_runner = web.AppRunner(
                build_internal_app(self.readiness, collectors=collectors, database_answered=answered), access_log=None
            )
            await internal_runner.setup()
            ihost, iport = self.config.server.internal_listen
            isite = web.TCPSite(internal_runner, ihost, iport)
            await isite.start()
            self.internal_port = internal_runner.addresses[0][1]

        count = self.config.server.worker_count
        if self.storage is not None:
            # A worker cannot start without the database (it loads the policy and sessions from it): wait.
            try:
                opened = await self.storage.wait_until_open(stop)
            except MigrationRequired as exc:
                log.error("%s", exc)
                opened = None
            if not opened:
                reservation.close()
                await self.storage.stop()
                await self.shutdown(internal_runner)
                if opened is None:
                    return 1
                log.info("stopped while waiting for the storage")
                return 0
            self.storage.start()  # probing from now: /readyz tells the truth while the workers start
        # A worker whose Store stopped answering again waits for it (and says so): SIGTERM must still end the start.
        starting = asyncio.ensure_future(self.supervisor.start())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        ok = starting.result() if not starting.cancelled() else None
        reservation.close()
        if not ok:
            if ok is not None:
                log.error("a worker failed to start; see the log above")
            if self.storage is not None:
                await self.storage.stop()
            await self.shutdown(internal_runner)
            return 1 if ok is not None else 0
        shown = f"[{host}]" if ":" in host else host
        print(
            f"rolegate: serving http://{shown}:{self.port} with {count} worker(s)"
            + (f"; internal listener on port {self.internal_port}" if self.internal_port else ""),
            flush=True,
        )
        tasks = [asyncio.ensure_future(self.watch_file())]
        self._start_directory(self.config)
        await stop.wait()
        log.info("draining workers")
        self.stopping = True
        for task in tasks:
            task.cancel()
        if self._directory_swap is not None:
            await asyncio.gather(self._directory_swap, return_exceptions=True)
        if self.directory is not None:
            await self.directory.stop()
        if self.storage is not None:
            await self.storage.stop()
        await self.shutdown(internal_runner)
        return 0

    async def shutdown(self, internal_runner: web.AppRunner | None) -> None:
        self.stopping = True
        await self.supervisor.stop(self.config.server.drain_timeout.total_seconds())
        if internal_runner is not None:
            await internal_runner.cleanup()


def serve(config_path: str, config: Config, run_dir: RunDir, log_level: str = "INFO") -> int:
    """Run the master until SIGTERM/SIGINT. Returns the process exit code.

    ``rolegate.cli.serve`` has checked the data directory and made ``run_dir`` (released there), and named its
    metrics folder in PROMETHEUS_MULTIPROC_DIR before importing this module, which imports prometheus_client:
    that reads the variable once, so the workers' metric files and the master's own go to this server's runtime
    directory, removed when the last process exits.
    """
    Compiled(config)  # routes, upstreams and redactions must compile before any worker starts
    master = Master(config_path, config, log_level, run_dir)
    try:
        import uvloop  # not installed on Windows (see pyproject.toml): the stdlib loop then

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    return asyncio.run(master.run())
