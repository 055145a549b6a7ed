"""The mapped snapshot (issue 24): one file per stored version, shared by the workers of a server.

What a worker reads through it must be what ``load_snapshot`` gives (users by name and id, closures,
flags, attributes, meta), built once per version however many workers ask, and never more permissive
than the Store: a name two entries share signs in nobody, damage builds the file again or fails closed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from store.backends import BACKENDS, backend_config, opened

from rolegate.directory import persist, shared
from rolegate.directory.builder import RawGroup, RawUser, apply_changes, build_snapshot
from rolegate.directory.layered import LayeredSnapshot
from rolegate.directory.mapped import MappedSnapshot, write_snapshot_file
from rolegate.directory.model import DirectorySnapshot, DirectoryUser, SnapshotView
from rolegate.directory.persist import NAMESPACE, SNAPSHOT_KEY, load_snapshot, save_snapshot
from rolegate.directory.shared import map_snapshot

from .conftest import retiring_fetch
from tests.support.disks import small_disk_at

PEOPLE = "ou=people,dc=x"


def raw_user(i: int, **extra: Any) -> RawUser:
    fields: dict[str, Any] = dict(
        id=f"id-{i}",
        dn=f"uid=u{i},{PEOPLE}",
        username=f"u{i}",
        email=f"u{i}@x" if i % 7 else None,
        name=f"User {i}" if i % 11 else None,
        disabled=i % 13 == 0,
        attributes={"building": (f"b{i % 3}", "hq")} if i % 5 == 0 else {},
    )
    fields.update(extra)
    return RawUser(**fields)


def raw_group(name: str, members: list[int], nested: tuple[str, ...] = ()) -> RawGroup:
    dns = tuple(f"uid=u{i},{PEOPLE}" for i in members) + tuple(f"cn={g},ou=groups,dc=x" for g in nested)
    return RawGroup(id=f"gid-{name}", dn=f"cn={name},ou=groups,dc=x", name=name, member_dns=dns)


def directory(users: int = 60) -> tuple[list[RawUser], list[RawGroup]]:
    groups = [
        raw_group("top", [0], nested=("mid",)),
        raw_group("mid", [1, 2], nested=("leaf",)),
        raw_group("leaf", list(range(0, users, 2))),
        raw_group("odd", list(range(1, users, 2))),
        raw_group("Gebäude Süd", [3, 4]),
    ]
    return [raw_user(i) for i in range(users)], groups


def seen(user: DirectoryUser | None) -> tuple[Any, ...] | None:
    if user is None:
        return None
    return (user.id, user.dn, user.username, user.email, user.name, user.disabled, user.groups, dict(user.attributes))


def same(expected: DirectorySnapshot, got: SnapshotView) -> None:
    """Everything a worker reads is equal: by name, by id, a pass over all (in any order), counts and meta."""
    assert len(got) == len(expected) and len(got.users) == len(expected.users)
    assert sorted(map(seen, got), key=str) == sorted(map(seen, expected), key=str)
    for user in expected:
        assert seen(got.user(user.username)) == seen(expected.user(user.username))
        assert seen(got.user(user.username.upper())) == seen(expected.user(user.username.upper()))
        assert seen(got.users[user.id]) == seen(user)
    assert sorted(got.users) == sorted(expected.users)
    assert got.group_count == expected.group_count
    names = {name for user in expected for name in user.groups} | {"no such group"}
    for name in names:  # the members index: nesting resolved, as each user's groups say
        assert sorted(u.id for u in got.members(name)) == sorted(u.id for u in expected.members(name))
    assert sorted(g[0] for g in got.groups()) == sorted(expected.groups)
    assert (got.taken_at, got.full_at, got.since, got.issues) == (
        expected.taken_at,
        expected.full_at,
        expected.since,
        expected.issues,
    )


def test_a_written_file_reads_back_as_the_snapshot(tmp_path: Path) -> None:
    users, groups = directory()
    snapshot = build_snapshot(users, groups, taken_at=5.0, since="20240101000000Z")
    got = MappedSnapshot(write_snapshot_file(snapshot, tmp_path / "s.map"))
    same(snapshot, got)
    assert got.user("nobody") is None and "missing" not in got.users
    with pytest.raises(KeyError):
        got.users["missing"]
    assert got.user("u3") is not None and got.user("u3").groups == frozenset({"odd", "Gebäude Süd"})
    assert got.path.stat().st_mode & 0o777 == 0o600  # every user's name and email: the server's only


def test_an_empty_directory(tmp_path: Path) -> None:
    got = MappedSnapshot(write_snapshot_file(build_snapshot([], []), tmp_path / "e.map"))
    assert len(got) == 0 and got.user("u1") is None and list(got) == [] and got.group_count == 0


def test_names_are_matched_as_the_snapshot_matches_them(tmp_path: Path) -> None:
    """Case-insensitive (casefold: ß is ss), any text the directory gave kept as it was, a shared name refused."""
    users = [
        raw_user(1, username="Straße"),
        raw_user(2, username="Anna"),
        raw_user(3, username="ANNA"),  # shares a name with u2 once case is ignored: signs in nobody
        raw_user(4, username="weird\udcff", dn="uid=weird\udcff,ou=people,dc=x"),  # not UTF-8 in the directory
        raw_user(5, username="zoë"),
    ]
    snapshot = build_snapshot(users, [raw_group("g", [1, 4])])
    got = MappedSnapshot(write_snapshot_file(snapshot, tmp_path / "n.map"))
    assert seen(got.user("STRASSE")) == seen(snapshot.user("STRASSE")) != None  # noqa: E711
    assert got.user("anna") is None and got.user("Anna") is None and snapshot.user("anna") is None
    assert seen(got.user("WEIRD\udcff")) == seen(snapshot.user("weird\udcff")) != None  # noqa: E711
    assert got.user("weird\ufffd") is None
    assert seen(got.user("Zoë")) == seen(snapshot.user("zoë"))
    assert seen(got.users["id-2"]) == seen(snapshot.users["id-2"])  # still there by id


def test_many_users_collide_in_the_index_and_are_all_found(tmp_path: Path) -> None:
    users = [raw_user(i) for i in range(5000)]
    snapshot = build_snapshot(users, [raw_group("all", list(range(5000)))])
    got = MappedSnapshot(write_snapshot_file(snapshot, tmp_path / "m.map"))
    for i in range(0, 5000, 7):
        assert got.user(f"U{i}").id == f"id-{i}"
    assert got.user("u5000") is None


def test_a_damaged_file_is_refused(tmp_path: Path) -> None:
    users, groups = directory()
    path = write_snapshot_file(build_snapshot(users, groups), tmp_path / "d.map")
    data = path.read_bytes()
    for broken in (b"", data[:40], b"X" + data[1:], data[: len(data) // 2]):
        path.write_bytes(broken)
        with pytest.raises(ValueError):
            MappedSnapshot(path)


# -- from the Store, shared by workers ------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """SQLite, PostgreSQL and PostgreSQL behind the Redis cache."""
    async with backend_config(request.param, tmp_path) as config, opened(config) as store:
        yield store


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(persist, "CHUNK_USERS", 7)
    monkeypatch.setattr(persist, "DELTA_MIN", 10)


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".map"))


async def test_the_stored_snapshot_is_mapped_as_load_snapshot_reads_it(any_store: Any, tmp_path: Path) -> None:
    store, where = any_store, tmp_path / "shared"
    assert await map_snapshot(store, where) is None  # nothing stored yet
    users, groups = directory()
    first = build_snapshot(users, groups, taken_at=1.0, since="20240101000000Z")
    await save_snapshot(store, first)
    got = await map_snapshot(store, where)
    assert got is not None
    same(first, got)
    # A delta (changed, added and removed users) is read over the base, as load_snapshot reads it.
    changed = [raw_user(3, email="new@x", disabled=True), raw_user(99)]
    kept = [u for u in users[:50] if u.id not in ("id-3", "id-7")]
    second = build_snapshot([*kept, *changed], groups, taken_at=2.0, since="20240102000000Z")
    await save_snapshot(store, second, previous=first)
    loaded = await load_snapshot(store)
    assert loaded is not None
    again = await map_snapshot(store, where)
    assert again is not None and again.path != got.path
    same(loaded, again)
    assert again.user("u3").disabled and again.user("u7") is None and again.user("u99") is not None
    # the base is the first version's (the chunks did not change); the older top is removed, got reads on
    assert isinstance(got, LayeredSnapshot) and isinstance(again, LayeredSnapshot)
    assert again.lower.path == got.lower.path
    assert files(where) == sorted([again.path.name, again.lower.path.name])
    assert got.user("u7") is not None


async def test_workers_build_one_file_per_version(
    any_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, where = any_store, tmp_path / "shared"
    users, groups = directory()
    await save_snapshot(store, build_snapshot(users, groups, taken_at=1.0))
    builds = []
    build = shared._build_top

    async def counted(*args: Any) -> None:
        builds.append(args[2])
        await asyncio.sleep(0.05)  # the others arrive while this one builds
        await build(*args)

    monkeypatch.setattr(shared, "_build_top", counted)
    mapped_by_workers = await asyncio.gather(*(map_snapshot(store, where) for _ in range(6)))
    assert len(builds) == 1
    assert {m.path for m in mapped_by_workers if m is not None} == {builds[0]}
    mtime = builds[0].stat().st_mtime_ns
    assert (await map_snapshot(store, where)).path == builds[0] and builds[0].stat().st_mtime_ns == mtime
    assert len(builds) == 1


async def test_a_damaged_or_half_written_file_is_built_again(any_store: Any, tmp_path: Path) -> None:
    store, where = any_store, tmp_path / "shared"
    users, groups = directory()
    snapshot = build_snapshot(users, groups, taken_at=1.0)
    await save_snapshot(store, snapshot)
    path = (await map_snapshot(store, where)).path
    path.write_bytes(path.read_bytes()[:100])
    (where / f".{path.name}.4242.tmp").write_bytes(b"left by a builder killed with -9")
    got = await map_snapshot(store, where)
    assert got is not None
    same(snapshot, got)
    assert [p.name for p in where.iterdir() if p.name.endswith(".tmp")] == []


async def test_a_damaged_store_document_fails_closed(any_store: Any, tmp_path: Path) -> None:
    store, where = any_store, tmp_path / "shared"
    users, groups = directory()
    await save_snapshot(store, build_snapshot(users, groups, taken_at=1.0))
    pointer = (await store.get(NAMESPACE, SNAPSHOT_KEY)).value
    chunk = pointer["chunks"][1]
    saved = (await store.get(NAMESPACE, chunk)).value
    for damage in ("garbage", {**saved, "users": [r[:3] for r in saved["users"]]}, {**saved, "users": []}):
        await store.put(NAMESPACE, chunk, damage)
        assert await map_snapshot(store, where) is None
        assert files(where) == []
    await store.delete(NAMESPACE, chunk)
    assert await map_snapshot(store, where) is None


async def test_a_builder_rides_out_a_save_that_retires_what_it_reads(
    any_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = any_store
    users, groups = directory()
    snap = build_snapshot(users, groups, taken_at=1.0)
    await save_snapshot(store, snap)
    newer = apply_changes(snap, [raw_user(2, email="n@x")], [], taken_at=2.0)
    # the master saves twice while this worker reads: the documents it was reading are deleted
    slow_fetch, flipped = retiring_fetch(
        store, shared.fetch_document, snap, [(newer, snap), (build_snapshot(users, groups, taken_at=3.0), None)]
    )
    monkeypatch.setattr(shared, "fetch_document", slow_fetch)
    got = await map_snapshot(store, tmp_path / "shared")
    assert flipped and got is not None and got.taken_at == 3.0


async def test_a_full_disk_keeps_the_snapshot_in_the_workers_memory(tmp_path: Path) -> None:
    """The runtime directory's disk is full: the worker reads the snapshot into its own memory (correct, bigger),
    leaves nothing half written behind, and maps the file once the disk has room."""
    async with backend_config("sqlite", tmp_path) as config, opened(config) as store:
        users = [raw_user(i) for i in range(3000)]
        snapshot = build_snapshot(users, [raw_group("all", list(range(0, 3000, 3)))], taken_at=4.0)
        await save_snapshot(store, snapshot)
        with small_disk_at(tmp_path / "full", "64k") as where:
            got = await map_snapshot(store, where)
            assert isinstance(got, DirectorySnapshot)  # in memory: the file did not fit
            assert seen(got.user("U7")) == seen(snapshot.user("u7")) and len(got) == 3000
            assert list(where.iterdir()) == [where / "build.lock"]
        room = await map_snapshot(store, tmp_path / "room")
        assert isinstance(room, LayeredSnapshot)
        same(snapshot, room)


def test_another_process_finds_the_users_a_file_holds(tmp_path: Path) -> None:
    """The index must not depend on the writing process (``hash()`` of a str is salted per process)."""
    users, groups = directory()
    path = write_snapshot_file(build_snapshot(users, groups), tmp_path / "p.map")
    code = (
        "import sys; from pathlib import Path; from rolegate.directory.mapped import MappedSnapshot;"
        "m = MappedSnapshot(Path(sys.argv[1])); print(m.user('U17').id, m.users['id-4'].username)"
    )
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True)
        assert out.stdout.split() == ["id-17", "u4"], out.stderr


def test_who_may_grant_is_read_without_a_pass_over_the_directory(tmp_path: Path) -> None:
    """A 403 page's approvers (admin/people.py DirectoryPeople): a few users and one group's members, never
    every user of a large directory turned into objects in the worker (issue 24: 1.5 GB at 1,000,000 users)."""
    from rolegate.admin.people import DirectoryPeople

    users = [raw_user(i) for i in range(5000)]
    snapshot = build_snapshot(users, [raw_group("approvers", [10, 20, 30]), raw_group("all", list(range(5000)))])
    mapped = MappedSnapshot(write_snapshot_file(snapshot, tmp_path / "a.map"))

    class NoPass:
        """The mapped snapshot, refusing a pass over every user."""

        def __getattr__(self, name: str) -> Any:
            return getattr(mapped, name)

        def __iter__(self) -> Any:
            raise AssertionError("a pass over every user")

    people = DirectoryPeople(NoPass())
    assert [p.username for p in people.members("approvers")] == ["u10", "u20", "u30"]
    assert people.user("U20").groups == frozenset({"approvers", "all"}) and people.user("nobody") is None
    assert people.identity_for("u30").groups == frozenset({"approvers", "all"})
    assert len(DirectoryPeople(mapped).people) == 5000  # the admin's list, when asked for


RSS_CHILD = """
import random, sys
from pathlib import Path
from rolegate.directory.mapped import MappedSnapshot, SnapshotWriter

