"""The Active Directory preset against slapd carrying tests/directory/ad-lite.schema.

OpenLDAP never splits a big attribute into ranges, so the plain answer is tested on the real
server and ranged answers are tested by re-shaping that real answer the way AD sends it.
"""

from __future__ import annotations

import pytest

from rolegate.directory import DirectorySync, DirectoryUnavailable, lookup_user
from rolegate.directory.builder import Issues
from rolegate.directory.connection import connection
from rolegate.directory.presets import resolve_schema
from rolegate.directory.ranged import RangeError, collect_values
from rolegate.directory.reader import _range_fetcher, paged, to_group

from .conftest import AD_SCHEMA, GROUPS, PEOPLE, guid_b64

pytestmark = pytest.mark.lab
BIG = 1600  # more than AD's default MaxValRange of 1500


def ad_user(name: str, usn: int, *, uac: int = 512) -> str:
    _, guid = guid_b64(name)
    return (
        f"dn: cn={name},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: user\ncn: {name}\nsn: {name}\n"
        f"sAMAccountName: {name}\ndisplayName: {name.title()} Example\nmail: {name}@corp.example\n"
        f"userAccountControl: {uac}\nobjectGUID:: {guid}\nuSNChanged: {usn}\nobjectCategory: person\n\n"
    )


def ad_group(name: str, members: list[str], usn: int) -> str:
    _, guid = guid_b64("group-" + name)
    lines = [
        f"dn: cn={name},{GROUPS}",
        "objectClass: group",
        f"cn: {name}",
        f"sAMAccountName: {name}",
        f"objectGUID:: {guid}",
        f"uSNChanged: {usn}",
        "objectCategory: group",
    ]
    return "\n".join(lines + [f"member: {m}" for m in members]) + "\n\n"


@pytest.fixture(scope="module")
def ad_slapd(lab_launcher):
    # One per module (loading 1,600 users takes a while); the test that modifies it runs last.
    slapd = lab_launcher.slapd(seed=False, extra_schemas=[AD_SCHEMA])
    crew = [f"tech{i:04d}" for i in range(BIG)]
    slapd.ldapadd(ad_user("alice", 10) + ad_user("dave", 11, uac=514))
    for start in range(0, BIG, 400):  # several runs: each stays inside the lab tool's timeout
        slapd.ldapadd("".join(ad_user(n, 20 + start + i) for i, n in enumerate(crew[start : start + 400])))
    slapd.ldapadd(
        ad_group("Field Crew", [f"cn={n},{PEOPLE}" for n in crew], 5000)
        + ad_group("Domain Admins", [f"cn=alice,{PEOPLE}", f"cn=Field Crew,{GROUPS}"], 5001)
    )
    yield slapd
    slapd.stop()


def ad_config(config_for, slapd, **changes):
    return config_for(slapd, preset="active_directory", users={"disabled_filter": None}, page_size=500, **changes)


async def test_ad_lookup_user(ad_slapd, config_for) -> None:
    config = ad_config(config_for, ad_slapd)
    tech = await lookup_user(config, "TECH0042")
    assert tech.username == "tech0042" and tech.groups == {"Field Crew", "Domain Admins"}
    assert (await lookup_user(config, "dave")).disabled
    assert await lookup_user(config, "tech*") is None


def test_ranged_answer_shape_from_a_real_entry(ad_slapd, config_for) -> None:
    """The real slapd answer for the big group, re-keyed as AD sends it (1,500 per range)."""
    config = ad_config(config_for, ad_slapd)
    schema = resolve_schema(config)
    group = f"cn=Field Crew,{GROUPS}"
    with connection(config) as conn:
        [(dn, attrs)] = list(paged(conn, GROUPS, "(cn=Field Crew)", schema.group_attributes(), 10))
        real = attrs["member"]
        assert len(real) == BIG
        # plain answer: taken as is, no round trip
        plain = to_group(schema, dn, attrs, Issues(), _range_fetcher(conn, group))
        assert len(plain.member_dns) == BIG

        def as_ad(start: int) -> dict[str, list[bytes]]:
            end = min(start + 1500, len(real)) - 1
            key = f"member;range={start}-{'*' if end == len(real) - 1 else end}"
            return {"member": [], key: real[start : end + 1]}

        first = {**{k: v for k, v in attrs.items() if k != "member"}, **as_ad(0)}
        asked: list[str] = []

        def fetch(request: str) -> dict[str, list[bytes]]:
            asked.append(request)
            return as_ad(int(request.split("=")[1].split("-")[0]))

        ranged = to_group(schema, dn, first, Issues(), fetch)
        assert ranged.member_dns == plain.member_dns and asked == ["member;range=1500-*"]

        # the real server does not know ranges: following one against it fails the run, never truncates
        with pytest.raises(DirectoryUnavailable):
            to_group(schema, dn, first, Issues(), _range_fetcher(conn, group))
        with pytest.raises(RangeError):
            collect_values(first, "member", _range_fetcher(conn, group))


async def test_ad_preset_full_and_incremental(ad_slapd, config_for, store) -> None:
    sync = DirectorySync(ad_config(config_for, ad_slapd), store)
    result = await sync.sync_now(full=True)
    assert result.ok, result.error
    snap = sync.snapshot
    alice = snap.user("alice")
    assert alice.id == guid_b64("alice")[0]  # objectGUID bytes formatted as a GUID
    assert alice.name == "Alice Example" and alice.email == "alice@corp.example"
    assert alice.groups == {"Domain Admins"} and not alice.disabled
    assert snap.user("dave").disabled  # userAccountControl 514 = 512 | ACCOUNTDISABLE
    crew = next(g for g in snap.groups.values() if g.name == "Field Crew")
    assert len(crew.member_users) == BIG
    assert snap.user("tech1599").groups == {"Field Crew", "Domain Admins"}
    assert snap.since == "5002"  # no rootDSE highestCommittedUSN on slapd: highest seen + 1

    # incremental by uSNChanged: a rename and a disable, read alone
    ad_slapd.ldapmodify(
        f"dn: cn=alice,{PEOPLE}\nchangetype: modify\nreplace: userAccountControl\n"
        "userAccountControl: 514\n-\nreplace: uSNChanged\nuSNChanged: 6000\n"
    )
    ad_slapd.ldapmodify(f"dn: cn=tech0001,{PEOPLE}\nchangetype: modrdn\nnewrdn: cn=tech0001-renamed\ndeleteoldrdn: 1\n")
    ad_slapd.ldapmodify(
        f"dn: cn=tech0001-renamed,{PEOPLE}\nchangetype: modify\nreplace: sAMAccountName\n"
        "sAMAccountName: tech-one\n-\nreplace: uSNChanged\nuSNChanged: 6001\n"
    )
    inc = await sync.sync_now(full=False)
    assert inc.ok and not inc.full and inc.entries_read == 2, (inc.error, inc.entries_read)
    snap = sync.snapshot
    assert snap.user("alice").disabled
    renamed = snap.user("tech-one")
    assert renamed.id == guid_b64("tech0001")[0] and renamed.groups == {"Field Crew", "Domain Admins"}
    assert [c.username for c in inc.diff.newly_disabled] == ["alice"]
