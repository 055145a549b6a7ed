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
