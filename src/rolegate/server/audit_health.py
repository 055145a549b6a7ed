"""The audit trail's health for /metrics and /readyz, across every process of one instance.

Each AuditLog (one per worker, one in the master for the directory sync) hands its counts and state
to ``publish`` after every batch, every failed attempt and at close. Its counts become Prometheus
counters (dropped events by kind and reason, events a sink never got); the targets it cannot write
become the gauge ``rolegate_audit_unwritable{target,error}`` (``livesum``: how many processes cannot
write there; a dead worker's share goes with it), which ``/readyz`` reads back from every process of
the instance (``check``).
"""

from __future__ import annotations

import glob
import itertools
import os
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from rolegate.audit import AuditLog
from rolegate.server import metrics


class _Published:
    """What one AuditLog's counts were when they were last handed on (kept on the log itself)."""

    __slots__ = ("key", "dropped", "sink_dropped")

    def __init__(self, key: int) -> None:
        self.key = key
        self.dropped: dict[tuple[str, str], int] = {}
        self.sink_dropped: dict[tuple[str, str], int] = {}


# The live AuditLogs of this process (several during a reload): key -> (unwritable, queue depth, backlog).
_live: dict[int, tuple[dict[str, str], int, int]] = {}
_keys = itertools.count(1)
_shown: set[tuple[str, str]] = set()


def publish(audit: AuditLog) -> None:
    """The AuditLog observer: counters by the increase since the last call, gauges for this process."""
    global _shown
    seen = audit.observer_state
    if seen is None:
        seen = audit.observer_state = _Published(next(_keys))
    for labels, count in audit.dropped.items():
        if count > seen.dropped.get(labels, 0):
            metrics.AUDIT_DROPPED.labels(*labels).inc(count - seen.dropped.get(labels, 0))
            seen.dropped[labels] = count
    for labels, count in audit.sink_dropped.items():
        if count > seen.sink_dropped.get(labels, 0):
            metrics.AUDIT_SINK_DROPPED.labels(*labels).inc(count - seen.sink_dropped.get(labels, 0))
            seen.sink_dropped[labels] = count
    if audit.closed:
        _live.pop(seen.key, None)
    else:
        _live[seen.key] = (dict(audit.unwritable), audit.depth, audit.stats()["sink_backlog"])
    metrics.AUDIT_QUEUE.set(sum(depth for _, depth, _ in _live.values()))
    metrics.AUDIT_SINK_BACKLOG.set(sum(backlog for _, _, backlog in _live.values()))
    failing = {(target, error) for unwritable, _, _ in _live.values() for target, error in unwritable.items()}
    # The new labels first, then the old ones cleared: a target whose error changes (the connection was
    # terminated, then refused) is never, even for a moment, at 0 under both. /readyz reads these values
    # from another process at any time; clearing first let it see a working audit (200) between the two.
    for labels in failing - _shown:
        metrics.AUDIT_UNWRITABLE.labels(*labels).set(1)
    for labels in _shown - failing:
        metrics.AUDIT_UNWRITABLE.labels(*labels).set(0)
    _shown = failing


def check() -> dict[str, Any]:
    """``/readyz``'s audit check: ``{"state": "ok"}``, or ``unwritable`` with each target's error."""
    targets: dict[str, str] = {}
    for metric in _collect():
        if metric.name != "rolegate_audit_unwritable":
            continue
        for sample in metric.samples:
            if sample.value > 0:
                targets.setdefault(sample.labels["target"], sample.labels["error"])
    return {"state": "unwritable", "targets": targets} if targets else {"state": "ok"}


def with_audit(state: dict[str, Any]) -> dict[str, Any]:
    """Add the audit check to a readiness answer; an audit that cannot be written makes it not ready."""
    audit = check()
    state.setdefault("checks", {})["audit"] = audit
    if audit["state"] != "ok":
        state["ready"] = False
        state["status"] = "unavailable"
    return state


def _collect() -> list[Metric]:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return list(metrics.AUDIT_UNWRITABLE.collect())
    # Only the livesum gauges' files: cheap enough for a probe every second.
    files = glob.glob(os.path.join(path, "gauge_livesum_*.db"))
    # prometheus-client leaves merge unannotated
    merged: list[Metric] = list(MultiProcessCollector.merge(files, accumulate=False))  # type: ignore[no-untyped-call]
    return merged
