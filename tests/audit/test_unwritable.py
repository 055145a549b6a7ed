"""When the audit cannot be written (a full disk, a broken sink) nothing is lost in silence.

Unit level, against a real SQLite store and real files; the whole story through ``rolegate serve`` on
a full tmpfs is tests/faults/test_full_disk.py.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os

import pytest

from rolegate.audit import AuditLog, AuditUnavailable, decision_event
from rolegate.audit import sinks
from rolegate.audit.chain import chain_hash
from rolegate.audit.sinks import JsonlSink, format_line
from rolegate.store.base import GENESIS, StoreUnavailable


async def fill_audit_connection(store, pages: int = 20) -> None:
    """SQLite answers SQLITE_FULL past max_page_count, exactly as on a full disk (per connection)."""
    await store.append_audit([(1.0, "decision", "{}")], chain_hash)  # opens the audit connection
    await store._run_audit(lambda db: db.execute(f"PRAGMA max_page_count={pages}").fetchall())


async def test_a_full_database_says_so_not_cannot_rollback(store) -> None:
    await fill_audit_connection(store)
    with pytest.raises(StoreUnavailable) as failed:
        await store.append_audit([(1.0, "decision", "x" * 3000)] * 200, chain_hash)
    assert "disk is full" in str(failed.value)
    assert "cannot rollback" not in str(failed.value)
    # The connection is usable again once there is room.
    await store._run_audit(lambda db: db.execute("PRAGMA max_page_count=1000000").fetchall())
    seqs = await store.append_audit([(2.0, "decision", "{}")], chain_hash)
    assert seqs == [2]


# -- JSONL: a line is there whole or not at all ------------------------------------------------------


def rows(first: int, count: int) -> list[tuple]:
    """Committed rows as the store hands them to sinks, chained from GENESIS at ``first``."""
    out, prev = [], GENESIS if first == 1 else "0" * 63 + "1"
    for seq in range(first, first + count):
        body = json.dumps(
            {"v": 1, "id": f"{seq:016x}", "user": "u", "path": f"/r/{seq}"}, separators=(",", ":"), sort_keys=True
        )
        digest = chain_hash(prev, seq, 1000.0 + seq, "decision", body)
        out.append((seq, 1000.0 + seq, "decision", body, prev, digest))
        prev = digest
    return out


class DiskFillsUp:
    """``os`` for the sinks module whose write() takes ``room`` bytes, then fails with ENOSPC."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __getattr__(self, name: str):
        return getattr(os, name)

    def write(self, fd: int, data) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        taken = os.write(fd, bytes(data[: self.room]))
        self.room -= taken
        return taken


def test_a_jsonl_batch_that_meets_a_full_disk_leaves_no_torn_line(tmp_path, monkeypatch) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlSink(path)
    sink.write(rows(1, 3), True)
    before = path.read_bytes()
    monkeypatch.setattr(sinks, "os", DiskFillsUp(room=150))  # the disk fills up inside the next batch
    with pytest.raises(OSError) as failed:
        sink.write(rows(4, 5), True)
    assert path.read_bytes() == before  # the half-written batch was taken back
    assert failed.value.errno == errno.ENOSPC and failed.value.rows_written == 0
    monkeypatch.setattr(sinks, "os", os)
    sink.write(rows(4, 5), True)
    sink.close()
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == list(range(1, 9))


