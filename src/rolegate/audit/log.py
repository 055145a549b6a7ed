"""AuditLog: one per worker. Requests enqueue events; a background task writes them in batches.

Overload policy (the queue holds at most ``audit.queue_size`` events, including the batch being
written):

- Sampled reads (allowed GET/HEAD/OPTIONS decisions) may use only the first three quarters of the
  queue; beyond that they are dropped and counted in ``dropped_reads``. The last quarter is kept for
  events that must not be lost.
- Every other event (denials, would-denials, writes, admin changes, passes, sign-ins) is never
  dropped. ``emit`` on a full queue raises :class:`AuditUnavailable` (HTTP 503) so the request fails
  closed, and the refused event is logged as a JSON line at ERROR level. ``emit_durable`` first waits
  for room (backpressure, up to ``wait_timeout``) and then fails closed the same way.
- When the Store is unreachable, the writer keeps the batch at the head of the queue and retries
  with backoff; the queue fills, reads are shed, and essential events start failing closed. Once the
  Store is back, everything still queued is written, in order. Meanwhile a write decision (a request
  about to be forwarded) is refused at once (503, ``Retry-After``) and recorded with ``"refused":
  "audit_unavailable"``; a retried batch stores each event once (the Store matches events by id).

Nothing is lost in silence. While the Store or a sink cannot be written, ``unwritable`` names it and
the real error (``/readyz`` turns not-ready through the observer), and ``audit.on_failure`` decides what
allowed reads do: ``serve`` keeps answering them (recorded once there is room again, or shed and
counted), ``refuse`` answers them 503. Every event that never reaches the Store is counted in
``dropped`` by (kind, reason); a batch a sink could not take is kept (up to ``queue_size`` events) and
offered again until the sink takes it, and only what overflows that backlog is counted in
``sink_dropped`` by (sink, kind). The counts and the state go to ``observer`` (Prometheus, /readyz), and
a summary is logged at most every ``SUMMARY_SECONDS``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import sqlite3
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Literal

from rolegate.audit.chain import chain_hash
from rolegate.audit.checkpoint import checkpoint_key
from rolegate.audit.events import AuditEvent, encode_body, new_event_id
from rolegate.audit.retention import prune_expired
from rolegate.audit.sampling import read_sampler
from rolegate.audit.sinks import Row, Sink, open_sinks
from rolegate.errors import ServiceUnavailable
from rolegate.store.base import Store

log = logging.getLogger("rolegate.audit")
overflow_log = logging.getLogger("rolegate.audit.overflow")


# How long the writer lets a batch of events nobody waits for grow before committing it. A durable
# write (emit_durable), flush(), close() or a full batch cuts the wait short.
LINGER = 0.05
# Loop turns the writer yields before a commit somebody waits for, so that requests already running
# emit first and share it (see _write_loop).
_GATHER_YIELDS = 2
# Longest wait between two attempts to write to a Store or sink that failed.
RETRY_MAX = 2.0
# Shortest time between two log lines that sum up what was dropped.
SUMMARY_SECONDS = 10.0
# What allowed reads do while the audit cannot be written (``audit.on_failure``).
OnFailure = Literal["serve", "refuse"]


class AuditUnavailable(ServiceUnavailable):
    """The audit trail cannot take this event now; the request must not proceed (fail closed)."""

    code = "audit_unavailable"
    public_message = "The access proxy cannot record this request right now; try again shortly."
    # Seconds a client is asked to wait (the Retry-After header of the 503).
    retry_after = 2


class _Item:
    # ``sent``: the body a failed attempt carried (it may have been committed: an ambiguous commit).
    __slots__ = ("ts", "kind", "body", "future", "sent")

    def __init__(self, ts: float, kind: str, body: str, future: asyncio.Future[int] | None) -> None:
        self.ts = ts
        self.kind = kind
        self.body = body
        self.future = future
        self.sent: str | None = None


def _correction(item: _Item) -> _Item | None:
    """A refused write whose allowed version went out in a batch that failed: that commit may have happened
    (PostgreSQL dropped the connection after committing), and the retry keeps what was stored under the
    event's id. The trail is append-only, so the truth follows it: the refused body under an id of its own,
    naming the event it corrects. When the first attempt had not committed, both say refused."""
    try:
        decoded = json.loads(item.body)
    except ValueError:
        return None
    if not isinstance(decoded, dict) or "refused" not in decoded:
        return None
    body = encode_body({**decoded, "id": new_event_id(), "corrects": decoded.get("id")})
    return _Item(item.ts, item.kind, body, None)


def describe_error(exc: BaseException) -> str:
    """The real reason a write failed, short and stable enough for a metric label:
    ``ENOSPC: No space left on device``, ``database or disk is full (SQLITE_FULL)``."""
    for cause in (exc, exc.__cause__):
        if isinstance(cause, OSError) and cause.errno:
            return f"{errno.errorcode.get(cause.errno, cause.errno)}: {cause.strerror or cause}"
        if isinstance(cause, sqlite3.Error):
            name = getattr(cause, "sqlite_errorname", None)
            return f"{cause} ({name})" if name else str(cause)
    return (str(exc) or type(exc).__name__)[:160]


def _mark_refused(body: str) -> str:
    """An encoded event body with ``"refused": "audit_unavailable"`` added (its request was answered 503)."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return body
    if not isinstance(decoded, dict):
        return body
    return encode_body({**decoded, "refused": "audit_unavailable"})


