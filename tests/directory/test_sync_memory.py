"""What a full sync holds per user (issue 24): one copy of each DN, small direct-group records, no diff per user.

Sizes are counted by tracemalloc (bytes allocated, the same on every run of the same code), never timed.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import random
import sys
import tracemalloc

import pytest

from rolegate.directory.builder import RawGroup, RawUser, build_snapshot
from rolegate.directory.connection import connection
from rolegate.directory.diff import diff
from rolegate.directory.model import EMPTY_SNAPSHOT, DirectoryUser, NameSet, make_user
from rolegate.directory.presets import resolve_schema
from rolegate.directory.reader import read_directory, to_group
from rolegate.directory.builder import Issues
from rolegate.directory.values import fold_name, normalize_dn

USERS = 3000
# Bytes a full build allocates per user at its peak (the snapshot: user, closure, direct groups, indexes, group member
# sets; and what the build holds meanwhile). Measured 633 here, 2,261 before issue 24's trimming; a closure held as
# a frozenset (+~550), a set per user's direct groups (+~150), a union made per user as the closure cache's key
# (+~215), a second copy of each DN and name as index keys (+~135) or groups' members held as frozensets (+~100)
# goes past it.
BYTES_PER_USER = 720
# ... and a snapshot read back from the Store, strings included: measured 1,651 here, 2,463 with frozensets.
LOADED_BYTES_PER_USER = 1750


def directory(users: int = USERS, seed: int = 5) -> tuple[list[RawUser], list[RawGroup]]:
    """Users in three of 300 leaf groups, nested under 30 middle and 3 top groups (the bench's shape, smaller)."""
    rng = random.Random(seed)
    tops = [f"cn=top{i},ou=groups,dc=x" for i in range(3)]
    mids = [f"cn=mid{i},ou=groups,dc=x" for i in range(30)]
    leaves = [f"cn=leaf{i},ou=groups,dc=x" for i in range(300)]
    members: dict[str, list[str]] = {dn: [] for dn in tops + mids + leaves}
    for i, mid in enumerate(mids):
        members[tops[i % 3]].append(mid)
    for i, leaf in enumerate(leaves):
        members[mids[i % 30]].append(leaf)
    raw_users = []
    for i in range(users):
        dn = f"uid=user{i:06d},ou=people,dc=x"
        raw_users.append(
            RawUser(
                id=f"{i:08d}-0000-4000-8000-000000000000",
                dn=dn,
                username=f"user{i:06d}",
                email=f"user{i:06d}@example.com",
                name=f"User {i}",
                disabled=False,
            )
        )
        for leaf in rng.sample(leaves, 3):
            members[leaf].append(normalize_dn(dn))
    raw_groups = [
        RawGroup(id=f"g-{dn}", dn=dn, name=dn.split(",")[0][3:], member_dns=tuple(values))
        for dn, values in members.items()
    ]
    return raw_users, raw_groups


def test_a_full_build_costs_a_bounded_number_of_bytes_per_user() -> None:
    raw_users, raw_groups = directory()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        snapshot = build_snapshot(raw_users, raw_groups)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(snapshot.users) == USERS and snapshot.user("user000007") is not None
    per_user = (peak - before) / USERS
    assert per_user <= BYTES_PER_USER, f"{per_user:.0f} bytes a user"


def test_a_raw_user_takes_the_size_of_the_directory_user_made_from_it() -> None:
    """A full build frees each RawUser as it makes its DirectoryUser: of one allocator size, the freed block is the
    next user's; of two sizes, a million freed blocks stay empty to the end of the sync (98 MB at a million)."""
    raw = RawUser(id="i", dn="uid=a,dc=x", username="a", email=None, name=None, disabled=False)
    user = build_snapshot([raw], []).user("a")
    assert user is not None
    assert sys.getsizeof(raw) == sys.getsizeof(user)


def test_make_user_is_the_frozen_constructor_at_half_the_cost() -> None:
    values = ("i", "uid=a,dc=x", "a", "a@x", "A", True, NameSet(["g"]), {"b": ("1",)}, ("gid",), frozenset({"m"}))
    made, built = make_user(*values), DirectoryUser(*values)
    assert type(made) is DirectoryUser
    assert [getattr(made, name) for name in DirectoryUser.__slots__] == list(values)
    assert made.same_as(built) and made.public() == built.public()
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.username = "b"  # type: ignore[misc]


def test_direct_groups_are_sorted_tuples_and_key_the_closure() -> None:
    raw_users, raw_groups = directory(users=200)
    snapshot = build_snapshot(raw_users, raw_groups)
    user = snapshot.user("user000003")
    assert isinstance(user.direct_groups, tuple) and list(user.direct_groups) == sorted(set(user.direct_groups))
    assert len(user.direct_groups) == 3
    # leaf, middle and top names of each of the three leaves (some may share a middle or top group)
    assert {n for n in user.groups if n.startswith("leaf")} == {
        g[len("g-cn=") :].split(",")[0] for g in user.direct_groups
    }


def test_index_keys_are_the_values_themselves_when_already_normal() -> None:
    dn, name = "uid=ann,ou=people,dc=x", "ann"
    assert normalize_dn(dn) is dn and fold_name(name) is name
    assert normalize_dn("UID=Ann, OU=People,dc=x") == "uid=ann,ou=people,dc=x"
    assert fold_name("Ann") == "ann"
    raw_users, raw_groups = directory(users=50)
    snapshot = build_snapshot(raw_users, raw_groups)
    by_dn, by_name = snapshot.indexes()
    for key in by_dn:
        assert key is snapshot.users[by_dn[key]].dn
    for key, uid in by_name.items():
        assert uid is not None and key is snapshot.users[uid].username


def test_members_naming_the_same_dn_share_one_string() -> None:
    schema_dns: dict[str, str] = {}
    fetch = lambda request: {}  # noqa: E731 - no ranged values here
    schema = _schema()
    values = [b"uid=Ann,ou=People,dc=x", b"uid=bob,ou=people,dc=x"]
    first = to_group(schema, "cn=a,dc=x", {"cn": [b"a"], "member": values}, Issues(), fetch, schema_dns)
    second = to_group(schema, "cn=b,dc=x", {"cn": [b"b"], "member": values[::-1]}, Issues(), fetch, schema_dns)
    assert first is not None and second is not None
    assert first.member_dns == ("uid=ann,ou=people,dc=x", "uid=bob,ou=people,dc=x")
    assert first.member_dns[0] is second.member_dns[1] and first.member_dns[1] is second.member_dns[0]


def test_a_member_dn_taken_as_written_is_the_one_normalizing_would_give() -> None:
    """A member value that is a DN the read holds is taken without normalizing it: over 2,000 values written every
    way a server may (case, blanks around separators, uniqueMember's #'...'B, a DN ending as another's suffix),
    the members are exactly the normalized, interned ones, and the held copies themselves."""
    rng = random.Random(3)
    schema = _schema()
    fetch = lambda request: {}  # noqa: E731 - no ranged values here
    held = ["uid=ann,ou=people,dc=x", "uid=bob,ou=people,dc=x", "uid=x#'0'b,dc=x", "cn=g,ou=groups,dc=x"]
    variants = []
    for dn in held:
        variants += [dn, dn.upper(), dn.replace(",", " , "), f" {dn}", dn + "#'0101'B", dn + "#'1'B#'0'B", dn.title()]
    variants += ["uid=carol,ou=people,dc=x", "uid=x,dc=x#'0'B"]
    for _ in range(20):
        dns = {dn: dn for dn in (normalize_dn(d) for d in held)}
        values = [rng.choice(variants) for _ in range(100)]
        group = to_group(
            schema, "cn=a,dc=x", {"cn": [b"a"], "member": [v.encode() for v in values]}, Issues(), fetch, dns
        )
        assert group is not None
        expected_dns = {dn: dn for dn in (normalize_dn(d) for d in held)}
        expected = tuple(expected_dns.setdefault(n, n) for n in (normalize_dn(v) for v in values))
        assert group.member_dns == expected
        for member in group.member_dns:
            assert member is dns[member]  # one copy, the one the read holds


@pytest.mark.lab
def test_a_read_from_slapd_keeps_one_copy_of_each_member_dn(lab_slapd, config_for) -> None:
    config = config_for(lab_slapd)
    with connection(config) as conn:
        read = read_directory(conn, resolve_schema(config), config.page_size)
    members = [dn for group in read.groups for dn in group.member_dns]
    assert members and len(read.users) >= 15
    seen: dict[str, str] = {}
    for dn in members:
        assert seen.setdefault(dn, dn) is dn, f"two copies of {dn}"
    keys = {normalize_dn(u.dn) for u in read.users}
    shared = [dn for dn in members if dn in keys]
    assert shared and all(read.dns[dn] is dn for dn in shared)


def test_a_first_sync_diff_makes_no_change_record_per_user_until_asked() -> None:
    raw_users, raw_groups = directory(users=500)
    new = build_snapshot(raw_users, raw_groups)
    asked: list[str] = []

    def describe(before, after):
        asked.append(after.username)
        return ["+ user"]

    changes = diff(EMPTY_SNAPSHOT, new, describe_roles=describe)
    assert len(changes.users_added) == 500 and changes.counts()["users_added"] == 500
    assert asked == []  # nothing made yet
    first = changes.users_added[:3]
    assert [c.username for c in first] == ["user000000", "user000001", "user000002"] and len(asked) == 3
    assert first[0].roles == ["+ user"] and first[0].groups_added == sorted(new.user("user000000").groups)
    body = changes.as_dict(limit=5)
    assert len(body["users_added"]) == 6 and body["users_added"][-1] == {"truncated": 495}
    assert [c.id for c in changes.users_added][-1] == new.user("user000499").id


def test_a_first_sync_diff_lists_no_group_members_until_asked(monkeypatch) -> None:
    """Twenty thousand groups added list three million members by name: only the groups read (the audit's first
    thousand, the CLI's few) are turned into names."""
    diff_module = importlib.import_module("rolegate.directory.diff")

    raw_users, raw_groups = directory(users=500)
    new = build_snapshot(raw_users, raw_groups)
    made: list[str] = []
    real = diff_module.GroupChange

    def counting(name, gid, **kwargs):
        made.append(gid)
        return real(name, gid, **kwargs)

    monkeypatch.setattr(diff_module, "GroupChange", counting)
    changes = diff(EMPTY_SNAPSHOT, new)
    assert len(changes.groups_added) == len(new.groups) == 333 and made == []
    names = [group.name for group in new.groups.values()]
    first = changes.groups_added[:2]
    assert [c.name for c in first] == sorted(names)[:2] and len(made) == 2
    leaf = new.groups[first[0].id]
    assert first[0].members_added == sorted(
        [new.users[uid].username for uid in leaf.member_users]
        + [f"group:{new.groups[g].name}" for g in leaf.member_groups]
    )
    gone = diff(new, EMPTY_SNAPSHOT)
    assert len(gone.groups_removed) == 333 and len(made) == 2
    assert gone.as_dict(limit=1)["groups_removed"][-1] == {"truncated": 332} and len(made) == 3


def _schema():
    from rolegate.config.sections.directory import DirectoryConfig

    return resolve_schema(
        DirectoryConfig.model_validate(
            {"url": "ldap://127.0.0.1:1", "users": {"base": "ou=people,dc=x"}, "groups": {"base": "ou=groups,dc=x"}}
        )
    )


def test_group_names_behave_as_the_frozenset_of_their_names() -> None:
    rng = random.Random(3)
    pool = [f"g{i}" for i in range(12)] + ["Staff", "staff", "ß", ""]
    for _ in range(400):
        a_names, b_names = rng.sample(pool, rng.randrange(8)), rng.sample(pool, rng.randrange(8))
        a, b = NameSet(a_names + a_names[:2]), frozenset(b_names)
        fa = frozenset(a_names)
        assert a == fa and fa == a and not (a != fa) and hash(a) == hash(fa)
        assert (a == b) == (fa == b) and (b == a) == (fa == b) and (a != b) == (fa != b)
        assert (a == NameSet(b)) == (fa == b) and hash(NameSet(b)) == hash(b)
        assert (a <= b) == (fa <= b) and (a >= b) == (fa >= b) and (a < b) == (fa < b) and (a > b) == (fa > b)
        assert a - b == fa - b and b - a == b - fa and a & b == fa & b and a | b == fa | b and a ^ b == fa ^ b
        assert a.isdisjoint(b) == fa.isdisjoint(b) and len(a) == len(fa) and sorted(a) == sorted(fa)
        nb = NameSet(b)
        assert b & a == fa & b and a & nb == fa & b and isinstance(b & a, NameSet) and isinstance(a & nb, NameSet)
        assert a.isdisjoint(nb) == fa.isdisjoint(b) == a.isdisjoint(list(b)) == nb.isdisjoint(a)
        assert b - a == b - fa and a - nb == fa - b and a | nb == fa | b
        for name in pool + ["g99"]:
            assert (name in a) == (name in fa)
        assert {a: 1}.get(fa) == 1 and {fa: 1}.get(a) == 1
    names = NameSet(["b", "a", "b"])
    assert list(names) == ["a", "b"] and None not in names and 3 not in names and ("a",) not in names
    assert names == {"a", "b"} and names != ["a", "b"] and names != ("a", "b") and not NameSet()
    assert isinstance(names - {"a"}, NameSet) and names - {"a"} == {"b"}


async def test_a_loaded_snapshot_holds_closures_and_members_as_name_sets(store) -> None:
    """What a master holds once it has read the stored snapshot (at start, and a `rolegate sync` beside its build)."""
    from rolegate.directory.persist import load_snapshot, save_snapshot

    raw_users, raw_groups = directory()
    await save_snapshot(store, build_snapshot(raw_users, raw_groups))
    del raw_users, raw_groups
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        loaded = await load_snapshot(store)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert loaded is not None and len(loaded.users) == USERS
    user = loaded.user("user000007")
    assert isinstance(user.groups, NameSet) and len(user.groups) >= 3
    assert all(isinstance(g.member_users, NameSet) for g in loaded.groups.values())
    per_user = (after - before) / USERS
    assert per_user <= LOADED_BYTES_PER_USER, f"{per_user:.0f} bytes a user"