def test_a_torn_last_line_is_cut_when_the_copy_is_opened(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    whole = b"".join(format_line(r) for r in rows(1, 2))
    path.write_bytes(whole + format_line(rows(3, 1)[0])[:40])  # a process died in the middle of a write
    sink = JsonlSink(path)
    sink.write(rows(3, 1), False)
    sink.close()
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [1, 2, 3]


# -- the AuditLog: unwritable targets are named, counted, retried ------------------------------------


class FlakySink:
    """A sink that refuses its first ``failures`` writes with ENOSPC, then takes everything."""

    def __init__(self, failures: int) -> None:
        self.name = "flaky"
        self.failures = failures
        self.rows: list[tuple] = []

    def write(self, rows: list[tuple], durable: bool) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self.rows.extend(rows)

    def close(self) -> None:
        pass


def read(i: int):
    return decision_event(decision="allow", user="u", method="GET", path=f"/r/{i}")


async def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_a_full_store_is_named_reads_are_counted_and_everything_kept_is_written(store) -> None:
    seen: list[dict] = []
    log = AuditLog(store, queue_size=40, linger=0, observer=lambda a: seen.append(dict(a.unwritable)))
    log.start()
    await fill_audit_connection(store, pages=8)
    kept = sum(
        log.emit(decision_event(decision="allow", user="u", method="GET", path="/r/" + "x" * 2000)) for _ in range(100)
    )
    await wait_until(lambda: "store" in log.unwritable)
    assert "disk is full" in log.unwritable["store"] and "SQLITE_FULL" in log.unwritable["store"]
    assert any("store" in state for state in seen)  # the observer (metrics, /readyz) heard of it
    assert log.dropped[("decision", "queue_full")] == 100 - kept > 0  # every read not kept is counted
    await store._run_audit(lambda db: db.execute("PRAGMA max_page_count=1000000").fetchall())
    await log.flush()
    assert log.unwritable == {} and seen[-1] == {}
    assert log.written == kept and len(await store.audit_rows(limit=1000)) == kept + 1  # + the filler
    await log.close()


async def test_on_failure_refuse_answers_reads_503_while_the_audit_cannot_be_written(store) -> None:
    log = AuditLog(store, queue_size=40, linger=0, on_failure="refuse")
    log.start()
    assert log.should_record_read() is True
    await fill_audit_connection(store, pages=8)
    for i in range(30):  # denials are never shed: 60 kB that do not fit
        log.emit(decision_event(decision="deny", user="u", method="GET", path=f"/d/{i}/" + "x" * 2000))
    await wait_until(lambda: "store" in log.unwritable)
    with pytest.raises(AuditUnavailable) as refused:
        log.should_record_read()
    assert "disk is full" in str(refused.value.detail or refused.value)
    assert log.dropped[("decision", "refused")] == 1
    await store._run_audit(lambda db: db.execute("PRAGMA max_page_count=1000000").fetchall())
    await log.flush()
    assert log.should_record_read() is True
    await log.close()


async def test_a_sink_that_fails_keeps_its_events_and_catches_up_without_new_traffic(store) -> None:
    sink = FlakySink(failures=3)
    log = AuditLog(store, sinks=[sink], linger=0)
    log.start()
    for i in range(5):
        log.emit(read(i))
    await log.flush()
    assert log.unwritable.get("flaky", "").startswith("ENOSPC")
    # Nothing else is emitted: the writer offers the backlog again by itself.
    await wait_until(lambda: "flaky" not in log.unwritable)
    assert [row[0] for row in sink.rows] == [1, 2, 3, 4, 5]
    assert not log.sink_dropped
    await log.close()


async def test_a_sink_backlog_is_bounded_and_what_overflows_is_counted_by_kind(store) -> None:
    sink = FlakySink(failures=10**9)
    log = AuditLog(store, sinks=[sink], linger=0, queue_size=10, batch_size=4)
    log.start()
    for i in range(25):
        log.emit(read(i))
        await log.flush()
    assert sum(log.sink_dropped.values()) == 15 and log.sink_dropped[("flaky", "decision")] == 15
    await log.close()  # the last 10 could not be copied either: counted, and logged at ERROR
    assert log.sink_dropped[("flaky", "decision")] == 25 and sink.rows == []


async def test_readiness_and_metrics_follow_the_audit_state(store) -> None:
    from prometheus_client import REGISTRY

    from rolegate.server import audit_health

    log = AuditLog(store, sinks=[FlakySink(failures=10**9)], linger=0, observer=audit_health.publish)
    log.start()
    log.emit(read(0))
    await log.flush()
    ready = audit_health.with_audit({"ready": True, "status": "ok", "checks": {}})
    assert ready["ready"] is False and ready["checks"]["audit"]["state"] == "unwritable"
    assert ready["checks"]["audit"]["targets"]["flaky"].startswith("ENOSPC")
    await log.close()
    assert audit_health.check() == {"state": "ok"}
    assert REGISTRY.get_sample_value("rolegate_audit_sink_dropped_total", {"sink": "flaky", "kind": "decision"}) >= 1


# -- verify reads every copy -------------------------------------------------------------------------


async def test_verify_names_gaps_and_torn_lines_in_a_copy(store, tmp_path) -> None:
    from rolegate.audit.verify import verify_copy

    log = AuditLog(store, linger=0)
    log.start()
    for i in range(30):
        log.emit(read(i))
    await log.flush()
    await log.close()
    stored = await store.audit_rows(limit=100)
    lines = [format_line((r["seq"], r["ts"], r["kind"], r["body"], r["prev_hash"], r["hash"])) for r in stored]
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(lines))
    assert (await verify_copy(store, path)).ok

    # Events 11..14 never arrived, line 20 was cut in half and the next write glued to it, one line edited.
    edited = lines[24].replace(b'"/r/24"', b'"/r/99"')
    path.write_bytes(b"".join(lines[:10] + lines[14:19] + [lines[19][:50]] + lines[20:24] + [edited] + lines[25:]))
    report = await verify_copy(store, path)
    assert not report.ok
    text = "\n".join(report.problems)
    assert "events 11..14 (4) are missing from the copy (the store has them)" in text
    assert "not one whole JSON line: torn" in text
    assert "seq 25: its hash does not match its contents: edited" in text
    assert report.last_seq == 30
