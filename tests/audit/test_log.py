"""AuditLog against a real SQLite store: batches, group commit, overload policy, sinks, close."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3

import pytest

from rolegate.audit import AuditLog, AuditUnavailable, decision_event, request_event, verify_chain
from rolegate.audit.sinks import JsonlSink, StdoutSink
from rolegate.config.sections.features import AuditConfig, AuditReads

from tests.audit.samples import one_of_each


def read_allow(i: int = 0):
    return decision_event(decision="allow", user="u", method="GET", path=f"/r/{i}")


def deny(i: int = 0):
    return decision_event(decision="deny", user="u", method="GET", path=f"/d/{i}")


async def test_every_kind_is_written_in_order_and_chained(store) -> None:
    log = AuditLog(store, batch_size=3)
    log.start()
    events = one_of_each()
    for event in events:
        log.emit(event)
    await log.flush()
    await log.close()
    rows = await store.audit_rows()
    assert [r["kind"] for r in rows] == [e.kind for e in events]
    assert [json.loads(r["body"])["id"] for r in rows] == [e.id for e in events]
    assert log.written == len(events) and log.batches >= 4
    report = await verify_chain(store, None)
    assert report.ok and report.checked == len(events)


async def test_emit_durable_returns_after_commit(store) -> None:
    log = AuditLog(store)
    log.start()
    for i in range(20):
        event = request_event(user="alice", method="POST", path=f"/w/{i}", status=201)
        seq = await log.emit_durable(event)
        # A separate connection (as another process would) sees the row at once.
        db = sqlite3.connect(store.path)
        try:
            row = db.execute("SELECT seq, json_extract(body, '$.id') FROM audit WHERE seq=?", (seq,)).fetchone()
        finally:
            db.close()
        assert row == (seq, event.id)
    await log.close()


async def test_concurrent_durable_emitters_share_batches(store) -> None:
    log = AuditLog(store, batch_size=64)
    log.start()
    seqs = await asyncio.gather(
        *(log.emit_durable(request_event(user=f"u{i}", method="PUT", path="/x", status=200)) for i in range(256))
    )
    await log.close()
    assert sorted(seqs) == list(range(1, 257))
    assert log.batches < 256  # group commit: many acknowledgements per transaction
    assert (await verify_chain(store, None)).ok


async def test_a_durable_commit_waits_for_requests_already_running(store) -> None:
    # Request A emits; requests B..K are running on the loop and emit one turn later (as a request does
    # after its decision). They share A's commit instead of each paying their own fsync.
    log = AuditLog(store)
    log.start()
    await asyncio.sleep(0.05)  # the writer is idle, waiting for work

    async def request(i: int, turns: int) -> int:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await log.emit_durable(request_event(user=f"u{i}", method="POST", path="/w", status=201))

    seqs = await asyncio.gather(request(0, 0), *(request(i, 1) for i in range(1, 11)))
    await log.close()
    assert sorted(seqs) == list(range(1, 12))
    assert log.batches == 1


async def test_full_queue_sheds_reads_and_fails_closed_for_essentials(store) -> None:
    log = AuditLog(store, queue_size=20, wait_timeout=0.05, durable_timeout=0.05)  # writer not started yet
    accepted_reads = sum(log.emit(read_allow(i)) for i in range(30))
    assert accepted_reads == 15 and log.dropped_reads == 15  # reads may use three quarters of the queue
    for i in range(5):
        assert log.emit(deny(i))  # the reserved quarter takes denials
    assert log.depth == 20
    with pytest.raises(AuditUnavailable) as refused:
        log.emit(deny(99))
    assert refused.value.status == 503
    with pytest.raises(AuditUnavailable):
        await log.emit_durable(request_event(user="u", method="POST", path="/w", status=200))
    assert log.rejected == 2
    log.start()
    await log.flush()
    assert log.depth == 0
    # Room again: a durable write goes through.
    assert await log.emit_durable(request_event(user="u", method="POST", path="/w", status=200)) == 21
    await log.close()
    assert log.written == 21
    assert (await verify_chain(store, None)).ok


async def test_backpressure_waits_for_room(store) -> None:
    log = AuditLog(store, queue_size=10, wait_timeout=30)
    for i in range(10):
        log.emit(deny(i))
    waiter = asyncio.ensure_future(log.emit_durable(request_event(user="u", method="POST", path="/w", status=200)))
    await asyncio.sleep(0)
    assert not waiter.done()  # blocked on a full queue, not refused
    log.start()
    assert await asyncio.wait_for(waiter, 30) == 11
    await log.close()


async def test_locked_database_keeps_events_queued_until_it_is_free(store, raw) -> None:
    # Make the store give up on a lock quickly so the writer's retry path runs.
    await store._run_audit(lambda db: db.execute("PRAGMA busy_timeout=20"))  # the audit connection
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    log = AuditLog(store, queue_size=40, wait_timeout=0.05, durable_timeout=120)
    log.start()
    for i in range(30):
        log.emit(deny(i))
    for i in range(30):
        log.emit(read_allow(i))  # the queue is three quarters full: reads are shed
    assert log.dropped_reads == 30
    durable = asyncio.ensure_future(log.emit_durable(request_event(user="u", method="POST", path="/w", status=200)))
    for _ in range(1000):
        if log.failed_batches >= 2:
            break
        await asyncio.sleep(0.01)
    assert log.failed_batches >= 2 and not durable.done() and log.depth == 31
    blocker.execute("COMMIT")
    blocker.close()
    assert await asyncio.wait_for(durable, 60) == 31
    await log.close()
    assert raw.execute("SELECT count(*) FROM audit") == [(31,)]
    assert (await verify_chain(store, None)).ok


async def test_sampling_settings() -> None:
    assert AuditLog.__init__  # the sampler is bound per instance; check the three shapes
    from rolegate.audit.sampling import read_sampler

    assert read_sampler(False, 1.0)() is False
    assert read_sampler(True, 0.0)() is False
    assert read_sampler(True, 1.0)() is True
    seq = iter([0.005, 0.5])
    sampled = read_sampler(True, 0.01, rng=lambda: next(seq))
    assert sampled() is True and sampled() is False


async def test_from_config_applies_audit_section(store, tmp_path) -> None:
    class Cfg:
        audit = AuditConfig(
            sinks=("store", f"jsonl:{tmp_path / 'a.jsonl'}"),
            reads=AuditReads(enabled=False),
            durable_writes=False,
            queue_size=50,
            batch_size=7,
        )
        session = None

    log = AuditLog.from_config(store, Cfg())
    assert log.should_record_read() is False and log.durable_writes is False
    log.start()
    assert await log.emit_write(request_event(user="u", method="POST", path="/w", status=200)) is None
    await log.close()
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 1


async def test_jsonl_and_stdout_sinks_copy_seq_and_hash(store, tmp_path) -> None:
    read_fd, write_fd = os.pipe()
    log = AuditLog(store, sinks=[JsonlSink(tmp_path / "audit" / "a.jsonl"), StdoutSink(write_fd)], batch_size=4)
    log.start()
    for event in one_of_each():
        await log.emit_durable(event)
    await log.close()
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        piped = pipe.read().decode().splitlines()
    filed = (tmp_path / "audit" / "a.jsonl").read_text().splitlines()
    assert piped == filed
    rows = await store.audit_rows()
    for line, row in zip(filed, rows, strict=True):
        copy = json.loads(line)
        assert (copy["seq"], copy["hash"], copy["prev_hash"], copy["kind"]) == (
            row["seq"],
            row["hash"],
            row["prev_hash"],
            row["kind"],
        )
        assert copy["event"] == json.loads(row["body"])
        assert copy["time"].endswith("Z")


async def test_close_flushes_and_refuses_afterwards(store) -> None:
    log = AuditLog(store)
    log.start()
    for i in range(500):
        log.emit(deny(i))
    await log.close()
    assert len(await store.audit_rows(limit=1000)) == 500
    with pytest.raises(AuditUnavailable):
        log.emit(deny())


async def test_unencodable_body_is_kept_as_a_trace(store) -> None:
    log = AuditLog(store)
    log.start()
    event = request_event(user="u", method="POST", path="/w", status=200)
    event.body["bad"] = float("nan")  # a caller bypassed the builders' cleaning
    await log.emit_durable(event)
    await log.close()
    body = json.loads((await store.audit_rows())[0]["body"])
    assert "unencodable" in body and "nan" in body["repr"]


class _AmbiguousCommit:
    """The real SQLite store, with PostgreSQL's answer to an ambiguous commit: the first batch is committed
    and then the connection "drops" (the caller gets an error); a retry of events already stored by id gets
    their seqs back, the stored version kept (tests/scale/test_audit_exactly_once.py does this on a real one)."""

    def __init__(self, store, hold: asyncio.Event) -> None:
        self.store, self.hold, self.failed = store, hold, False
        self.stored: dict[str, int] = {}

    def __getattr__(self, name):
        return getattr(self.store, name)

    async def append_audit(self, items, chain):
        known = [self.stored.get(json.loads(body)["id"]) for _, _, body in items]
        if all(seq is not None for seq in known):
            return known
        seqs = await self.store.append_audit(items, chain)
        for (_, _, body), seq in zip(items, seqs):
            self.stored[json.loads(body)["id"]] = seq
        if not self.failed:
            self.failed = True
            await self.hold.wait()  # the answer is lost while the request waiting for it gives up
            raise ConnectionResetError(104, "Connection reset by peer")
        return seqs


async def test_a_write_refused_after_an_ambiguous_commit_is_corrected_in_the_trail(store) -> None:
    """A write whose audit commit did not answer within durable_timeout is answered 503 and never forwarded;
    when that commit had in fact landed with the allowed body (PostgreSQL, connection dropped mid-commit), the
    retry keeps the stored version. Found by the scale outage test (a 503 write stored as allowed, 2 runs in
    ~30): the trail now carries a refused event that names the one it corrects."""
    hold = asyncio.Event()
    log = AuditLog(_AmbiguousCommit(store, hold), durable_timeout=0.2)
    log.start()
    write = decision_event(decision="allow", user="u", method="POST", path="/w/1")
    with pytest.raises(AuditUnavailable):
        await log.emit_durable(write)  # answered 503: the request is never forwarded
    hold.set()
    await log.flush()
    await log.close()
    bodies = [json.loads(r["body"]) for r in await store.audit_rows()]
    stored = [b for b in bodies if b["id"] == write.id]
    assert stored and "refused" not in stored[0]  # what the lost commit stored: the allowed version
    corrections = [b for b in bodies if b.get("corrects") == write.id]
    assert len(corrections) == 1 and corrections[0]["refused"] == "audit_unavailable", bodies
    assert corrections[0]["path"] == "/w/1" and corrections[0]["id"] != write.id