def file_rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssFile")) // 1024

where = Path(sys.argv[1])
writer = SnapshotWriter(where)
for i in range(200_000):
    uid = f"user{i:06d}"
    closure = writer.closure({f"team{i % 997}", f"site{i % 89}", "staff"})
    writer.add_user(f"id-{i:08d}", f"uid={uid},ou=people,dc=x", uid, f"{uid}@x", f"User {i}", False, closure, None)
snapshot = MappedSnapshot(writer.finish(where / "big.map", {}))
before = file_rss()
rng = random.Random(3)
for _ in range(300):
    assert snapshot.user(f"USER{rng.randrange(200_000):06d}") is not None
print(file_rss() - before)
"""


def test_a_worker_s_memory_stays_flat_as_it_reads_users(tmp_path: Path) -> None:
    """Look-ups map no pages beyond the one in progress: the file's pages stay in the kernel's cache, shared, not
    in the worker's RSS (which large page-cache folios would otherwise grow by megabytes per user)."""
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    grown = int(out.stdout.split()[-1])
    assert grown < 8, f"the worker's file-backed RSS grew by {grown} MiB over 300 look-ups"


KILLED_BUILDER = """
import asyncio, sys, time
from pathlib import Path
from rolegate.directory import shared

async def main():
    where = Path(sys.argv[1])
    await shared._lock(where)  # the build lock, held as a builder holds it
    (where / ".snapshot-0000000001-x.map.4242.tmp").write_bytes(b"half a file" * 1000)
    print("building", flush=True)
    time.sleep(60)

asyncio.run(main())
"""


