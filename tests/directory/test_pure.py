"""Pure parts of the directory sync: closure, builder, diff, safety, ranged values, persistence."""

from __future__ import annotations

import json

import pytest

from rolegate.directory.builder import RawGroup, RawUser, apply_changes, build_snapshot
from rolegate.directory.closure import group_closures, users_below
from rolegate.directory.diff import diff
from rolegate.directory.model import DirectoryGroup
from rolegate.directory.persist import decode_snapshot, encode_snapshot
from rolegate.directory.ranged import RangeError, collect_values, parse_range
from rolegate.directory.safety import check_deletions
from rolegate.directory.values import format_change_time, format_guid, normalize_dn, parse_change_time


def user(
    name: str, *, uid: str | None = None, dn: str | None = None, disabled: bool = False, email: str | None = None
) -> RawUser:
    return RawUser(
        id=uid or f"id-{name}",
        dn=dn or f"uid={name},ou=people,dc=x",
        username=name,
        email=email or f"{name}@x",
        name=name.title(),
        disabled=disabled,
    )


def group(name: str, *members: str, uid: str | None = None, uids: tuple[str, ...] = ()) -> RawGroup:
    dns = tuple(normalize_dn(m if "=" in m else f"uid={m},ou=people,dc=x") for m in members)
    return RawGroup(
        id=uid or f"gid-{name}", dn=f"cn={name},ou=groups,dc=x", name=name, member_dns=dns, member_uids=uids
    )


def gdn(name: str) -> str:
    return f"cn={name},ou=groups,dc=x"


USERS = [user("alice"), user("bob"), user("trent"), user("ivan", disabled=True)]
GROUPS = [
    group("technicians", "bob", "trent", "ivan"),
    group("staff", "alice", gdn("technicians")),
    group("admins", "alice"),
]


def test_nested_groups_reach_the_top() -> None:
    snap = build_snapshot(USERS, GROUPS)
    assert snap.user("bob").groups == {"technicians", "staff"}
    assert snap.user("alice").groups == {"staff", "admins"}
    assert snap.user("IVAN").disabled  # usernames are case-insensitive


def test_cycles_terminate_and_share_names() -> None:
    groups = [group("a", "alice", gdn("b")), group("b", "bob", gdn("a")), group("self", gdn("self"), "trent")]
    snap = build_snapshot(USERS, groups)
    assert snap.user("alice").groups == {"a", "b"}
    assert snap.user("bob").groups == {"a", "b"}
    assert snap.user("trent").groups == {"self"}


def test_closure_helpers_on_a_deep_chain_with_a_cycle() -> None:
    chain = {
        f"g{i}": DirectoryGroup(
            f"g{i}", f"cn=g{i}", f"g{i}", frozenset({f"u{i}"}), frozenset({f"g{i + 1}"} if i < 499 else {"g0"})
        )
        for i in range(500)
    }
    closures = group_closures(chain)
    assert len(closures["g250"]) == 500  # the whole ring
    assert users_below(chain, ["g3"]) == {f"u{i}" for i in range(500)}


def test_dangling_members_duplicates_and_ambiguous_names_are_reported_not_fatal() -> None:
    users = [user("alice"), user("alice2", uid="id-alice"), user("Bob"), user("bob", uid="id-bob2")]
    groups = [group("g", "alice", "uid=ghost,ou=people,dc=x", uids=("nobody", "bob"))]
    snap = build_snapshot(users, groups)
    assert any("duplicate id" in i for i in snap.issues)
    assert snap.user("bob") is None  # two entries claim it: nobody signs in as bob
    g = snap.groups["gid-g"]
    assert set(g.unresolved) == {"uid=ghost,ou=people,dc=x", "nobody", "bob"}
    assert snap.user("alice").groups == {"g"}


def test_posix_member_uid_and_unique_member_forms() -> None:
    groups = [
        RawGroup(id="p", dn="cn=p,dc=x", name="posix", member_uids=("alice",)),
        RawGroup(id="u", dn="cn=u,dc=x", name="unique", member_dns=(normalize_dn("UID=Bob , ou=People,dc=x#'0101'B"),)),
    ]
    snap = build_snapshot(USERS, groups)
    assert snap.user("alice").groups == {"posix"}
    assert snap.user("bob").groups == {"unique"}


