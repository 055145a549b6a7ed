"""The audit gauge that /readyz reads from every process never says "writable" while the audit is not.

/readyz (the master) reads ``rolegate_audit_unwritable{target,error}`` from the workers' metric files at any
moment, so every intermediate value ``publish`` leaves in the gauge is a possible answer. When the error of a
target changes while it stays unwritable (PostgreSQL's fast shutdown: "connection was closed in the middle of
operation", then "Connection refused"), the old label was cleared before the new one was set: a read in
between saw no failing target and answered 200 in the middle of a database outage.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from rolegate.server import audit_health, metrics


class FakeAudit:
    """What ``publish`` reads from an AuditLog."""

    def __init__(self) -> None:
        self.observer_state: Any = None
        self.dropped: Counter[tuple[str, str]] = Counter()
        self.sink_dropped: Counter[tuple[str, str]] = Counter()
        self.closed = False
        self.unwritable: dict[str, str] = {}
        self.depth = 0

    def stats(self) -> dict[str, int]:
        return {"sink_backlog": 0}


class WatchedGauge:
    """The real gauge; after every ``set`` it notes what /readyz's audit check would answer right then."""

    def __init__(self, gauge: Any, seen: list[tuple[tuple[str, ...], float, dict[str, Any]]]) -> None:
        self.gauge, self.seen = gauge, seen

    def labels(self, *labels: str) -> Any:
        child, seen = self.gauge.labels(*labels), self.seen

        class Child:
            def set(self, value: float) -> None:
                child.set(value)
                seen.append((labels, value, audit_health.check()))

        return Child()

    def collect(self) -> Any:
        return self.gauge.collect()


@pytest.fixture
def audit(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # this process's gauge, read in place
    log = FakeAudit()
    yield log
    log.closed = True
    audit_health.publish(log)  # leaves the gauge as it found it for the other tests
    assert audit_health.check() == {"state": "ok"}


def test_an_error_that_changes_never_shows_a_writable_audit_in_between(audit, monkeypatch) -> None:
    audit.unwritable = {"store": "connection was closed in the middle of operation"}
    audit_health.publish(audit)
    assert audit_health.check()["state"] == "unwritable"

    seen: list[tuple[tuple[str, ...], float, dict[str, Any]]] = []
    monkeypatch.setattr(metrics, "AUDIT_UNWRITABLE", WatchedGauge(metrics.AUDIT_UNWRITABLE, seen))
    audit.unwritable = {"store": "ECONNREFUSED: Connection refused"}
    audit_health.publish(audit)

    assert len(seen) == 2, seen  # the new label set, the old one cleared
    writable_between = [(labels, value, state) for labels, value, state in seen if state["state"] != "unwritable"]
    assert not writable_between, writable_between
    assert audit_health.check() == {"state": "unwritable", "targets": {"store": "ECONNREFUSED: Connection refused"}}


def test_a_target_written_again_is_cleared_and_another_one_still_failing_stays(audit) -> None:
    audit.unwritable = {"store": "ECONNREFUSED: Connection refused", "jsonl": "ENOSPC: No space left on device"}
    audit_health.publish(audit)
    assert set(audit_health.check()["targets"]) == {"store", "jsonl"}
    audit.unwritable = {"jsonl": "ENOSPC: No space left on device"}
    audit_health.publish(audit)
    assert audit_health.check() == {"state": "unwritable", "targets": {"jsonl": "ENOSPC: No space left on device"}}
    audit.unwritable = {}
    audit_health.publish(audit)
    assert audit_health.check() == {"state": "ok"}


# -- /readyz holds "writes_unavailable" until the master's probe has seen the database answer --------------


async def test_readyz_stays_503_until_the_probe_sees_the_database_after_the_audit_failed(
    audit, aiohttp_client, monkeypatch
) -> None:
    """The audit gauge is one signal, the master's probe (once a second) the other. The gauge can lose a
    failing share while the database is still away (a worker that died with it, a moment between two labels)
    and the probe may not have looked yet: /readyz must not go back to 200 on that alone."""
    import time

    from rolegate.server.internal import build_internal_app

    probe = {"database": "ok", "sent_at": time.monotonic()}  # the probe's view: it has not looked since the stop

    def readiness() -> dict:
        return {
            "ready": True,
            "status": "ok",
            "checks": {"storage": {"state": probe["database"], "database": probe["database"]}},
        }

    client = await aiohttp_client(build_internal_app(readiness, database_answered=lambda: probe["sent_at"]))

    async def read() -> tuple[int, dict]:
        async with client.get("/readyz") as resp:
            return resp.status, await resp.json()

    assert (await read())[0] == 200
    audit.unwritable = {"store": "ECONNREFUSED: Connection refused"}  # a worker's audit batch was refused
    audit_health.publish(audit)
    status, body = await read()
    assert (status, body["status"]) == (503, "writes_unavailable"), body

    audit.unwritable = {}  # its share is gone (the worker died), and the probe has not looked since
    audit_health.publish(audit)
    status, body = await read()
    assert (status, body["status"]) == (503, "writes_unavailable"), body
    assert body["checks"]["storage"]["writes"] == "held until the probe sees the database answer"

    probe["database"] = "unavailable"  # the probe looks: the database is away
    assert (await read())[0] == 503
    probe["database"] = "ok"  # it answers again, to a query sent after the last not-ready read
    probe["sent_at"] = time.monotonic()
    status, body = await read()
    assert (status, body["status"]) == (200, "ok"), body
    assert "writes" not in body["checks"]["storage"]


async def test_without_a_probe_nothing_is_held(audit, aiohttp_client) -> None:
    """SQLite has no probe: /readyz follows the audit gauge alone (a store written again is ready again)."""
    from rolegate.server.internal import build_internal_app

    client = await aiohttp_client(build_internal_app(lambda: {"ready": True, "status": "ok", "checks": {}}))
    audit.unwritable = {"store": "database or disk is full"}
    audit_health.publish(audit)
    async with client.get("/readyz") as resp:
        assert resp.status == 503
    audit.unwritable = {}
    audit_health.publish(audit)
    async with client.get("/readyz") as resp:
        assert resp.status == 200
