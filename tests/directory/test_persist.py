"""The stored snapshot: pointer + chunks + delta, written in part, read whole or not at all."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from store.backends import BACKENDS, backend_config, opened

from rolegate.directory import persist
from rolegate.directory.builder import RawGroup, RawUser, apply_changes, build_snapshot
from rolegate.directory.diff import diff
from rolegate.directory.model import DirectorySnapshot
from rolegate.directory.persist import COUNTER, NAMESPACE, SNAPSHOT_KEY, adopt, load_snapshot, save_snapshot

from .conftest import retiring_fetch

PEOPLE = "ou=people,dc=x"


def raw_user(i: int, *, email: str | None = None, disabled: bool = False) -> RawUser:
    return RawUser(
        id=f"id-{i}",
        dn=f"uid=u{i},{PEOPLE}",
        username=f"u{i}",
        email=email or f"u{i}@x",
        name=f"User {i}",
        disabled=disabled,
        attributes={"building": (f"b{i % 3}",)} if i % 5 == 0 else {},
    )


def raw_group(name: str, members: list[int], nested: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> RawGroup:
    dns = tuple(f"uid=u{i},{PEOPLE}" for i in members) + tuple(f"cn={g},ou=groups,dc=x" for g in nested) + extra
    return RawGroup(id=f"gid-{name}", dn=f"cn={name},ou=groups,dc=x", name=name, member_dns=dns)


def directory(users: int = 60) -> tuple[list[RawUser], list[RawGroup]]:
    groups = [
        raw_group("top", [0], nested=("mid",)),
        raw_group("mid", [1, 2], nested=("leaf", "top")),
        raw_group("leaf", list(range(0, users, 2)), extra=("uid=ghost,ou=people,dc=x",)),
        raw_group("odd", list(range(1, users, 2))),
    ]
    return [raw_user(i) for i in range(users)], groups


def same(a: DirectorySnapshot, b: DirectorySnapshot) -> None:
    """Everything a caller can see, users and groups, is equal."""
    assert {u.id: (u.dn, u.username, u.email, u.name, u.disabled, u.groups, dict(u.attributes)) for u in a} == {
        u.id: (u.dn, u.username, u.email, u.name, u.disabled, u.groups, dict(u.attributes)) for u in b
    }
    assert {g.id: (g.dn, g.name, g.member_users, g.member_groups, g.unresolved) for g in a.groups.values()} == {
        g.id: (g.dn, g.name, g.member_users, g.member_groups, g.unresolved) for g in b.groups.values()
    }
    assert (a.taken_at, a.full_at, a.since, a.issues) == (b.taken_at, b.full_at, b.since, b.issues)


async def keys(store) -> set[str]:
    return {r.key for r in await store.list(NAMESPACE)}


@pytest.fixture(params=BACKENDS)
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """The same tests on SQLite, PostgreSQL and PostgreSQL behind the Redis cache."""
    async with backend_config(request.param, tmp_path) as config, opened(config) as store:
        yield store


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch) -> None:
    monkeypatch.setattr(persist, "CHUNK_USERS", 7)
    monkeypatch.setattr(persist, "DELTA_MIN", 10)


async def test_round_trip_and_deltas(any_store) -> None:
    store = any_store
    users, groups = directory()
    first = build_snapshot(users, groups, taken_at=1.0, since="20240101000000Z")
    assert await save_snapshot(store, first) == 1
    loaded = await load_snapshot(store)
    same(first, loaded)
    assert not loaded.incremental_ready and loaded.user("u3").groups == {"odd"}
    assert len(await keys(store)) == 1 + 1 + 9  # pointer, groups, 60 users in chunks of 7

    # users changed, a group gains and loses members, a group renamed: one delta + one groups document
    second = apply_changes(
        first,
        [raw_user(3, email="new@x"), raw_user(60), raw_user(8, disabled=True)],
        [raw_group("odd", list(range(3, 60, 2)) + [60]), raw_group("mid", [1, 2], nested=("leaf",))],
        taken_at=2.0,
        since="20240102000000Z",
    )
    before = await keys(store)
    assert await save_snapshot(store, second, previous=first) == 2
    written = await keys(store) - before
    assert len(written) == 2 and any(k.endswith(".delta") for k in written)
    same(second, await load_snapshot(store))

    # a change of users only: the groups document stays; the previous delta is retired, then deleted
    third = apply_changes(second, [raw_user(10, email="t@x")], [], taken_at=3.0)
    await save_snapshot(store, third, previous=second)
    same(third, await load_snapshot(store))
    fourth = apply_changes(third, [raw_user(11, email="f@x")], [], taken_at=4.0)
    await save_snapshot(store, fourth, previous=third)
    loaded = await load_snapshot(store)
    same(fourth, loaded)
    pointer = (await store.get(NAMESPACE, SNAPSHOT_KEY)).value
    assert await keys(store) <= {SNAPSHOT_KEY, *persist._referenced(pointer), *pointer["retired"]}

    # a save from the loaded snapshot (a restarted master) goes on with deltas too
    users2, groups2 = directory()
    users2[20] = raw_user(20, email="late@x")
    users2.pop(30)  # and a user removed
    full = build_snapshot(users2 + [raw_user(60), raw_user(61)], groups2, taken_at=5.0)
    await save_snapshot(store, full, previous=loaded)
    same(full, await load_snapshot(store))
    assert await store.counter(COUNTER) == 5


async def test_a_growing_delta_is_folded_into_a_new_base(store) -> None:
    users, groups = directory()
    snap = build_snapshot(users, groups, taken_at=1.0)
    await save_snapshot(store, snap)
    compacted = 0
    for round_ in range(8):
        changed = [raw_user(i, email=f"r{round_}@x") for i in range(round_ * 3, round_ * 3 + 3)]
        new = apply_changes(snap, changed, [], taken_at=2.0 + round_)
        version = await save_snapshot(store, new, previous=snap)
        snap = new
        if persist.needs_compaction(store, snap):
            assert await persist.compact_snapshot(store, snap)
            compacted += 1
            pointer = (await store.get(NAMESPACE, SNAPSHOT_KEY)).value
            assert pointer["delta"] is None
        assert await store.counter(COUNTER) == version  # folding changes nothing workers see
        same(snap, await load_snapshot(store))
    assert compacted >= 1
    # a save that changes a large part at once writes a fresh base directly
    many = apply_changes(snap, [raw_user(i, email="all@x") for i in range(60)], [], taken_at=20.0)
    await save_snapshot(store, many, previous=snap)
    assert (await store.get(NAMESPACE, SNAPSHOT_KEY)).value["delta"] is None
    same(many, await load_snapshot(store))
    # folding a snapshot the store has moved past does nothing
    assert not await persist.compact_snapshot(store, snap)
    same(many, await load_snapshot(store))


async def test_adopt_only_when_nothing_stored_would_change(store) -> None:
    users, groups = directory()
    first = build_snapshot(users, groups, taken_at=1.0)
    await save_snapshot(store, first)
    rebuilt = build_snapshot(users, groups, taken_at=2.0)  # equal content, all new objects
    assert adopt(store, first, rebuilt)
    changed = apply_changes(rebuilt, [raw_user(4, email="x@y")], [], taken_at=3.0)
    assert not adopt(store, rebuilt, changed)
    await save_snapshot(store, changed, previous=rebuilt)
    same(changed, await load_snapshot(store))
    assert not adopt(store, None, changed)


async def test_another_writer_in_between_forces_a_whole_write(any_store) -> None:
    store = any_store
    users, groups = directory()
    first = build_snapshot(users, groups, taken_at=1.0)
    await save_snapshot(store, first)
    other = build_snapshot(users[:50], groups, taken_at=2.0)  # e.g. `rolegate sync` run by hand
    await save_snapshot(store, other)
    mine = apply_changes(first, [raw_user(1, email="m@x")], [], taken_at=3.0)
    await save_snapshot(store, mine, previous=first)  # its basis is gone: all of it is written
    same(mine, await load_snapshot(store))


@pytest.mark.parametrize("failing", ["the store", "the encoding"])
async def test_a_save_failing_part_way_leaves_the_last_snapshot_and_no_chunk(any_store, monkeypatch, failing) -> None:
    """A whole write fails at its fourth chunk, in the Store's write (a full disk, a lost connection) or while the next
    chunk is made with the last one's write in flight: the error reaches the caller, every chunk of that save is
    gone, the snapshot stored before is read back whole."""
    store = any_store
    users, groups = directory()
    first = build_snapshot(users, groups, taken_at=1.0)
    await save_snapshot(store, first)
    before = sorted(r.key for r in await store.list(NAMESPACE))
    second = build_snapshot(users[:55], groups, taken_at=2.0)
    real_put, real_add = store.put, persist._Rows.add
    puts: list[str] = []

    async def put(namespace: str, key: str, value: Any, **kwargs: Any) -> int:
        if namespace == NAMESPACE and key.rsplit(".", 1)[-1].startswith("u"):
            puts.append(key)
            if failing == "the store" and len(puts) == 4:
                raise OSError(28, "No space left on device")
        return await real_put(namespace, key, value, **kwargs)

    made = 0

    def add(rows: Any, user: Any, tokens: list[int]) -> None:
        nonlocal made
        made += 1
        if failing == "the encoding" and made == 3 * persist.CHUNK_USERS + 1:
            raise RuntimeError("made to fail")
        real_add(rows, user, tokens)

    monkeypatch.setattr(store, "put", put)
    monkeypatch.setattr(persist._Rows, "add", add)
    with pytest.raises(OSError if failing == "the store" else RuntimeError):
        await save_snapshot(store, second)
    assert len(puts) == (4 if failing == "the store" else 3)
    assert sorted(r.key for r in await store.list(NAMESPACE)) == before
    same(first, await load_snapshot(store))


async def test_a_save_that_fills_the_disk_leaves_the_last_snapshot_and_a_later_one_sweeps(
    tmp_path, monkeypatch
) -> None:
    """A real full disk (a 2 MiB tmpfs under the SQLite Store): a whole save too big for it fails with the Store's
    error, and the snapshot saved before reads back whole, from the same Store and from a new one opened on it; once
    the disk has room again, the next save that lands deletes what the failed one left (a day old)."""
    from rolegate.config.sections.storage import StorageConfig
    from rolegate.store import open_store
    from rolegate.store.base import StoreUnavailable
    from tests.support.disks import small_disk_at

    with small_disk_at(tmp_path / "disk", "2m") as disk:
        url = f"sqlite:///{disk / 'rolegate.db'}"
        store = await open_store(StorageConfig(url=url))
        try:
            users, groups = directory()
            first = build_snapshot(users, groups, taken_at=1.0)
            await save_snapshot(store, first)
            big = [
                RawUser(
                    id=f"id-{i}", dn=f"uid=u{i},{PEOPLE}", username=f"u{i}", email=None, name="x" * 2000, disabled=False
                )
                for i in range(3000)
            ]
            with pytest.raises((StoreUnavailable, OSError)):
                await save_snapshot(store, build_snapshot(big, groups, taken_at=2.0))
            same(first, await load_snapshot(store))
            strays = await unnamed(store)
            assert strays  # the chunks it wrote before the disk filled: deleting them needed room too
        finally:
            await store.close()
        reopened = await open_store(StorageConfig(url=url))
        try:
            same(first, await load_snapshot(reopened))
            # The operator grows the disk; a day later the next save that lands sweeps what the failed one left.
            subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
            monkeypatch.setattr(persist, "STRAY_AGE", 0)
            third = build_snapshot(users[:50], groups, taken_at=3.0)
            await save_snapshot(reopened, third)
            assert await unnamed(reopened) == set() and strays.isdisjoint(await keys(reopened))
            same(third, await load_snapshot(reopened))
        finally:
            await reopened.close()


async def unnamed(store) -> set[str]:
    """The snapshot documents the stored pointer names neither as its own nor as retired."""
    pointer = (await store.get(NAMESPACE, SNAPSHOT_KEY)).value
    named = set(persist._referenced(pointer)) | set(pointer.get("retired") or ())
    return {k for k in await store.keys(NAMESPACE, SNAPSHOT_KEY + ".")} - named


SAVE_AND_STALL = """
import asyncio, sys
sys.path[:0] = sys.argv[3:]
from rolegate.config.sections.storage import StorageConfig
from rolegate.directory import persist
from rolegate.directory.builder import build_snapshot
from rolegate.store import open_store
from directory.test_persist import directory