def test_incremental_equals_full_and_keeps_untouched_users_identical() -> None:
    base = build_snapshot(USERS, GROUPS)
    # trent renamed (same id, new DN and username), staff loses the technicians group, new hire carol
    renamed = user("trent2", uid="id-trent", dn="uid=trent2,ou=people,dc=x")
    carol = user("carol")
    new_groups = [group("staff", "alice", "carol"), group("technicians", "bob", "trent2", "ivan")]
    inc = apply_changes(base, [renamed, carol], new_groups)
    users_now = [USERS[0], USERS[1], renamed, USERS[3], carol]
    groups_now = [new_groups[1], new_groups[0], GROUPS[2]]
    full = build_snapshot(users_now, groups_now)
    assert {u.username: u.groups for u in inc} == {u.username: u.groups for u in full}
    assert inc.user("trent2").id == "id-trent" and inc.user("trent") is None
    assert inc.user("bob").groups == {"technicians"}
    assert inc.user("carol").groups == {"staff"}
    assert inc.user("alice") is not None


def test_incremental_leaves_unreached_users_as_they_were() -> None:
    groups = [*GROUPS, group("office", "alice")]
    base = build_snapshot(USERS, groups)
    inc = apply_changes(base, [], [group("office", "alice", "trent")])
    assert inc.users["id-bob"] is base.users["id-bob"]  # not recomputed
    assert inc.user("trent").groups == {"technicians", "staff", "office"}


def test_diff_reports_fields_memberships_and_roles() -> None:
    old = build_snapshot(USERS, GROUPS)
    new = build_snapshot(
        [user("alice", email="a@new"), user("bob", disabled=True), user("carol")],
        [group("staff", "alice", "carol"), group("admins", "alice")],
    )
    seen = []

    def roles(before, after):
        seen.append((before and before.username, after and after.username))
        return ["- technician"] if before and after is None else None

    changes = diff(old, new, describe_roles=roles)
    assert [c.username for c in changes.users_added] == ["carol"]
    assert sorted(c.username for c in changes.users_removed) == ["ivan", "trent"]
    bob = next(c for c in changes.users_changed if c.username == "bob")
    assert bob.fields["disabled"] == (False, True) and bob.groups_removed == ["staff", "technicians"]
    alice = next(c for c in changes.users_changed if c.username == "alice")
    assert alice.fields["email"] == ("alice@x", "a@new")
    assert [g.name for g in changes.groups_removed] == ["technicians"]
    staff = changes.groups_changed[0]
    assert staff.members_added == ["carol"] and staff.members_removed == ["group:technicians"]
    assert changes.users_removed[0].roles == ["- technician"]
    json.dumps(changes.as_dict())


def test_diff_survives_a_broken_roles_hook() -> None:
    def broken(before, after):
        raise RuntimeError("engine down")

    changes = diff(build_snapshot([], []), build_snapshot(USERS, GROUPS), describe_roles=broken)
    assert changes.users_added[0].roles == ["(roles unavailable: RuntimeError)"]


@pytest.mark.parametrize(
    ("current", "removed", "share", "refused"),
    [(100, 10, 0.1, False), (100, 11, 0.1, True), (0, 0, 0.1, False), (10, 10, 1.0, False), (10, 1, 0.0, True)],
)
def test_deletion_threshold(current: int, removed: int, share: float, refused: bool) -> None:
    old = build_snapshot([user(f"u{i}") for i in range(current)], [])
    new = build_snapshot([user(f"u{i}") for i in range(removed, current)], [])
    assert check_deletions(diff(old, new), current, share).refused is refused


def test_newly_disabled_counts_as_losing_access() -> None:
    old = build_snapshot([user(f"u{i}") for i in range(10)], [])
    new = build_snapshot([user(f"u{i}", disabled=i < 5) for i in range(10)], [])
    check = check_deletions(diff(old, new), 10, 0.1)
    assert check.refused and check.losing == 5


