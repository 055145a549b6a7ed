"""Departures applied by the builder, and the deletion guard's names: pure, no directory involved."""

from __future__ import annotations

from rolegate.directory.builder import RawGroup, RawUser, apply_changes, build_snapshot
from rolegate.directory.departures import Departures
from rolegate.directory.diff import diff
from rolegate.directory.safety import check_deletions
from rolegate.directory.values import normalize_dn


def user(name: str, **kw) -> RawUser:
    return RawUser(
        id=f"id-{name}", dn=f"uid={name},ou=people,dc=x", username=name, email=None, name=None, disabled=False, **kw
    )


def group(name: str, *members: str) -> RawGroup:
    dns = tuple(normalize_dn(m if "=" in m else f"uid={m},ou=people,dc=x") for m in members)
    return RawGroup(id=f"gid-{name}", dn=f"cn={name},ou=groups,dc=x", name=name, member_dns=dns)


def company():
    users = [
        user("alice"),
        user("bob"),
        user("trent"),
        user("olga", member_of=(normalize_dn("cn=office,ou=groups,dc=x"),)),
    ]
    groups = [
        group("technicians", "bob", "trent"),
        group("staff", "alice", "cn=technicians,ou=groups,dc=x"),
        group("office"),
    ]
    return build_snapshot(users, groups)


def test_changed_elsewhere_and_not_read_again_is_gone() -> None:
    old = company()
    # bob changed somewhere (deleted: a tombstone, an accesslog delete); trent changed and was read again.
    new = apply_changes(old, [user("trent")], [], departures=Departures("tombstones", changed={"id-bob", "id-trent"}))
    assert new.user("bob") is None and new.user("trent").groups == {"technicians", "staff"}
    technicians = new.groups["gid-technicians"]
    assert technicians.member_users == {"id-trent"}  # the group was not read again: stripped
    changes = diff(old, new)
    assert [(c.username, c.id, c.groups_removed) for c in changes.users_removed] == [
        ("bob", "id-bob", ["staff", "technicians"])
    ]
    assert [g.members_removed for g in changes.groups_changed] == [["bob"]]


def test_a_listing_drops_what_it_does_not_list_and_keeps_what_was_read() -> None:
    old = company()
    listed = {"id-alice", "id-bob", "gid-technicians", "gid-staff", "gid-office"}  # trent and olga not listed
    # olga is not listed but was read in this run (created or moved in after the listing): she stays.
    new = apply_changes(old, [user("olga")], [], departures=Departures("id listing", listed=listed))
    assert new.user("trent") is None and new.user("olga") is not None and new.user("alice") is not None


def test_a_departed_group_takes_its_nesting_with_it() -> None:
    old = company()
    new = apply_changes(old, [], [], departures=Departures("accesslog", changed={"gid-technicians", "gid-office"}))
    assert new.user("bob").groups == set() and new.user("trent").groups == set()
    assert new.user("alice").groups == {"staff"}
    assert new.user("olga").groups == set()  # memberOf named office: gone with it
    assert new.groups["gid-staff"].member_groups == frozenset()
    assert sorted(g.name for g in diff(old, new).groups_removed) == ["office", "technicians"]
    # the same as a full build of what is left
    full = build_snapshot(
        [user("alice"), user("bob"), user("trent"), user("olga")],
        [group("staff", "alice", "cn=technicians,ou=groups,dc=x")],
    )
    assert {u.username: u.groups for u in new} == {u.username: u.groups for u in full}


def test_no_departures_no_change() -> None:
    old = company()
    new = apply_changes(old, [], [], departures=Departures("tombstones"))
    assert diff(old, new).empty


def test_the_guard_names_whom_it_holds_back() -> None:
    old = build_snapshot([user(f"u{i:02d}") for i in range(40)] + [user("zed")], [])
    new = build_snapshot(
        [user(f"u{i:02d}") for i in range(20, 40)]
        + [RawUser("id-zed", "uid=zed,ou=people,dc=x", "zed", None, None, True)],
        [],
    )
    check = check_deletions(diff(old, new), 41, 0.1)
    assert check.refused and check.removed[:2] == ("u00", "u01") and check.disabled == ("zed",)
    assert check.explain() == (
        "the sync would remove or disable 21 of 41 users (removed: u00, u01, u02, u03, "
        "u04, u05, u06, u07, u08, u09 and 10 more; disabled: zed); max_deletions allows 4"
    )


def test_incremental_indexes_and_diffs_match_a_rebuild_over_random_rounds() -> None:
    """The builder carries its indexes (DN, username) and the ids it touched from one run to the next; after any
    round of renames, shared names, name swaps and departures they equal a rebuild's, and so does the diff."""
    import random

    from rolegate.directory.model import DirectorySnapshot, username_index

    rng = random.Random(24)
    names = [f"u{i}" for i in range(40)]
    current = {f"id-{n}": (n, f"uid={n},ou=people,dc=x") for n in names}  # id -> (username, dn)

    def raw(uid: str) -> RawUser:
        username, dn = current[uid]
        return RawUser(id=uid, dn=dn, username=username, email=None, name=None, disabled=False)

    groups = [group(f"g{j}", *[current[f"id-{n}"][1] for n in rng.sample(names, 5)]) for j in range(6)]
    snap = build_snapshot([raw(uid) for uid in current], groups)
    for _ in range(60):
        changed: set[str] = set()
        for uid in rng.sample(sorted(current), rng.randrange(1, 5)):
            username, dn = current[uid]
            roll = rng.random()
            if roll < 0.4:  # take another user's name (a shared name), in another case now and then
                other = current[rng.choice(sorted(current))][0]
                username = other.upper() if rng.random() < 0.3 else other
            elif roll < 0.7:
                username = f"n{rng.randrange(1000)}"
            else:
                dn = f"uid={username}-{rng.randrange(1000)},ou=people,dc=x"  # moved
            current[uid] = (username, dn)
            changed.add(uid)
        gone: set[str] = set()
        if rng.random() < 0.3:
            gone = {rng.choice(sorted(set(current) - changed))}
            for uid in gone:
                del current[uid]
        if rng.random() < 0.2:
            uid = f"id-new{rng.randrange(10**6)}"
            current[uid] = (rng.choice(names), f"uid={uid},ou=people,dc=x")
            changed.add(uid)
        new = apply_changes(snap, [raw(uid) for uid in changed], [], departures=Departures("accesslog", changed=gone))
        rebuilt = DirectorySnapshot(new.users, new.groups)  # no carried index, no record of what changed
        assert new.changed_since(snap) is not None and rebuilt.changed_since(snap) is None
        assert set(new.users) == set(current)
        by_dn, by_name = new.indexes()
        assert by_name == username_index(new.users.values())
        assert by_dn == {normalize_dn(u.dn): u.id for u in new.users.values()}
        for username, _ in current.values():
            assert new.user(username) is rebuilt.user(username)
            assert new.user(username.upper()) is rebuilt.user(username)
        assert diff(snap, new).as_dict() == diff(snap, rebuilt).as_dict()
        snap = new
