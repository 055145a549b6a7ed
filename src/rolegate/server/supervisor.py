"""The master's workers: start them, replace the ones that die, back off from one that keeps dying.

Each worker fills a numbered slot. The master keeps its end of a pipe per worker: the worker says
"ready" through it once it listens, and the pipe is also the worker's lifeline. The master never
writes to it, so when the master dies, by any means, the kernel closes its end, the worker sees
end-of-file, drains and exits: no orphan keeps the port.

A dead worker's slot is filled again after a back-off (0.1 s, 0.5 s, 1 s, 2 s, 5 s, 10 s, then every
30 s) that grows with each death in a row; a worker that served ``STABLE_SECONDS`` before it died
starts it over. While one slot waits, the others keep serving: ``/readyz`` stays ready (status
``degraded``) and shows every slot with its state, pid, restarts and last exit reason; ``/metrics``
carries the same as ``rolegate_worker_*``.

Two things are not a worker being replaced, and make ``/readyz`` 503 (status ``unavailable``) with a
``not_ready`` entry naming the slot: a crash loop (the slot's worker died ``CRASH_LOOP_DEATHS`` times in
a row, none of them after serving ``STABLE_SECONDS``, and none serves now) and a slot left without a
serving worker for longer than ``MISSING_SECONDS``. One replacement does not flap a load balancer's
endpoint; an instance that cannot keep its workers up is taken out until it does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger("rolegate.serve")

BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# A worker that served this long before it died starts the back-off over.
STABLE_SECONDS = 10.0
# A worker that does not say "ready" within this is killed and counted as a failed start.
START_TIMEOUT = 60.0
# This many deaths in a row (each within STABLE_SECONDS of serving) and no worker serving: a crash loop, not ready.
CRASH_LOOP_DEATHS = 3
# A slot without a serving worker for longer than this (a replacement that does not come up): not ready.
MISSING_SECONDS = 30.0

Spawn = Callable[[int], tuple[BaseProcess, Connection]]


def exit_reason(exitcode: int | None) -> tuple[str, str]:
    """(words for people, a short code for metric labels) for a process's exit code."""
    if exitcode is None:
        return "unknown", "unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name}", name
    return f"exited with status {exitcode}", f"exit_{exitcode}"


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


class Slot:
    """One worker position: the process filling it now and what happened to the ones before it."""

    __slots__ = (
        "index",
        "proc",
        "conn",
        "state",
        "since",
        "ready_at",
        "restarts",
        "failures",
        "last_exit",
        "last_exit_code",
        "last_exit_at",
        "retry_at",
        "exits",
        "generation",
        "down_since",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: BaseProcess | None = None
        self.conn: Connection | None = None
        self.state = "starting"  # starting | waiting (for the storage; said so) | serving | backoff
        self.since = time.time()
        self.ready_at: float | None = None  # monotonic
        self.restarts = 0
        self.failures = 0  # deaths in a row, each within STABLE_SECONDS of starting to serve
        self.last_exit: str | None = None
        self.last_exit_code: str | None = None
        self.last_exit_at: float | None = None
        self.retry_at: float | None = None  # monotonic
        self.exits: Counter[str] = Counter()
        self.generation = 0  # the master's config generation this worker started with
        self.down_since: float | None = None  # monotonic: when its last serving worker died; None while serving

    def not_ready(self, now: float) -> dict[str, Any] | None:
        """Why this slot makes the instance not ready (a crash loop, missing too long), or None."""
        if self.state == "serving" or self.down_since is None:
            return None
        down = now - self.down_since
        if self.failures >= CRASH_LOOP_DEATHS:
            out: dict[str, Any] = {
                "worker": self.index,
                "reason": "crash_loop",
                "detail": f"died {self.failures} times in a row, each within {STABLE_SECONDS:.0f}s of serving",
            }
        elif down > MISSING_SECONDS:
            out = {
                "worker": self.index,
                "reason": "missing",
                "detail": f"no worker serving for {down:.0f}s (bound {MISSING_SECONDS:.0f}s)",
            }
        else:
            return None
        out["down_for"] = round(down, 1)
        if self.last_exit is not None:
            out["last_exit"] = self.last_exit
        if self.state == "backoff" and self.retry_at is not None:
            out["retry_in"] = round(max(0.0, self.retry_at - now), 1)
        return out

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "pid": self.pid if self.state != "backoff" else None,
            "state": self.state,
            "since": _iso(self.since),
            "restarts": self.restarts,
        }
        stable = (
            self.state == "serving" and self.ready_at is not None and time.monotonic() - self.ready_at >= STABLE_SECONDS
        )
        if self.failures and not stable:  # deaths in a row so far (a stable worker starts the count over)
            out["deaths_in_a_row"] = self.failures
        if self.last_exit is not None:
            out["last_exit"] = {"reason": self.last_exit, "at": _iso(self.last_exit_at)}
        if self.state == "backoff" and self.retry_at is not None:
            out["retry_in"] = round(max(0.0, self.retry_at - time.monotonic()), 1)
        return out


