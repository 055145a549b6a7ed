"""Prometheus metrics. prometheus-client's multiprocess mode aggregates the master's and every worker's on the
internal listener: ``rolegate serve`` sets PROMETHEUS_MULTIPROC_DIR before the master imports this module
(rolegate.cli.serve); the workers, spawned, inherit it."""

from __future__ import annotations

import asyncio

from prometheus_client import Counter, Gauge

from rolegate.server import metric_files

metric_files.install()  # before the first value: a full disk must not SIGBUS a worker (see metric_files)

REQUESTS = Counter("rolegate_requests_total", "Requests answered by the proxy listener", ["outcome"])
DECISIONS = Counter("rolegate_decisions_total", "Authorization decisions", ["decision", "mode"])
UPSTREAM_ERRORS = Counter(
    "rolegate_upstream_errors_total",
    "Requests answered 502/504 because the upstream failed before its answer began",
    ["upstream", "kind"],
)
CONFIG_RELOADS = Counter("rolegate_config_reloads_total", "Config reload attempts", ["result"])
DIRECTORY_USERS = Gauge("rolegate_directory_users", "Users in the applied directory snapshot", multiprocess_mode="max")
DIRECTORY_PENDING_DELETIONS = Gauge(
    "rolegate_directory_refused_deletions", "Users a refused sync would have removed", multiprocess_mode="max"
)
AUDIT_QUEUE = Gauge("rolegate_audit_queue_depth", "Audit events waiting to be written", multiprocess_mode="livesum")
# Set by rolegate.server.audit_health from each AuditLog's counts (see there; /readyz reads the gauge).
AUDIT_DROPPED = Counter("rolegate_audit_dropped_total", "Audit events that never reached the Store", ["kind", "reason"])
AUDIT_SINK_DROPPED = Counter(
    "rolegate_audit_sink_dropped_total", "Audit events in the Store that a sink never received", ["sink", "kind"]
)
AUDIT_SINK_BACKLOG = Gauge(
    "rolegate_audit_sink_backlog", "Audit events a failing sink still owes, kept to retry", multiprocess_mode="livesum"
)
CONNECTIONS_CLOSED = Counter(
    "rolegate_connections_closed_total",
    "Client connections closed for being too slow or past server.max_connections",
    ["reason"],
)
# livesum: how many live processes cannot write the target (a dead worker's share goes with it); its
# file exists from the start (AUDIT_QUEUE), so a full disk never has to make one (see metric_files).
AUDIT_UNWRITABLE = Gauge(
    "rolegate_audit_unwritable",
    "Processes that cannot write the audit to this target",
    ["target", "error"],
    multiprocess_mode="livesum",
)


class BufferedCounter:
    """A counter child whose increments are summed in-process and written out about once a second.

    In multiprocess mode every ``inc()`` writes a memory-mapped file; on the per-request path that
    was measurable (~1.5% of a request each), so the hot counters buffer.
    """

    __slots__ = ("child", "pending")

    def __init__(self, child: Counter) -> None:
        self.child = child
        self.pending = 0

    def inc(self, amount: int = 1) -> None:
        self.pending += amount

    def flush(self) -> None:
        pending, self.pending = self.pending, 0
        if pending:
            self.child.inc(pending)


_BUFFERED: list[BufferedCounter] = []


def buffered(child: Counter) -> BufferedCounter:
    counter = BufferedCounter(child)
    _BUFFERED.append(counter)
    return counter


def flush_buffered() -> None:
    for counter in _BUFFERED:
        counter.flush()


async def flush_forever(interval: float = 1.0) -> None:
    while True:
        await asyncio.sleep(interval)
        flush_buffered()