def test_snapshot_round_trips_through_json() -> None:
    snap = build_snapshot(
        [*USERS, RawUser("id-s", "uid=s,dc=x", "s", None, None, False, attributes={"building": ("a", "b")})], GROUPS
    )
    data = json.loads(json.dumps(encode_snapshot(snap)))
    back = decode_snapshot(data)
    assert {u.username: (u.groups, u.disabled, dict(u.attributes)) for u in back} == {
        u.username: (u.groups, u.disabled, dict(u.attributes)) for u in snap
    }
    assert not back.incremental_ready
    assert not diff(snap, back).users_changed
    with pytest.raises(ValueError):
        decode_snapshot({"format": 1, "users": [["x"]]})
    with pytest.raises(ValueError):
        decode_snapshot("garbage")


def test_range_names_parse() -> None:
    assert parse_range("member;range=0-1499") == ("member", 0, 1499)
    assert parse_range("member;range=1500-*") == ("member", 1500, None)
    assert parse_range("Member;Range=3000-4499") == ("Member", 3000, 4499)
    assert parse_range("member") is None
    assert parse_range("member;range=x-1") is None


def _ad_server(values: list[bytes], step: int = 1500):
    """Answers like AD: each read gives at most ``step`` values, named with their range."""
    calls = []

    def fetch(request: str) -> dict[str, list[bytes]]:
        calls.append(request)
        start = int(request.split("=")[1].split("-")[0])
        end = start + step - 1
        if end >= len(values) - 1:
            return {"member": [], f"member;range={start}-*": values[start:]}
        return {"member": [], f"member;range={start}-{end}": values[start : end + 1]}

    return fetch, calls


def test_ranged_retrieval_follows_every_range() -> None:
    values = [f"uid=u{i},dc=x".encode() for i in range(4000)]
    fetch, calls = _ad_server(values)
    first = {"member": [], "member;range=0-1499": values[:1500]}
    assert collect_values(first, "member", fetch) == values
    assert calls == ["member;range=1500-*", "member;range=3000-*"]


def test_plain_answer_needs_no_round_trip() -> None:
    values = [b"a", b"b"]
    assert collect_values({"member": values}, "member", lambda r: pytest.fail("no fetch")) == values
    assert collect_values({}, "member", lambda r: pytest.fail("no fetch")) == []


def test_ranged_answers_that_do_not_add_up_fail() -> None:
    with pytest.raises(RangeError):  # the server skips values
        collect_values({"member;range=0-1": [b"a", b"b"]}, "member", lambda r: {"member;range=5-*": [b"x"]})
    with pytest.raises(RangeError):  # the server stops answering ranges
        collect_values({"member;range=0-1": [b"a", b"b"]}, "member", lambda r: {"member": []})
    with pytest.raises(RangeError):  # no progress
        collect_values({"member;range=0-1": []}, "member", lambda r: {})


def test_values() -> None:
    raw = bytes(range(16))
    assert format_guid(raw) == "03020100-0504-0706-0809-0a0b0c0d0e0f"
    assert format_guid(b"short") is None
    assert normalize_dn("CN=A B , OU=G,  DC=X") == "cn=a b,ou=g,dc=x"
    assert parse_change_time("20240102030405Z") == 1704164645.0
    assert parse_change_time("20240102030405.0Z") == 1704164645.0
    assert parse_change_time("garbage") is None
    assert format_change_time(1704164645.0) == "20240102030405Z"


def test_a_full_build_reuses_what_did_not_change() -> None:
    old = build_snapshot(USERS, GROUPS)
    again = build_snapshot(USERS, GROUPS, reuse=old)
    assert all(again.users[u.id] is u for u in old)
    assert diff(old, again).empty
    # technicians renamed: bob's, trent's and ivan's closures change; alice only sits in staff and admins
    techs = GROUPS[0]
    renamed = [RawGroup(techs.id, techs.dn, "techs", member_dns=techs.member_dns), *GROUPS[1:]]
    new = build_snapshot([*USERS[:3], user("ivan", disabled=False)], renamed, reuse=old)
    assert new.user("alice") is old.user("alice")
    assert new.user("bob").groups == {"techs", "staff"} and new.user("bob") is not old.user("bob")
    assert not new.user("ivan").disabled
    fresh = build_snapshot([*USERS[:3], user("ivan", disabled=False)], renamed)
    assert diff(fresh, new).empty
    assert {u.id: (u.groups, u.direct_groups) for u in fresh} == {u.id: (u.groups, u.direct_groups) for u in new}