async def main():
    persist.CHUNK_USERS = 7
    store = await open_store(StorageConfig(url=sys.argv[1]))
    put, chunks = store.put, []
    async def stalling(namespace, key, value, **kwargs):
        version = await put(namespace, key, value, **kwargs)
        chunks.append(key)
        if len(chunks) == 4:
            print("stalled", flush=True)
            await asyncio.sleep(3600)  # killed here, its pointer never flipped
        return version
    store.put = stalling
    users, groups = directory(int(sys.argv[2]))
    await persist.save_snapshot(store, build_snapshot(users, groups, taken_at=9.0))

asyncio.run(main())
"""


async def test_a_save_killed_part_way_leaves_strays_that_a_later_save_sweeps_once_a_day_old(
    tmp_path, monkeypatch
) -> None:
    """kill -9 in the middle of a whole save (its chunks written, its pointer not flipped): the snapshot saved before
    reads back whole; the next save leaves the dead one's documents while they may be a save still under way
    (younger than ``STRAY_AGE``) and deletes them once older; the documents the pointer names are never touched."""
    from rolegate.config.sections.storage import StorageConfig
    from rolegate.store import open_store

    url = f"sqlite:///{tmp_path / 'rolegate.db'}"
    store = await open_store(StorageConfig(url=url))
    try:
        users, groups = directory()
        first = build_snapshot(users, groups, taken_at=1.0)
        await save_snapshot(store, first)
        tests = Path(__file__).resolve().parent.parent
        child = subprocess.Popen(
            [sys.executable, "-c", SAVE_AND_STALL, url, "80", str(tests), *sys.path],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "stalled"
        finally:
            child.kill()
            child.wait(timeout=30)
        strays = await unnamed(store)
        assert len(strays) == 4  # the groups document and three chunks
        same(first, await load_snapshot(store))

        second = build_snapshot(users[:59], groups, taken_at=2.0)
        await save_snapshot(store, second, previous=first)
        assert await unnamed(store) == strays  # young: maybe a save still writing, on another instance

        monkeypatch.setattr(persist, "STRAY_AGE", 0)  # a day later
        third = build_snapshot(users[:58], groups, taken_at=3.0)
        await save_snapshot(store, third, previous=second)
        assert await unnamed(store) == set()
        same(third, await load_snapshot(store))
    finally:
        await store.close()


async def test_a_sweep_never_takes_a_document_a_pointer_names_however_old(store, monkeypatch) -> None:
    """A base written long ago is still the live base under every delta: a sweep keeps it (and what the pointer
    retired, which the next save deletes), whatever its age."""
    nonce = persist._nonce
    monkeypatch.setattr(persist, "_nonce", lambda: f"{1_000_000:x}-0badc0de")  # the base's save, long ago
    users, groups = directory()
    first = build_snapshot(users, groups, taken_at=1.0)
    await save_snapshot(store, first)
    base = set(persist._referenced((await store.get(NAMESPACE, SNAPSHOT_KEY)).value))
    assert {persist._written_at(k) for k in base} == {1_000_000}
    monkeypatch.setattr(persist, "_nonce", nonce)
    monkeypatch.setattr(persist, "STRAY_AGE", 0)
    second = apply_changes(first, [raw_user(3, email="new@x")], [], taken_at=2.0)
    await save_snapshot(store, second, previous=first)
    pointer = (await store.get(NAMESPACE, SNAPSHOT_KEY)).value
    assert pointer["delta"] and set(pointer["chunks"]) <= base <= await keys(store)
    same(second, await load_snapshot(store))


async def test_a_missing_or_damaged_document_fails_closed(store) -> None:
    users, groups = directory()
    snap = build_snapshot(users, groups, taken_at=1.0)
    await save_snapshot(store, snap)
    pointer = (await store.get(NAMESPACE, SNAPSHOT_KEY)).value
    chunk = pointer["chunks"][3]
    saved = (await store.get(NAMESPACE, chunk)).value
    await store.delete(NAMESPACE, chunk)
    assert await load_snapshot(store) is None
    await store.put(NAMESPACE, chunk, {**saved, "users": saved["users"][:-1]})  # a user short
    assert await load_snapshot(store) is None
    await store.put(NAMESPACE, chunk, {**saved, "users": [r[:8] + [[999]] for r in saved["users"]]})  # no such group
    assert await load_snapshot(store) is None
    await store.put(NAMESPACE, chunk, "garbage")
    assert await load_snapshot(store) is None
    await store.put(NAMESPACE, chunk, saved)
    same(snap, await load_snapshot(store))


async def test_a_reader_rides_out_a_save_that_retires_what_it_was_reading(store, monkeypatch) -> None:
    users, groups = directory()
    snap = build_snapshot(users, groups, taken_at=1.0)
    await save_snapshot(store, snap)
    newer = apply_changes(snap, [raw_user(2, email="n@x")], [], taken_at=2.0)
    # the master saves twice while this worker reads: the documents it was reading are deleted
    slow_fetch, flipped = retiring_fetch(
        store, persist.fetch_document, snap, [(newer, snap), (build_snapshot(users, groups, taken_at=3.0), None)]
    )
    monkeypatch.setattr(persist, "fetch_document", slow_fetch)
    loaded = await load_snapshot(store)
    assert flipped and loaded is not None and loaded.taken_at == 3.0


async def test_the_single_document_format_is_still_read(store) -> None:
    users, groups = directory()
    snap = build_snapshot(users, groups, taken_at=1.0)
    await store.put(NAMESPACE, SNAPSHOT_KEY, persist.encode_snapshot(snap))
    loaded = await load_snapshot(store)
    assert not diff(snap, loaded).users_changed and loaded.user("u4").groups == snap.user("u4").groups
    await save_snapshot(store, snap, previous=loaded)  # upgraded to the new layout on the next save
    same(snap, await load_snapshot(store))


async def test_direct_groups_are_the_group_side_memberships_over_random_rounds(store) -> None:
    """A save, whole or a delta, writes each user's direct groups as the builder carries them: after any round of
    members joining and leaving, groups nested, renamed and departed, users departed, they are exactly the groups
    listing the user, and the Store reads back what was built."""
    import random

    from rolegate.directory.departures import Departures

    rng = random.Random(7)
    users = {i: raw_user(i) for i in range(30)}
    names = [f"g{j}" for j in range(8)]
    members = {name: sorted(rng.sample(sorted(users), 6)) for name in names}
    nested: dict[str, tuple[str, ...]] = {name: () for name in names}

    def groups_now(only: list[str]) -> list[RawGroup]:
        return [raw_group(name, members[name], nested=nested[name]) for name in only]

    snap = build_snapshot(list(users.values()), groups_now(names))
    saved: DirectorySnapshot | None = None
    for round_ in range(40):
        changed = [n for n in names if rng.random() < 0.3]
        for name in changed:
            roll = rng.random()
            if roll < 0.5:
                members[name] = sorted(set(members[name]) | {rng.choice(sorted(users))})
            elif roll < 0.8 and members[name]:
                members[name] = sorted(set(members[name]) - {rng.choice(members[name])})
            else:
                nested[name] = (rng.choice(names),)
        gone_users = {rng.choice(sorted(users))} if rng.random() < 0.2 else set()
        for i in gone_users:
            del users[i]
            for name in names:
                members[name] = [m for m in members[name] if m != i]
        gone_groups = {rng.choice(names)} if rng.random() < 0.1 and len(names) > 3 else set()
        for name in gone_groups:
            names.remove(name)
            changed = [n for n in changed if n != name]
        for name in names:
            nested[name] = tuple(n for n in nested[name] if n not in gone_groups)
        departed = {f"id-{i}" for i in gone_users} | {f"gid-{n}" for n in gone_groups}
        snap = apply_changes(
            snap, [], groups_now(changed), departures=Departures("accesslog", changed=departed), taken_at=float(round_)
        )
        for uid, user in snap.users.items():
            listing = {gid for gid, group in snap.groups.items() if uid in group.member_users}
            assert set(user.direct_groups) == listing, (round_, uid)
        if round_ % 8 == 7:
            await save_snapshot(store, snap)  # a full save: no ``previous``
            same(snap, await load_snapshot(store))
        elif saved is not None:
            await save_snapshot(store, snap, previous=saved)  # a delta over the last one saved
            same(snap, await load_snapshot(store))
        saved = snap
