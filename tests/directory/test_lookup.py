"""``lookup_user``: one user read live at sign-in; hostile usernames never widen the filter."""

from __future__ import annotations

import pytest

from rolegate.directory import DirectoryUnavailable, lookup_user

from .conftest import group_dn, group_ldif, people_ldif, user_dn

pytestmark = pytest.mark.lab

HOSTILE = [
    "*",
    "*)(uid=*",
    "admin)(|(uid=*",
    "bob)(uid=*",
    "bob\x00",
    "\x00",
    "b*",
    "*ob",
    "bob)",
    "(uid=bob)",
    "bob\\2a",
    "bob\\",
    "bob*)(objectClass=*",
    "",
    " bob",
    "bob ",
    "x" * 300,
    "bob\n",
    "alice)(|(employeeType=*",
    None,
    42,
    b"bob",
]


async def test_lookup_reads_entry_and_nested_groups(lab_slapd, config_for) -> None:
    bob = await lookup_user(config_for(lab_slapd), "bob")
    assert bob is not None and bob.groups == {"technicians", "staff"} and bob.email == "bob@example.com"
    assert len(bob.id) == 36 and not bob.disabled
    ivan = await lookup_user(config_for(lab_slapd), "ivan")
    assert ivan.disabled
    assert (await lookup_user(config_for(lab_slapd), "BOB")).username == "bob"  # uid matches case-insensitively


@pytest.mark.parametrize("name", HOSTILE)
async def test_hostile_usernames_match_nobody(lab_slapd, config_for, name) -> None:
    assert await lookup_user(config_for(lab_slapd), name) is None


async def test_a_new_hire_counts_before_the_next_sync(fresh_slapd, config_for) -> None:
    slapd = fresh_slapd
    slapd.ldapadd(
        people_ldif(["newbie"]) + group_ldif("loop-a", [user_dn("newbie")]) + group_ldif("loop-b", [group_dn("loop-a")])
    )
    slapd.ldapmodify(
        f"dn: {group_dn('loop-a')}\nchangetype: modify\nadd: member\nmember: {group_dn('loop-b')}\n"
        f"-\nadd: member\nmember: {group_dn('technicians')}\n"
    )
    slapd.ldapmodify(f"dn: {group_dn('technicians')}\nchangetype: modify\nadd: member\nmember: {user_dn('newbie')}\n")
    newbie = await lookup_user(config_for(slapd), "newbie")
    assert newbie is not None
    assert newbie.groups == {"loop-a", "loop-b", "technicians", "staff"}  # nested and cyclic, live


async def test_lookup_with_member_of_and_posix_groups(fresh_slapd, config_for) -> None:
    fresh_slapd.ldapadd(
        "dn: cn=posix,ou=groups,dc=example,dc=com\nobjectClass: posixGroup\ncn: posix\n"
        "gidNumber: 5000\nmemberUid: bob\n\n"
    )
    bob = await lookup_user(config_for(fresh_slapd, users={"member_of": "memberOf"}), "bob")
    assert bob.groups == {"technicians", "staff", "posix"}


async def test_lookup_with_the_directory_down_raises(fresh_slapd, config_for) -> None:
    fresh_slapd.stop()
    with pytest.raises(DirectoryUnavailable):
        await lookup_user(config_for(fresh_slapd), "bob")