class Supervisor:
    """Keeps ``count`` workers serving; ``spawn(index)`` starts one and returns it with the master's pipe end."""

    def __init__(
        self,
        count: int,
        spawn: Spawn,
        *,
        on_dead: Callable[[int], None] = lambda pid: None,
        generation: Callable[[], int] = lambda: 0,
    ) -> None:
        self.slots = [Slot(i) for i in range(count)]
        self._spawn = spawn
        self._on_dead = on_dead
        self._generation = generation
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = False

    # -- what /readyz and /metrics show -----------------------------------------------------------------

    def serving(self) -> int:
        return sum(1 for slot in self.slots if slot.state == "serving")

    def not_ready(self) -> list[dict[str, Any]]:
        """The slots that make the instance not ready (crash loop, missing too long); empty: none."""
        now = time.monotonic()
        return [why for slot in self.slots if (why := slot.not_ready(now)) is not None]

    def status(self) -> dict[str, Any]:
        serving = self.serving()
        out: dict[str, Any] = {
            "alive": serving,
            "expected": len(self.slots),
            "state": "ok" if serving == len(self.slots) else "degraded",
            "processes": [slot.status() for slot in self.slots],
        }
        not_ready = self.not_ready()
        if not_ready:
            out["state"] = "unavailable"
            out["not_ready"] = not_ready
        return out

    def collect(self) -> Iterator[Metric]:
        """Prometheus metric families (a custom collector for the internal listener's registry)."""
        up = GaugeMetricFamily("rolegate_worker_up", "1 while the worker in this slot serves", labels=["worker"])
        restarts = CounterMetricFamily(
            "rolegate_worker_restarts", "Workers started to replace one that died", labels=["worker"]
        )
        exits = CounterMetricFamily(
            "rolegate_worker_exits", "Worker deaths by reason (signal or exit status)", labels=["worker", "reason"]
        )
        backoff = GaugeMetricFamily(
            "rolegate_worker_backoff_seconds",
            "Seconds until a dead worker is started again (0 unless waiting)",
            labels=["worker"],
        )
        last = GaugeMetricFamily(
            "rolegate_worker_last_exit_timestamp_seconds",
            "When the worker in this slot last died (Unix time)",
            labels=["worker", "reason"],
        )
        looping = GaugeMetricFamily(
            "rolegate_worker_not_ready",
            "1 while this slot makes /readyz 503: a crash loop, or no worker serving for longer than the bound",
            labels=["worker", "reason"],
        )
        now = time.monotonic()
        for slot in self.slots:
            worker = str(slot.index)
            why = slot.not_ready(now)
            for reason in ("crash_loop", "missing"):
                looping.add_metric([worker, reason], 1.0 if why is not None and why["reason"] == reason else 0.0)
            up.add_metric([worker], 1.0 if slot.state == "serving" else 0.0)
            restarts.add_metric([worker], slot.restarts)
            for reason, count in sorted(slot.exits.items()):
                exits.add_metric([worker, reason], count)
            waiting = slot.retry_at - now if slot.state == "backoff" and slot.retry_at is not None else 0.0
            backoff.add_metric([worker], max(0.0, waiting))
            if slot.last_exit_at is not None and slot.last_exit_code is not None:
                last.add_metric([worker, slot.last_exit_code], slot.last_exit_at)
        yield from (up, restarts, exits, backoff, last, looping)

    # -- lifecycle --------------------------------------------------------------------------------------

    async def start(self, timeout: float = START_TIMEOUT) -> bool:
        """Start every worker; True once all are ready. Then each slot is watched and kept filled."""
        for slot in self.slots:
            self._fill(slot)
        ready = await asyncio.gather(*(self._ready(slot, timeout) for slot in self.slots))
        if not all(ready):
            return False
        self._tasks = [asyncio.ensure_future(self._keep(slot)) for slot in self.slots]
        return True

    def signal_serving(self, signum: int) -> None:
        """Send ``signum`` to every serving worker (a starting one reads the config as it starts)."""
        for slot in self.slots:
            if slot.state == "serving" and slot.pid:
                try:
                    os.kill(slot.pid, signum)
                except ProcessLookupError:
                    pass

    async def stop(self, drain_seconds: float) -> None:
        """SIGTERM every worker (each drains), wait up to ``drain_seconds`` + 5 s, then kill what is left."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        procs = [slot.proc for slot in self.slots if slot.proc is not None]
        for proc in procs:
            if proc.is_alive() and proc.pid:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + drain_seconds + 5
        for proc in procs:
            await _exited(proc, max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                log.warning("worker pid %s did not drain in time; killing it", proc.pid)
                proc.kill()
                await _exited(proc, 5.0)
            if proc.pid:
                self._on_dead(proc.pid)
        for slot in self.slots:
            _close(slot.conn)
            slot.conn = None

    # -- one slot ---------------------------------------------------------------------------------------

    def _fill(self, slot: Slot) -> None:
        slot.generation = self._generation()
        slot.proc, slot.conn = self._spawn(slot.index)
        slot.state, slot.since, slot.ready_at, slot.retry_at = "starting", time.time(), None, None

    async def _ready(self, slot: Slot, timeout: float) -> bool:
        """Wait for the worker's "ready" (True), its death or ``timeout`` (False)."""
        assert slot.proc is not None and slot.conn is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if slot.conn.poll():
                try:
                    message = slot.conn.recv()
                except (EOFError, OSError):
                    slot.proc.join(1.0)  # died before it was ready: reap it (exitcode)
                    return False
                if isinstance(message, tuple) and message[:1] == ("waiting",):
                    # Its Store does not answer yet; it retries and logs each attempt. Not stuck: no deadline.
                    slot.state, deadline = "waiting", float("inf")
                    continue
                slot.state, slot.since, slot.ready_at = "serving", time.time(), time.monotonic()
                slot.down_since = None
                if slot.generation != self._generation() and slot.pid:
                    os.kill(slot.pid, signal.SIGHUP)  # a reload happened while it started
                return True
            if not slot.proc.is_alive():
                return False
            await asyncio.sleep(0.02)
        return False

    async def _keep(self, slot: Slot) -> None:
        """Watch the slot's worker; when it dies, back off and start another, until stopping."""
        while not self.stopping:
            assert slot.proc is not None
            proc = slot.proc
            if slot.state == "serving":
                await _exited(proc)
            elif proc.exitcode is None:  # started but never ready in time: a failed start
                log.error(
                    "worker %d (pid %s) was not ready within %.0fs; killing it", slot.index, proc.pid, START_TIMEOUT
                )
                proc.kill()
                await _exited(proc, 5.0)
            if self.stopping:
                return
            self._record_exit(slot, proc)
            delay = BACKOFF[min(slot.failures, len(BACKOFF) - 1)]
            slot.failures += 1
            log.error("worker %d (pid %s) %s; starting another in %.1fs", slot.index, proc.pid, slot.last_exit, delay)
            slot.state, slot.retry_at = "backoff", time.monotonic() + delay
            await asyncio.sleep(delay)
            if self.stopping:
                return
            slot.restarts += 1
            self._fill(slot)
            if not await self._ready(slot, START_TIMEOUT):
                continue  # dead or stuck: recorded on the next turn
            log.info("worker %d (pid %s) replaced and serving", slot.index, slot.pid)

    def _record_exit(self, slot: Slot, proc: BaseProcess) -> None:
        served = time.monotonic() - slot.ready_at if slot.state == "serving" and slot.ready_at else 0.0
        if served >= STABLE_SECONDS:
            slot.failures = 0
        words, code = exit_reason(proc.exitcode)
        if slot.state in ("starting", "waiting"):
            words, code = f"failed to start ({words})", f"start_{code}"
        slot.last_exit, slot.last_exit_code, slot.last_exit_at = words, code, time.time()
        slot.exits[code] += 1
        if slot.down_since is None:  # a failed replacement keeps the time its last serving worker died
            slot.down_since = time.monotonic()
        _close(slot.conn)
        slot.conn = None
        if proc.pid:
            self._on_dead(proc.pid)


async def _exited(proc: BaseProcess, timeout: float | None = None) -> None:
    """Until ``proc`` has exited and is reaped (``exitcode`` set), or ``timeout`` seconds."""
    if proc.exitcode is not None:
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    fd = proc.sentinel

    def exited() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, exited)
    try:
        await asyncio.wait_for(done, timeout)
    except asyncio.TimeoutError:
        return
    finally:
        loop.remove_reader(fd)
    # The sentinel closes as the process exits, a moment before it can be reaped: wait for that moment.
    proc.join(1.0)


def _close(conn: Connection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except OSError:
            pass