def _encode(event: AuditEvent) -> str:
    try:
        return event.encode()
    except (TypeError, ValueError) as exc:
        # A caller built a body JSON cannot hold (NaN, odd keys): keep a trace rather than lose the event.
        return encode_body(
            {"v": 1, "id": new_event_id(), "user": None, "unencodable": str(exc)[:200], "repr": repr(event.body)[:2000]}
        )


class AuditLog:
    """Batched, chained audit writer for one worker. ``start()`` it in the worker's loop; ``close()`` flushes."""

    __slots__ = (
        "_store",
        "_sinks",
        "_queue",
        "_queue_size",
        "_read_limit",
        "_batch_size",
        "durable_writes",
        "should_record_read",
        "_wait_timeout",
        "_durable_timeout",
        "_wake",
        "_space",
        "_progress",
        "_task",
        "_closing",
        "_closed",
        "_executor",
        "_retention_seconds",
        "_retention_key",
        "_linger",
        "_urgent",
        "_retention_interval",
        "_retention_task",
        "_sampler",
        "on_failure",
        "unwritable",
        "dropped",
        "sink_dropped",
        "_backlog",
        "_retry_at",
        "_retry_delay",
        "observer",
        "observer_state",
        "_summary_at",
        "_summarized",
        "queued",
        "written",
        "batches",
        "dropped_reads",
        "rejected",
        "failed_batches",
        "sink_errors",
    )

    def __init__(
        self,
        store: Store,
        *,
        queue_size: int = 10000,
        batch_size: int = 256,
        durable_writes: bool = True,
        reads_enabled: bool = True,
        read_sample: float = 1.0,
        sinks: list[Sink] | None = None,
        wait_timeout: float = 5.0,
        durable_timeout: float = 10.0,
        retention_seconds: float | None = None,
        retention_key: bytes | None = None,
        retention_interval: float = 3600.0,
        linger: float = LINGER,
        on_failure: OnFailure = "serve",
        observer: Callable[[AuditLog], None] | None = None,
    ) -> None:
        self._store = store
        self._sinks = list(sinks or ())
        self._queue: deque[_Item] = deque()
        self._queue_size = max(1, queue_size)
        self._read_limit = max(1, queue_size * 3 // 4)
        self._batch_size = max(1, batch_size)
        self.durable_writes = durable_writes
        # Bound once: the cheapest callable for the configured sampling (swapped for one that refuses
        # while the audit cannot be written and on_failure is "refuse", see _mark).
        self._sampler = read_sampler(reads_enabled, read_sample)
        self.should_record_read: Callable[[], bool] = self._sampler
        self.on_failure = on_failure
        self.unwritable: dict[str, str] = {}  # "store" or a sink's name -> why it cannot be written
        self.dropped: Counter[tuple[str, str]] = Counter()  # (kind, reason) never in the Store
        self.sink_dropped: Counter[tuple[str, str]] = Counter()  # (sink, kind) in the Store, not in the sink
        self._backlog: dict[str, deque[Row]] = {sink.name: deque() for sink in self._sinks}
        self._retry_at: dict[str, float] = {}  # when a sink that failed is offered its backlog again
        self._retry_delay: dict[str, float] = {}
        self.observer = observer
        self.observer_state: Any = None  # the observer's own bookkeeping
        self._summary_at = 0.0
        self._summarized: Counter[tuple[str, str, str]] = Counter()  # what _observe already logged
        self._wait_timeout = wait_timeout
        self._durable_timeout = durable_timeout
        self._wake = asyncio.Event()
        # Set when queued events must not wait for more to share their commit (see _write_loop).
        self._urgent = asyncio.Event()
        self._linger = max(0.0, linger)
        self._space = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rolegate-audit") if self._sinks else None
        self._retention_seconds = retention_seconds
        self._retention_key = retention_key
        self._retention_interval = retention_interval
        self._retention_task: asyncio.Task[None] | None = None
        self.queued = 0  # events accepted into the queue
        self.written = 0  # events committed to the Store
        self.batches = 0  # batches committed
        self.dropped_reads = 0  # sampled reads shed because the queue was three quarters full
        self.rejected = 0  # essential events refused with 503 (logged at ERROR, never silent)
        self.failed_batches = 0  # Store writes that failed and were retried
        self.sink_errors = 0  # JSONL/stdout writes that failed (kept and retried; the Store has them)

    @classmethod
    def from_config(
        cls, store: Store, config: Any, *, base_dir: Path | None = None, run_retention: bool = False, **overrides: Any
    ) -> AuditLog:
        """Build from a full rolegate Config; ``run_retention`` on the one worker that should prune."""
        audit = config.audit
        retention = audit.retention.total_seconds() if audit.retention is not None and run_retention else None
        # What serve builds: counts and state go to Prometheus and /readyz (tests may pass their own observer).
        # Lazy, against the layers (server sits above audit): a named exception in tests/test_layers.py.
        from rolegate.server.audit_health import publish

        options: dict[str, Any] = dict(
            queue_size=audit.queue_size,
            batch_size=audit.batch_size,
            durable_writes=audit.durable_writes,
            reads_enabled=audit.reads.enabled,
            read_sample=audit.reads.sample,
            sinks=open_sinks(audit.sinks, base_dir),
            retention_seconds=retention,
            retention_key=checkpoint_key(config) if retention is not None else None,
            on_failure=audit.on_failure,
            observer=publish,
        )
        options.update(overrides)
        return cls(store, **options)

    # -- state ----------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Events waiting to be written (including the batch in flight)."""
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, int]:
        return {
            "depth": self.depth,
            "queued": self.queued,
            "written": self.written,
            "batches": self.batches,
            "dropped_reads": self.dropped_reads,
            "rejected": self.rejected,
            "failed_batches": self.failed_batches,
            "sink_errors": self.sink_errors,
            "sink_backlog": sum(len(b) for b in self._backlog.values()),
        }

    def _mark(self, target: str, error: str | None) -> None:
        """Record that ``target`` (the Store or a sink) failed with ``error``, or (None) works again."""
        if error is None:
            if self.unwritable.pop(target, None) is not None:
                log.warning("audit: %s is written again", target)
        else:
            self.unwritable[target] = error
        refuse = bool(self.unwritable) and self.on_failure == "refuse"
        self.should_record_read = self._refuse_read if refuse else self._sampler

    def _refuse_read(self) -> bool:
        """``audit.on_failure: refuse``: no read is answered while the audit cannot record it."""
        self.dropped[("decision", "refused")] += 1
        raise AuditUnavailable(
            "the audit trail cannot be written ("
            + "; ".join(f"{target}: {why}" for target, why in self.unwritable.items())
            + "); audit.on_failure is refuse"
        )

    def _observe(self) -> None:
        """Hand counts and state to the observer; log what was dropped, at most every SUMMARY_SECONDS."""
        if self.observer is not None:
            try:
                self.observer(self)
            except Exception:  # noqa: BLE001 - metrics must never stop the writer
                log.exception("audit observer failed")
        now = time.monotonic()
        if now - self._summary_at < SUMMARY_SECONDS and not self._closed:
            return
        seen = self._summarized
        parts = [
            f"{n - seen[('store', kind, reason)]} {kind} ({reason})"
            for (kind, reason), n in sorted(self.dropped.items())
            if n > seen[("store", kind, reason)]
        ]
        parts += [
            f"{n - seen[('sink', sink, kind)]} {kind} not copied to {sink}"
            for (sink, kind), n in sorted(self.sink_dropped.items())
            if n > seen[("sink", sink, kind)]
        ]
        if not parts:
            return
        self._summary_at = now
        for (kind, reason), n in self.dropped.items():
            seen[("store", kind, reason)] = n
        for (sink, kind), n in self.sink_dropped.items():
            seen[("sink", sink, kind)] = n
        log.error(
            "audit events not recorded since the last report: %s%s",
            ", ".join(parts),
            "; unwritable: " + "; ".join(f"{t}: {e}" for t, e in self.unwritable.items()) if self.unwritable else "",
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer (and the retention task when configured) on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._writer(), name="rolegate-audit-writer")
        if self._retention_seconds is not None and self._retention_key is not None and self._retention_task is None:
            self._retention_task = asyncio.get_running_loop().create_task(
                self._retention(), name="rolegate-audit-retention"
            )
        elif self._retention_seconds is not None and self._retention_key is None:
            log.error(
                "audit.retention is set but no key signs the checkpoint (set audit.checkpoint_secret or "
                "session.secret): old events are kept"
            )

    async def flush(self) -> None:
        """Return once every event accepted before this call is committed."""
        target = self.queued
        while self.written < target and self._task is not None and not self._task.done():
            self._urgent.set()
            self._progress.clear()
            await self._progress.wait()

    async def close(self, timeout: float = 3.0) -> None:
        """Write what is queued (up to ``timeout``), then stop. Anything unwritten is logged, not lost silently.

        The default stays well inside the 5 s the master grants a stopping worker beyond its drain, so a
        Store that cannot be written at shutdown still gets its unwritten events logged and counted
        rather than the worker killed with them."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        self._urgent.set()
        if self._retention_task is not None:
            self._retention_task.cancel()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except (TimeoutError, asyncio.TimeoutError):
                self._task.cancel()
                try:
                    await self._task
                except (asyncio.CancelledError, Exception):
                    pass
        self._closed = True
        while self._queue:
            item = self._queue.popleft()
            self.dropped[(item.kind, "shutdown")] += 1
            overflow_log.error(
                "audit event not written before shutdown: %s",
                f'{{"ts":{item.ts:.6f},"kind":"{item.kind}","event":{item.body}}}',
            )
            if item.future is not None and not item.future.done():
                item.future.set_exception(AuditUnavailable("the audit log closed before the event was written"))
        if self._executor is not None:
            loop = asyncio.get_running_loop()
            if any(self._backlog.values()):
                self._retry_at.clear()
                await self._copy([], False)  # one last try for what a sink could not take
            for name, backlog in self._backlog.items():
                if backlog:
                    for row in backlog:
                        self.sink_dropped[(name, row[2])] += 1
                    log.error(
                        "audit: %d events (seq %d..%d) are in the store but were never copied to %s: %s",
                        len(backlog),
                        backlog[0][0],
                        backlog[-1][0],
                        name,
                        self.unwritable.get(name, "?"),
                    )
                    backlog.clear()
            for sink in self._sinks:
                await loop.run_in_executor(self._executor, sink.close)
            self._executor.shutdown(wait=False)
        self._observe()

    # -- emitting -------------------------------------------------------------------------------

    def emit(self, event: AuditEvent) -> bool:
        """Enqueue without waiting. False: a sampled read was shed. Raises AuditUnavailable (503) when an
        essential event finds the queue full."""
        depth = len(self._queue)
        if event.droppable and depth >= self._read_limit:
            self.dropped_reads += 1
            self.dropped[(event.kind, "queue_full")] += 1
            return False
        if depth >= self._queue_size or self._closing:
            self._refuse(event, "the audit queue is full" if not self._closing else "the audit log is closing")
        self._enqueue(event, None)
        return True

    async def emit_durable(self, event: AuditEvent) -> int:
        """Enqueue and return the event's seq once the batch holding it is committed (group commit).

        Waits for room when the queue is full (backpressure); raises AuditUnavailable (503) when there is
        no room within ``wait_timeout`` or no commit within ``durable_timeout``. An event that timed out
        waiting for its commit stays queued and is still written.
        """
        loop = asyncio.get_running_loop()
        if event.kind == "decision" and "store" in self.unwritable and not self._closing:
            # A write about to be forwarded while the Store's last write failed: refuse it at once (503)
            # rather than after durable_timeout, and record it as refused once the Store is back. Other
            # durable events (admin changes, passes) follow a change already made: they keep waiting.
            self._refuse_unwritable(event)
        if len(self._queue) >= self._queue_size:
            deadline = loop.time() + self._wait_timeout
            while len(self._queue) >= self._queue_size and not self._closing:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._space.clear()
                try:
                    await asyncio.wait_for(self._space.wait(), remaining)
                except (TimeoutError, asyncio.TimeoutError):
                    break
        if len(self._queue) >= self._queue_size or self._closing:
            self._refuse(event, "the audit queue stayed full" if not self._closing else "the audit log is closing")
        future: asyncio.Future[int] = loop.create_future()
        item = self._enqueue(event, future)
        try:
            # The event stays queued whatever happens to this wait (timeout, the client going away):
            # the writer skips a future that is already done and still writes the event.
            async with asyncio.timeout(self._durable_timeout):
                return await future
        except (TimeoutError, asyncio.TimeoutError):
            if item.kind == "decision":
                # Its request is answered 503 and never forwarded: recorded as refused. (A batch being
                # committed right now was encoded already; only a commit landing at this very moment
                # keeps the allowed version.)
                item.body = _mark_refused(item.body)
            raise AuditUnavailable(
                f"audit event {event.body.get('id')} not committed within {self._durable_timeout:g}s"
            ) from None

    async def emit_write(self, event: AuditEvent) -> int | None:
        """For a write request: durable when ``audit.durable_writes`` is on, else a plain emit."""
        if self.durable_writes:
            return await self.emit_durable(event)
        self.emit(event)
        return None

    def _enqueue(self, event: AuditEvent, future: asyncio.Future[int] | None) -> _Item:
        queue = self._queue
        item = _Item(event.ts, event.kind, _encode(event), future)
        queue.append(item)
        self.queued += 1
        self._wake.set()
        if future is not None or len(queue) >= self._batch_size:
            self._urgent.set()
        return item

    def _refuse_unwritable(self, event: AuditEvent) -> None:
        """A durable event while the Store cannot be written: queued as ``refused`` (it is written, with
        everything else queued, when the Store is back; its request was answered 503 and never
        forwarded), and AuditUnavailable raised. A full queue refuses it the usual way (logged, counted)."""
        why = f"the audit store cannot be written ({self.unwritable['store']})"
        if len(self._queue) >= self._queue_size:
            self._refuse(event, why)
        self.rejected += 1
        self._enqueue(AuditEvent(event.kind, {**event.body, "refused": "audit_unavailable"}, ts=event.ts), None)
        raise AuditUnavailable(why)

    def _fail_waiting(self, sent: int, why: str) -> None:
        """The Store just failed: every write decision queued behind the batch that was sent is answered
        now (503) and kept as ``refused``. The batch that was sent waits for its retry: its commit may have
        happened (the answer lost), and the retry finds out which by the events' ids."""
        for item in islice(self._queue, sent, None):
            future = item.future
            if future is None or future.done() or item.kind != "decision":
                continue
            item.future = None
            self.rejected += 1
            item.body = _mark_refused(item.body)
            future.set_exception(AuditUnavailable(f"the audit store cannot be written ({why})"))

    def _refuse(self, event: AuditEvent, why: str) -> None:
        self.rejected += 1
        self.dropped[(event.kind, "refused")] += 1
        overflow_log.error(
            "%s; refusing the request. Event: %s",
            why,
            f'{{"ts":{event.ts:.6f},"kind":"{event.kind}","event":{_encode(event)}}}',
        )
        raise AuditUnavailable(why)

    # -- writing --------------------------------------------------------------------------------

    async def _writer(self) -> None:
        try:
            await self._write_loop()
        finally:
            self._progress.set()  # let flush() see the writer has stopped

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.05
        queue = self._queue
        # seq -> (prev_hash, hash) of what the Store chained, for the sinks' copy. Kept across the retries
        # of one batch: a Store may answer a retry with the seqs an earlier, ambiguous attempt committed
        # (PostgreSQL, after the connection dropped mid-commit) without chaining those events again.
        links: dict[int, tuple[str, str]] = {}
        while True:
            if not queue:
                if self._closing:
                    return
                self._wake.clear()
                retry = self._next_retry()
                if retry is None:
                    await self._wake.wait()
                    continue
                # A sink still owes events: offer them again when due even if nothing new comes (so a
                # sink that recovers catches up, and /readyz turns ready again, without traffic).
                try:
                    await asyncio.wait_for(self._wake.wait(), retry)
                except (TimeoutError, asyncio.TimeoutError):
                    await self._copy([], False)
                    self._observe()
                continue
            urgent = self._urgent
            if (
                self._linger
                and not urgent.is_set()
                and len(queue) < self._batch_size
                and not self._closing
                and not any(i.future is not None for i in islice(queue, self._batch_size))
            ):
                # Nobody waits for these events (sampled reads, denials): let the batch grow for a
                # moment so one commit (and fsync) carries many of them instead of a handful.
                timer = loop.call_later(self._linger, urgent.set)
                await urgent.wait()
                timer.cancel()
            elif len(queue) < self._batch_size and not self._closing:
                # Someone waits for this commit (a durable emit, a flush): do not linger, but let the
                # requests already running on this loop reach their own emit first, so that one fsync
                # carries them all (this costs microseconds; under load it makes durable batches several
                # events wide).
                for _ in range(_GATHER_YIELDS):
                    await asyncio.sleep(0)
            urgent.clear()
            batch = list(islice(queue, self._batch_size))

            def chain(prev_hash: str, seq: int, ts: float, kind: str, body: str) -> str:
                digest = chain_hash(prev_hash, seq, ts, kind, body)
                links[seq] = (prev_hash, digest)  # remembered for the sinks' copy
                return digest

            try:
                sent = [i.body for i in batch]  # a request that gives up meanwhile marks its item refused
                seqs = await self._store.append_audit([(i.ts, i.kind, body) for i, body in zip(batch, sent)], chain)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the Store is down, locked or full: keep the batch, retry
                for item, body in zip(batch, sent):
                    if item.sent is None and item.kind == "decision":
                        item.sent = body
                self.failed_batches += 1
                why = describe_error(exc)
                self._mark("store", why)
                self._fail_waiting(len(batch), why)
                log.error("audit batch of %d not written, retrying in %.2fs: %s", len(batch), backoff, why)
                self._observe()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX)
                continue
            backoff = 0.05
            if self.unwritable.get("store"):
                self._mark("store", None)
            for _ in batch:
                queue.popleft()
            corrections = [
                c for i in batch if i.sent is not None and i.sent != i.body and (c := _correction(i)) is not None
            ]
            queue.extend(corrections)  # written with the next batch
            self.queued += len(corrections)
            self.written += len(batch)
            self.batches += 1
            self._space.set()
            if self._sinks:
                rows: list[Row] = [
                    (seq, i.ts, i.kind, i.body, *links[seq]) for i, seq in zip(batch, seqs) if seq in links
                ]
                await self._copy(rows, any(i.future is not None for i in batch))
            links.clear()
            for item, seq in zip(batch, seqs):
                if item.future is not None and not item.future.done():
                    item.future.set_result(seq)
            self._progress.set()
            self._observe()

    async def _copy(self, rows: list[Row], durable: bool) -> None:
        """Give each sink what it still owes plus ``rows``; keep what it could not take, up to a queue's worth.

        A sink that failed is offered its backlog again after a back-off (0.05 s doubling to RETRY_MAX),
        not at every batch: until then new rows join its backlog.
        """
        now = time.monotonic()
        offers: list[tuple[Sink, list[Row]]] = []
        for sink in self._sinks:
            backlog = self._backlog[sink.name]
            if backlog and now < self._retry_at.get(sink.name, 0.0):
                backlog.extend(rows)
                self._trim(sink.name)
            elif backlog or rows:
                offers.append((sink, [*backlog, *rows]))
        if not offers:
            return
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self._executor, self._write_sinks, offers, durable)
        for (sink, pending), error in zip(offers, results):
            backlog = self._backlog[sink.name]
            backlog.clear()
            if error is None:
                self._retry_at.pop(sink.name, None)
                self._retry_delay.pop(sink.name, None)
                if sink.name in self.unwritable:
                    self._mark(sink.name, None)
                continue
            self.sink_errors += 1
            delay = self._retry_delay[sink.name] = min(self._retry_delay.get(sink.name, 0.025) * 2, RETRY_MAX)
            self._retry_at[sink.name] = time.monotonic() + delay
            why = describe_error(error)
            backlog.extend(pending[getattr(error, "rows_written", 0) :])
            if backlog and self.unwritable.get(sink.name) != why:
                log.error(
                    "audit sink %s cannot be written (%s); %d events (seq %d..%d) are in the store and "
                    "kept to try again",
                    sink.name,
                    why,
                    len(backlog),
                    backlog[0][0],
                    backlog[-1][0],
                )
            self._trim(sink.name)
            self._mark(sink.name, why)

    def _trim(self, name: str) -> None:
        """Bound a sink's backlog: the oldest go first, counted by kind."""
        backlog = self._backlog[name]
        while len(backlog) > self._queue_size:
            self.sink_dropped[(name, backlog.popleft()[2])] += 1

    def _next_retry(self) -> float | None:
        """Seconds until a sink that owes events is tried again (None: none owes anything)."""
        due = [self._retry_at.get(name, 0.0) for name, backlog in self._backlog.items() if backlog]
        return max(0.01, min(due) - time.monotonic()) if due else None

    def _write_sinks(self, offers: list[tuple[Sink, list[Row]]], durable: bool) -> list[OSError | None]:
        """On the sink thread: one write per sink; the error of each (None: it took everything)."""
        results: list[OSError | None] = []
        for sink, rows in offers:
            try:
                sink.write(rows, durable)
                results.append(None)
            except OSError as exc:
                results.append(exc)
        return results

    async def _retention(self) -> None:
        assert self._retention_seconds is not None and self._retention_key is not None
        await asyncio.sleep(min(60.0, self._retention_interval))
        while True:
            try:
                result = await prune_expired(
                    self._store, retention_seconds=self._retention_seconds, key=self._retention_key, now=time.time()
                )
                if result.deleted:
                    log.info(
                        "audit retention pruned %d events (checkpoint at seq %s)", result.deleted, result.checkpoint_seq
                    )
                elif result.skipped and "invalid" in result.skipped:
                    log.error("audit retention: %s", result.skipped)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("audit retention failed: %s", exc)
            await asyncio.sleep(self._retention_interval)
