"""The Store contract, run against every backend: what SQLite does, PostgreSQL (+Redis) does too."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from rolegate.config.sections.storage import StorageConfig
from rolegate.store import Store, VersionConflict, watch_counters
from rolegate.store.base import GENESIS

from . import workers


# -- documents -----------------------------------------------------------------------------------------------


async def test_put_get_versions(store: Store) -> None:
    assert await store.get("ns", "k") is None
    assert await store.put("ns", "k", {"a": 1}) == 1
    assert await store.put("ns", "k", {"a": 2}) == 2
    record = await store.get("ns", "k")
    assert (record.key, record.value, record.version, record.expires_at) == ("k", {"a": 2}, 2, None)
    assert await store.get("other", "k") is None


async def test_values_round_trip_as_json(store: Store) -> None:
    value = {
        "s": 'žluťoučký 🐴 "quoted"',
        "i": 2**62,
        "f": 1.5,
        "neg": -0.25,
        "t": True,
        "n": None,
        "list": [1, "two", [3.0]],
        "nested": {"z": 1, "a": {"b": []}},
    }
    await store.put("ns", "doc", value)
    assert (await store.get("ns", "doc")).value == value
    for scalar in ("just a string", 42, [1, 2], None):
        await store.put("ns", "scalar", scalar)
        assert (await store.get("ns", "scalar")).value == scalar


async def test_expected_version_zero_means_must_not_exist(store: Store) -> None:
    assert await store.put("ns", "k", "first", expected_version=0) == 1
    with pytest.raises(VersionConflict) as err:
        await store.put("ns", "k", "second", expected_version=0)
    assert (err.value.expected, err.value.actual) == (0, 1)
    assert (await store.get("ns", "k")).value == "first"


async def test_expected_version_must_match(store: Store) -> None:
    with pytest.raises(VersionConflict) as err:
        await store.put("ns", "absent", "x", expected_version=1)
    assert err.value.actual is None
    await store.put("ns", "k", "v1")
    assert await store.put("ns", "k", "v2", expected_version=1) == 2
    with pytest.raises(VersionConflict) as err:
        await store.put("ns", "k", "stale", expected_version=1)
    assert (err.value.expected, err.value.actual) == (1, 2)
    assert (await store.get("ns", "k")).value == "v2"


async def test_delete(store: Store) -> None:
    assert await store.delete("ns", "absent") is False
    await store.put("ns", "k", 1)
    assert await store.delete("ns", "k") is True
    assert await store.get("ns", "k") is None
    await store.put("ns", "k", 1)
    await store.put("ns", "k", 2)
    version = (await store.get("ns", "k")).version
    with pytest.raises(VersionConflict):
        await store.delete("ns", "k", expected_version=version - 1)
    assert await store.get("ns", "k") is not None
    assert await store.delete("ns", "k", expected_version=version) is True
    with pytest.raises(VersionConflict):
        await store.delete("ns", "k", expected_version=1)


async def test_expiry(store: Store) -> None:
    now = time.time()
    assert await store.put("ns", "gone", "x", expires_at=now - 1) == 1
    await store.put("ns", "live", "y", expires_at=now + 3600)
    await store.put("ns", "forever", "z")
    assert await store.get("ns", "gone") is None
    assert (await store.get("ns", "live")).expires_at == pytest.approx(now + 3600)
    assert [r.key for r in await store.list("ns")] == ["forever", "live"] == await store.keys("ns")
    # An expired document does not exist for expected_version=0, and its version keeps counting.
    with pytest.raises(VersionConflict):
        await store.put("ns", "gone", "again", expected_version=1)
    assert await store.put("ns", "gone", "again", expected_version=0, expires_at=now - 1) == 2
    assert await store.purge_expired() == 1
    assert await store.purge_expired(now=now + 7200) == 1
    assert [r.key for r in await store.list("ns")] == ["forever"]


async def test_list_by_prefix_in_code_point_order(store: Store) -> None:
    keys = ["b", "a", "ab", "abc", "a/1", "a/2", "aé", "A", "a\U0001f600", "a~"]
    for key in keys:
        await store.put("ns", key, key)
    await store.put("other", "a", "elsewhere")
    assert [r.key for r in await store.list("ns")] == sorted(keys)
    assert [r.key for r in await store.list("ns", "a")] == sorted(k for k in keys if k.startswith("a"))
    assert [r.key for r in await store.list("ns", "a/")] == ["a/1", "a/2"]
    assert [r.value for r in await store.list("ns", "ab")] == ["ab", "abc"]
    assert await store.list("ns", "zzz") == []
    assert await store.list("empty") == []
    for prefix in ("", "a", "a/", "ab", "zzz"):  # the keys alone, as list answers them
        assert await store.keys("ns", prefix) == [r.key for r in await store.list("ns", prefix)]


async def test_concurrent_conditional_writers_one_wins(store: Store, other_instance: Store) -> None:
    await store.put("ns", "doc", 0)
    stores = [store, other_instance] * 5

    async def attempt(s: Store, i: int) -> bool:
        try:
            await s.put("ns", "doc", i, expected_version=1)
            return True
        except VersionConflict:
            return False

    results = await asyncio.gather(*(attempt(s, i) for i, s in enumerate(stores)))
    assert results.count(True) == 1
    assert (await store.get("ns", "doc")).version == 2

    async def create(s: Store, i: int) -> bool:
        try:
            await s.put("ns", "new", i, expected_version=0)
            return True
        except VersionConflict:
            return False

    assert (await asyncio.gather(*(create(s, i) for i, s in enumerate(stores)))).count(True) == 1


# -- counters ------------------------------------------------------------------------------------------------


async def test_counters(store: Store, other_instance: Store) -> None:
    assert await store.counter("policy") == 0
    assert await store.incr("policy") == 1
    assert await other_instance.incr("policy") == 2
    await asyncio.gather(*(s.incr("sessions") for s in [store, other_instance] * 25))
    assert await store.counter("sessions") == 50
    assert await other_instance.counters(["policy", "sessions", "never"]) == {"policy": 2, "sessions": 50, "never": 0}


# -- audit chain ---------------------------------------------------------------------------------------------


def verify_chain(rows: list[dict]) -> None:
    prev = GENESIS
    for expected_seq, row in enumerate(rows, start=1):
        assert row["seq"] == expected_seq
        assert row["prev_hash"] == prev
        assert row["hash"] == workers.chain(prev, row["seq"], row["ts"], row["kind"], row["body"])
        prev = row["hash"]


async def test_audit_append_and_query(store: Store) -> None:
    assert await store.audit_tail() is None
    assert await store.append_audit([], workers.chain) == []
    t0 = 1_700_000_000.0
    assert await store.append_audit([(t0, "login", "a"), (t0 + 1, "deny", "b")], workers.chain) == [1, 2]
    assert await store.append_audit([(t0 + 2, "login", "c")], workers.chain) == [3]
    rows = await store.audit_rows()
    verify_chain(rows)
    assert [r["body"] for r in rows] == ["a", "b", "c"]
    tail = await store.audit_tail()
    assert tail == rows[-1]
    assert [r["seq"] for r in await store.audit_rows(kind="login")] == [1, 3]
    assert [r["seq"] for r in await store.audit_rows(since=t0 + 1)] == [2, 3]
    assert [r["seq"] for r in await store.audit_rows(until=t0 + 2)] == [1, 2]
    assert [r["seq"] for r in await store.audit_rows(after_seq=1, limit=1)] == [2]
    assert await store.audit_delete_before(3) == 2
    assert [r["seq"] for r in await store.audit_rows()] == [3]
    # Pruning keeps the tail, so the chain continues from it.
    assert await store.append_audit([(t0 + 3, "login", "d")], workers.chain) == [4]
    assert (await store.audit_tail())["prev_hash"] == tail["hash"]


async def test_audit_concurrent_appenders_in_one_process(store: Store, other_instance: Store) -> None:
    async def appender(s: Store, n: int) -> None:
        for b in range(10):
            await s.append_audit([(time.time(), "k", f"{n}:{b}:{i}") for i in range(3)], workers.chain)

    await asyncio.gather(*(appender(s, n) for n, s in enumerate([store, other_instance] * 4)))
    rows = await store.audit_rows(limit=10_000)
    assert len(rows) == 8 * 10 * 3
    verify_chain(rows)


async def test_audit_appenders_in_several_processes_never_fork(store: Store, storage: StorageConfig) -> None:
    processes, batches, batch_size = 4, 15, 4
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        results = pool.starmap(
            workers.append_audit, [(storage.model_dump_json(), w, batches, batch_size) for w in range(processes)]
        )
    all_seqs = sorted(s for seqs in results for s in seqs)
    total = processes * batches * batch_size
    assert all_seqs == list(range(1, total + 1))  # no seq handed out twice
    rows = await store.audit_rows(limit=10_000)
    assert len(rows) == total
    verify_chain(rows)  # one unbroken chain: no fork, no gap


# -- leader lease --------------------------------------------------------------------------------------------


async def test_leader_lock_is_exclusive(store: Store, other_instance: Store) -> None:
    async with store.leader_lock("directory-sync") as lease:
        assert lease and await lease.check()
        async with other_instance.leader_lock("directory-sync") as rival:
            assert not rival
        async with other_instance.leader_lock("another-job") as unrelated:
            assert unrelated
    assert not lease  # released on exit
    async with other_instance.leader_lock("directory-sync") as lease:
        assert lease


async def test_leader_lock_taken_over_when_holder_dies(store: Store, storage: StorageConfig, tmp_path: Path) -> None:
    ready = tmp_path / "holder.state"
    ctx = multiprocessing.get_context("spawn")
    holder = ctx.Process(target=workers.hold_lease, args=(storage.model_dump_json(), "directory-sync", str(ready)))
    holder.start()
    try:
        for _ in range(300):
            if ready.exists() or not holder.is_alive():
                break
            await asyncio.sleep(0.05)
        assert ready.read_text() == "held"
        async with store.leader_lock("directory-sync") as lease:
            assert not lease
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
        taken = False
        for _ in range(100):  # the server notices the dead session as soon as its socket closes
            async with store.leader_lock("directory-sync") as lease:
                if lease:
                    taken = True
                    break
            await asyncio.sleep(0.05)
        assert taken
    finally:
        if holder.is_alive():
            holder.kill()
            holder.join(10)


# -- notifications -------------------------------------------------------------------------------------------


async def test_publish_reaches_subscribers(store: Store, other_instance: Store) -> None:
    # Without shared notifications a message only reaches subscribers of the same store object.
    listener = other_instance if store.shared_notifications else store
    async with listener.subscribe("policy") as sub:
        sent = time.perf_counter()
        await store.publish("policy", "bumped 7")
        message = await sub.get(timeout=5)
        latency = time.perf_counter() - sent
    assert message == "bumped 7"
    print(f"{type(store).__name__}: publish -> subscriber in {latency * 1000:.1f} ms")


async def test_counter_bump_reaches_other_instance_watchers(store: Store, other_instance: Store) -> None:
    watcher = watch_counters(other_instance, ["policy", "sessions"], poll_interval=0.2)
    try:
        assert await asyncio.wait_for(anext(watcher), 5) == {"policy": 0, "sessions": 0}
        sent = time.perf_counter()
        await store.incr("policy")
        assert await asyncio.wait_for(anext(watcher), 5) == {"policy": 1, "sessions": 0}
        latency = time.perf_counter() - sent
    finally:
        await watcher.aclose()
    how = "notification" if store.shared_notifications else "poll every 0.2 s"
    print(f"{type(store).__name__}: counter bump seen by another instance in {latency * 1000:.1f} ms ({how})")


# -- rate limiting -------------------------------------------------------------------------------------------


async def test_hit_limits_per_key_and_window(store: Store) -> None:
    assert [await store.hit("login:alice", 3, 60) for _ in range(5)] == [True, True, True, False, False]
    assert await store.hit("login:bob", 3, 60) is True
    assert await store.hit("login:alice", 3, 3600) is True  # another window length counts apart


async def test_hit_is_shared_between_instances_when_scaled_out(store: Store, other_instance: Store) -> None:
    results = await asyncio.gather(*(s.hit("api:token", 10, 60) for s in [store, other_instance] * 10))
    # SQLite included: its limiter lives in the database file, so workers sharing it share the limit.
    assert results.count(True) == 10