def test_a_full_build_after_a_restart_shares_closures_with_the_loaded_snapshot() -> None:
    old = build_snapshot(USERS, GROUPS)
    loaded = decode_snapshot(json.loads(json.dumps(encode_snapshot(old))))
    new = build_snapshot(USERS, GROUPS, reuse=loaded)
    assert diff(loaded, new).empty and new.incremental_ready
    assert all(new.users[u.id].groups is u.groups for u in loaded)
    assert new.user("bob").direct_groups == old.user("bob").direct_groups


def test_the_watermark_is_the_latest_stamp_whatever_its_form() -> None:
    """Plain stamps are compared as bytes and parsed only when higher; the answer is the latest of them all."""
    import random

    from rolegate.directory.reader import Watermark

    rng = random.Random(3)
    forms = []
    for _ in range(3000):
        year, month, day = rng.randrange(2020, 2027), rng.randrange(1, 13), rng.randrange(1, 29)
        hms = f"{rng.randrange(24):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
        roll = rng.random()
        if roll < 0.7:
            forms.append(f"{year}{month:02d}{day:02d}{hms}Z")
        elif roll < 0.8:
            forms.append(f"{year}{month:02d}{day:02d}{hms}.5Z")
        elif roll < 0.9:
            forms.append(f"{year}{month:02d}{day:02d}{hms}+0230")
        else:
            forms.append(rng.choice(["2026999999999Z", "x0261207120000Z", "20261207120000z", "", "20271399999999Z"]))
    mark = Watermark(integer=False)
    for form in forms:
        mark.see([form.encode()])
    parsed = [v for f in forms if (v := parse_change_time(f)) is not None]
    assert mark.highest == max(parsed)
    assert Watermark(integer=False).highest is None


def test_group_changes_match_a_comparison_of_every_member_by_name() -> None:
    """diff skips turning a group's members into names when its ids are the same and no member was renamed, added
    or removed: what it reports must equal a comparison of every group's member names."""
    import random

    rng = random.Random(11)

    def snapshot(names: dict[str, str], listing: dict[str, list[str]], group_names: dict[str, str]):
        users = [user(n, uid=uid) for uid, n in names.items()]
        groups = [
            RawGroup(
                id=gid,
                dn=f"cn={gid},ou=groups,dc=x",
                name=group_names[gid],
                member_dns=tuple(
                    normalize_dn(m if m.startswith("cn=") else f"uid={names[m]},ou=people,dc=x") for m in members
                ),
            )
            for gid, members in listing.items()
        ]
        return build_snapshot(users, groups)

    def names_of(snap, group) -> set[str]:
        found = {snap.users[i].username for i in group.member_users if i in snap.users}
        return found | {f"group:{snap.groups[i].name}" for i in group.member_groups if i in snap.groups}

    for _ in range(200):
        names = {f"id{i}": f"user{i}" for i in range(12)}
        group_names = {f"g{j}": f"group{j}" for j in range(5)}
        listing = {gid: rng.sample(sorted(names), 4) for gid in group_names}
        listing["g0"].append("cn=g1,ou=groups,dc=x")
        old = snapshot(names, listing, group_names)
        for _ in range(rng.randrange(3)):  # renames, a group renamed, a member moved, a user gone
            roll, uid = rng.random(), rng.choice(sorted(names))
            if roll < 0.3:
                names[uid] = f"renamed{rng.randrange(99)}"
            elif roll < 0.5:
                group_names[rng.choice(sorted(group_names))] += "-new"
            elif roll < 0.8:
                gid = rng.choice(sorted(listing))
                if uid not in listing[gid]:
                    listing[gid].append(uid)
            else:
                del names[uid]
                listing = {g: [m for m in ms if m != uid] for g, ms in listing.items()}
        new = snapshot(names, listing, group_names)
        expected = []
        for gid, after in new.groups.items():
            before = old.groups[gid]
            was, now = names_of(old, before), names_of(new, after)
            if before.name != after.name or before.dn != after.dn or was != now:
                expected.append((after.name, sorted(now - was), sorted(was - now)))
        got = [(c.name, c.members_added, c.members_removed) for c in diff(old, new).groups_changed]
        assert got == sorted(expected)