async def test_a_builder_killed_with_kill_9_holds_up_nobody(tmp_path: Path) -> None:
    """A worker killed (-9) while it builds: its lock goes with it, the next worker builds and maps the file, and
    the half-written file is swept."""
    where = tmp_path / "shared"
    where.mkdir()
    child = subprocess.Popen([sys.executable, "-c", KILLED_BUILDER, str(where)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "building"
        os.kill(child.pid, 9)
        child.wait(timeout=10)
        async with backend_config("sqlite", tmp_path) as config, opened(config) as store:
            users, groups = directory()
            snapshot = build_snapshot(users, groups, taken_at=1.0)
            await save_snapshot(store, snapshot)
            got = await asyncio.wait_for(map_snapshot(store, where), 20)
            assert isinstance(got, LayeredSnapshot)
            same(snapshot, got)
            assert [p.name for p in where.iterdir() if p.name.endswith(".tmp")] == []
    finally:
        child.kill()


# -- a new version over the same base (the stack) -------------------------------------------------------------


async def test_a_new_version_over_the_same_base_reads_no_base_chunk(tmp_path: Path) -> None:
    """An incremental sync's version costs the workers its delta, not the whole directory again: no base chunk is
    read from the Store (before the stack, each version rebuilt the whole file: 16 s at 1,000,000 users, with
    requests waiting)."""
    async with backend_config("sqlite", tmp_path) as config, opened(config) as store:
        where = tmp_path / "shared"
        users, groups = directory()
        first = build_snapshot(users, groups, taken_at=1.0)
        await save_snapshot(store, first)
        assert await map_snapshot(store, where) is not None
        second = build_snapshot([*users[1:], raw_user(0, email="moved@x")], groups, taken_at=2.0)
        await save_snapshot(store, second, previous=first)
        chunks = set((await store.get(NAMESPACE, SNAPSHOT_KEY)).value["chunks"])
        assert chunks
        read: list[str] = []
        get = store.get

        async def counted(namespace: str, key: str) -> Any:
            read.append(key)
            return await get(namespace, key)

        store.get = counted
        try:
            got = await map_snapshot(store, where)
        finally:
            store.get = get
        assert got is not None and got.user("u0").email == "moved@x" and got.taken_at == 2.0
        assert chunks.isdisjoint(read), f"read {len(chunks & set(read))} base chunks for a one-user change"


NAMES = ["anna", "ANNA", "Anna", "bert", "Straße", "STRASSE", "carl", "Zoë", "zoë"]


def rounds_of_changes(seed: int, count: int) -> list[DirectorySnapshot]:
    """Snapshots a directory goes through: users renamed onto and off each other's names (case and ß too),
    disabled, removed, added back, moved between groups; groups renamed, added and dropped."""
    import random

    rng = random.Random(seed)
    people = {i: raw_user(i) for i in range(40)}
    teams = {"leaf": list(range(0, 40, 2)), "odd": list(range(1, 40, 2)), "Gebäude Süd": [3, 4]}
    made = []
    for step in range(count):
        for _ in range(rng.randint(1, 5)):
            i = rng.randrange(48)
            roll = rng.random()
            if roll < 0.35:
                people[i] = raw_user(i, username=rng.choice(NAMES + [f"u{i}"]))
            elif roll < 0.5:
                people.pop(i, None)
            elif roll < 0.65:
                people[i] = raw_user(i, disabled=rng.random() < 0.5, email=f"{step}@x")
            elif roll < 0.8:
                team = rng.choice(sorted(teams))
                teams[team] = sorted(set(teams[team]) ^ {i})
            elif roll < 0.9 and len(teams) > 2:
                old = rng.choice(sorted(teams))
                teams[f"{old}-{step}" if rng.random() < 0.7 else old.upper()] = teams.pop(old)
            else:
                teams[f"new-{step}"] = rng.sample(range(48), 5)
        kept = sorted(people)
        groups = [raw_group("top", [0], nested=("mid",)), raw_group("mid", [1, 2], nested=("leaf",))]
        groups += [raw_group(name, [m for m in members if m in people]) for name, members in sorted(teams.items())]
        made.append(build_snapshot([people[i] for i in kept], groups, taken_at=float(step + 1)))
    return made


@pytest.mark.parametrize("seed", range(4))
async def test_the_stack_reads_as_the_stored_snapshot_through_many_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Version after version (deltas growing, now and then folded into a new base, or a new base written when
    much changed), what a worker reads through base + top is exactly ``load_snapshot``'s: names one entry holds
    resolve, names two hold (counting the base's hidden entries out) sign in nobody; the base file is built
    again only when the Store's base chunks change."""
    bases: list[Path] = []
    build_base = shared._build_base

    async def counted(store: Any, pointer: Any, path: Path) -> None:
        bases.append(path)
        await build_base(store, pointer, path)

    monkeypatch.setattr(shared, "_build_base", counted)
    async with backend_config("sqlite", tmp_path) as config, opened(config) as store:
        where, previous, mapped = tmp_path / "shared", None, None
        chunk_sets = []
        for snapshot in rounds_of_changes(seed, 30):
            await save_snapshot(store, snapshot, previous=previous)
            if persist.needs_compaction(store, snapshot) and snapshot.taken_at % 3 == 0:
                await persist.compact_snapshot(store, snapshot)
            previous = snapshot
            loaded = await load_snapshot(store)
            mapped = await map_snapshot(store, where, mapped)
            assert loaded is not None and mapped is not None
            same(loaded, mapped)
            for name in NAMES:
                assert seen(mapped.user(name)) == seen(loaded.user(name)), name
            chunk_sets.append(tuple((await store.get(NAMESPACE, SNAPSHOT_KEY)).value["chunks"]))
        assert len(bases) == len(set(chunk_sets)) < len(chunk_sets)  # one build per base, not per version
        assert sorted(files(where)) == sorted([mapped.path.name, mapped.lower.path.name])


@pytest.mark.parametrize("backend", BACKENDS)
async def test_after_a_compaction_the_folded_version_stands_for_the_new_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """A compaction writes a new base holding what the version before it held, without telling the workers. The
    next version's mapping stands the previous version's stack (base + top files they have) for the new base and
    reads none of its chunks, so no request waits for the whole directory; the base file is built in the
    background, and the version after maps it."""
    async with backend_config(backend, tmp_path) as config, opened(config) as store:
        where = tmp_path / "shared"
        users, groups = directory()
        first = build_snapshot(users, groups, taken_at=1.0)
        await save_snapshot(store, first)
        mapped = await map_snapshot(store, where)
        changed = [raw_user(i, email=f"{i}@new") for i in range(15)]  # past DELTA_MIN: due for compaction
        second = build_snapshot([*changed, *users[15:]], groups, taken_at=2.0)
        await save_snapshot(store, second, previous=first)
        mapped = await map_snapshot(store, where, mapped)
        assert persist.needs_compaction(store, second) and await persist.compact_snapshot(store, second)
        third = apply_changes(second, [raw_user(5, username="anna"), raw_user(6, username="ANNA")], [], taken_at=3.0)
        await save_snapshot(store, third, previous=second)
        pointer = (await store.get(NAMESPACE, SNAPSHOT_KEY)).value
        chunks = set(pointer["chunks"])
        read: list[str] = []
        get = store.get

        async def counted(namespace: str, key: str) -> Any:
            read.append(key)
            return await get(namespace, key)

        later = []
        monkeypatch.setattr(shared, "_build_later", lambda *args: later.append(args[2]))
        store.get = counted
        try:
            stood = await map_snapshot(store, where, mapped)
        finally:
            store.get = get
        assert stood is not None and chunks.isdisjoint(read)
        assert isinstance(stood, LayeredSnapshot) and isinstance(stood.lower, LayeredSnapshot)
        same(await load_snapshot(store), stood)
        assert stood.user("anna") is None and stood.user("u7").email == "7@new"
        # another worker (nothing mapped before) finds the same stack from the files alone
        other = await map_snapshot(store, where)
        assert isinstance(other, LayeredSnapshot) and isinstance(other.lower, LayeredSnapshot)
        same(await load_snapshot(store), other)
        # the base file, built in the background (as _build_later does), is what the next version maps
        assert set(later) == {where / shared.base_name(pointer)}  # asked by each worker; one builds it
        monkeypatch.undo()
        builds: set[asyncio.Task[None]] = set()
        shared._build_later(store, pointer, later[0], builds)
        shared._build_later(store, pointer, later[0], builds)  # asked again meanwhile: one task
        assert len(builds) == 1
        await asyncio.wait_for(asyncio.gather(*builds), 30)
        assert later[0].exists()
        fourth = apply_changes(third, [raw_user(6, username="bert")], [], taken_at=4.0)
        await save_snapshot(store, fourth, previous=third)
        last = await map_snapshot(store, where, stood)
        assert isinstance(last, LayeredSnapshot) and isinstance(last.lower, MappedSnapshot)
        assert last.lower.path == later[0] and last.user("anna").id == "id-5"
        same(await load_snapshot(store), last)
        assert files(where) == sorted([last.path.name, later[0].name])


BACKGROUND_BUILDER = """
import asyncio, sys, time
from pathlib import Path
from rolegate.directory import shared

async def main():
    where = Path(sys.argv[1])
    await shared._lock(where, shared.BASE_LOCK_NAME)  # held as a background base builder holds it
    (where / ".snapshot-base-0123456789abcdef.map.4242.tmp").write_bytes(b"half a base" * 1000)
    print("building", flush=True)
    time.sleep(60)

asyncio.run(main())
"""


def test_a_background_base_build_keeps_its_file_until_it_is_killed(tmp_path: Path) -> None:
    """A version built meanwhile sweeps half-written files, but not the base a live background builder is
    writing; once that builder is killed with -9 its lock goes and the next sweep removes what it left."""
    where = tmp_path / "shared"
    where.mkdir()
    child = subprocess.Popen([sys.executable, "-c", BACKGROUND_BUILDER, str(where)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "building"
        half = where / ".snapshot-base-0123456789abcdef.map.4242.tmp"
        killed_top = where / ".snapshot-0000000007-0123456789abcdef.map.4243.tmp"
        killed_top.write_bytes(b"left by a top builder killed with -9")
        shared._sweep(where, keep=set())
        assert half.exists() and not killed_top.exists()
        os.kill(child.pid, 9)
        child.wait(timeout=10)
        shared._sweep(where, keep=set())
        assert not half.exists()
    finally:
        child.kill()


async def test_a_base_is_built_off_the_worker_s_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The records and indexes of a base file are made in a thread, not on the loop that answers requests (built
    inline, a base of 1,000,000 users held a worker's loop up to 11 s at a time, in the background build too)."""
    import threading

    from rolegate.directory.mapped import SnapshotWriter

    loop_thread, seen = threading.current_thread(), []
    for method in ("add_user", "finish"):
        original = getattr(SnapshotWriter, method)

        def recorded(self: Any, *args: Any, _original: Any = original, _name: str = method, **kwargs: Any) -> Any:
            seen.append((_name, threading.current_thread() is loop_thread))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(SnapshotWriter, method, recorded)
    async with backend_config("sqlite", tmp_path) as config, opened(config) as store:
        users, groups = directory()
        await save_snapshot(store, build_snapshot(users, groups, taken_at=1.0))
        pointer = (await store.get(NAMESPACE, SNAPSHOT_KEY)).value
        await shared._build_base(store, pointer, tmp_path / shared.base_name(pointer))
    assert {name for name, _ in seen} == {"add_user", "finish"}
    assert not any(on_loop for _, on_loop in seen), "a base file's records or indexes were made on the loop"
