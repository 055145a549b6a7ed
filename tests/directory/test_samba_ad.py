"""The Active Directory preset against a real AD: a Samba AD DC (see samba.py), over LDAPS and StartTLS.

Every test runs its own copy of the session's template DC on its own 127.0.0.N, bound as the
non-admin service account ``rolegate`` (or ``rolegate-plain``, who may not see deleted objects),
verifying the DC's certificate against that DC's CA file. The AD-lite slapd schema
(test_active_directory.py) stays for the fast tests; these are the real thing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from rolegate.config.sections.directory import DirectoryConfig
from rolegate.directory import DirectorySync, load_snapshot, lookup_user
from rolegate.directory.builder import Issues
from rolegate.directory.connection import connection
from rolegate.directory.presets import resolve_schema
from rolegate.directory.reader import _range_fetcher, paged, to_group

from .samba import (
    CREW,
    CREW_NAMES,
    ELSEWHERE,
    GROUPS,
    PEOPLE,
    SERVICE,
    SERVICE_PASSWORD,
    SERVICE_PLAIN,
    STAFF,
    group_dn,
    service_dn,
    user_dn,
)

pytestmark = pytest.mark.lab
USERS = len(STAFF) + CREW  # under OU=People; the service accounts live in CN=Users
WAIT = 90.0  # bound on waiting for the sync loop's next run (it runs every second here)


def ad_config(dc, *, starttls: bool = False, service: str = SERVICE, **changes: Any) -> DirectoryConfig:
    data: dict[str, Any] = {
        "url": dc.starttls_url if starttls else dc.url,
        "start_tls": starttls,
        "ca_file": dc.ca_file,
        "bind_dn": service_dn(service),
        "bind_password": SERVICE_PASSWORD,
        "preset": "active_directory",
        "users": {"base": PEOPLE},
        "groups": {"base": GROUPS},
        "page_size": 500,
        "timeout": "60s",
        "connect_timeout": "5s",
    }
    data.update(changes)
    return DirectoryConfig.model_validate(data)


async def next_run_after(sync: DirectorySync, moment: float) -> None:
    """Wait until a sync run that began after ``moment`` has finished (bounded)."""
    deadline = time.monotonic() + WAIT
    while sync.status.last_success is None or sync.status.last_success <= moment:
        assert time.monotonic() < deadline, f"no sync run finished within {WAIT}s: {sync.status.as_dict()}"
        await asyncio.sleep(0.05)


def assert_company(snap, dc) -> None:
    """What the seed put into the DC, as rolegate sees it."""
    assert len(snap.users) == USERS
    alice = snap.user("alice")
    assert alice.id == dc.guid(user_dn("alice"))  # objectGUID's 16 bytes, as AD prints them
    assert alice.name == "Alice Admin" and alice.email == "alice@acme.test" and not alice.disabled
    assert snap.user("dave").disabled  # userAccountControl 546: ACCOUNTDISABLE
    assert snap.user("tech1999").groups == {"Field Crew", "Technicians", "Staff"}  # nested two deep
    crew = next(g for g in snap.groups.values() if g.name == "Field Crew")
    assert len(crew.member_users) == CREW
    # The closure rolegate computes is the DC's own transitive answer (LDAP_MATCHING_RULE_IN_CHAIN).
    for name in [n for n, _, _ in STAFF] + ["tech0042"]:
        assert snap.user(name).groups == dc.groups_in_chain(user_dn(name)), name


async def test_full_sync_over_ldaps_with_the_dcs_ca(samba_dc, store) -> None:
    config = ad_config(samba_dc)
    sync = DirectorySync(config, store)
    result = await sync.sync_now(full=True)
    assert result.ok and result.applied, result.error
    assert_company(sync.snapshot, samba_dc)
    assert int(sync.snapshot.since) > 1  # the rootDSE's highestCommittedUSN, taken before the read
    assert sync.snapshot.user("rolegate") is None  # CN=Users is outside the users base
    # sign-in's live lookup agrees with the sync
    tech = await lookup_user(config, "TECH0042")
    assert tech.username == "tech0042" and tech.groups == {"Field Crew", "Technicians", "Staff"}
    assert (await lookup_user(config, "dave")).disabled
    assert await lookup_user(config, "tech*") is None


async def test_starttls_and_what_is_refused(samba_dc, store, tmp_path) -> None:
    sync = DirectorySync(ad_config(samba_dc, starttls=True), store)
    result = await sync.sync_now(full=True)
    assert result.ok, result.error
    assert_company(sync.snapshot, samba_dc)

    # A simple bind in clear text: the DC requires TLS (or signing) and says so; nothing is applied.
    clear = await DirectorySync(ad_config(samba_dc, url=samba_dc.starttls_url), store).sync_now(full=True)
    assert clear.error is not None and "strongerauthrequired" in clear.error.lower() and not clear.applied
    # A CA that did not sign the DC's certificate: refused before the bind, never "trusted anyway".
    other_ca = tmp_path / "other-ca.pem"
    from .samba import _make_tls

    other_ca.write_bytes(_make_tls(samba_dc.address)[0])
    for starttls in (False, True):
        wrong = await DirectorySync(ad_config(samba_dc, starttls=starttls, ca_file=str(other_ca)), store).sync_now(
            full=True
        )
        assert wrong.error is not None and "CERTIFICATE_VERIFY_FAILED" in wrong.error, wrong.error
    assert (await load_snapshot(store)).user("alice") is not None  # the good snapshot keeps serving


def test_client_requested_ranges_and_paged_search(samba_dc, monkeypatch) -> None:
    """Samba honours ranges a client asks for (it does not force them as Windows does at 1,500):
    rolegate's range following is run against the real DC from a first range we ask for."""
    config = ad_config(samba_dc)
    schema = resolve_schema(config)
    with connection(config) as conn:
        [(dn, plain)] = list(paged(conn, GROUPS, "(cn=Field Crew)", schema.group_attributes(), 10))
        assert len(plain["member"]) == CREW
        whole = to_group(schema, dn, plain, Issues(), _range_fetcher(conn, dn))

        attributes = [a for a in schema.group_attributes() if a != "member"] + ["member;range=0-1499"]
        [(_, first)] = list(paged(conn, GROUPS, "(cn=Field Crew)", attributes, 10))
        assert "member" not in first and len(first["member;range=0-1499"]) == 1500
        asked: list[str] = []
        fetch = _range_fetcher(conn, dn)

        def following(request: str):
            asked.append(request)
            answer = fetch(request)
            assert any(k.lower().startswith("member;range=1500-") for k in answer), answer.keys()
            return answer

        ranged = to_group(schema, dn, first, Issues(), following)
        assert asked == ["member;range=1500-*"]  # the DC answered the rest, ending in "*"
        assert ranged.member_dns == whole.member_dns and len(set(ranged.member_dns)) == CREW
        assert {d.split(",")[0][3:] for d in ranged.member_dns} == set(CREW_NAMES)

        # Paged search: 2,008 users in pages of 100, each page a search carrying the server's cookie.
        pages: list[tuple[int, bool]] = []
        search = conn.search

        def counting(*args, **kwargs):
            # ldap3's paged_search passes (..., controls, paged_size, paged_criticality, paged_cookie)
            pages.append((args[10], args[12] is not None))
            return search(*args, **kwargs)

        monkeypatch.setattr(conn, "search", counting)
        names = [a["samaccountname"][0] for _, a in paged(conn, PEOPLE, schema.users_filter, ["sAMAccountName"], 100)]
        assert len(names) == USERS == len(set(names))
        assert len(pages) == USERS // 100 + 1 and all(size == 100 for size, _ in pages)
        assert [cookie for _, cookie in pages] == [False] + [True] * (len(pages) - 1)


async def test_incremental_by_usn_through_a_rename_and_a_disable(samba_dc, store) -> None:
    sync = DirectorySync(ad_config(samba_dc), store)
    assert (await sync.sync_now(full=True)).ok
    tech_id = sync.snapshot.user("tech0001").id
    assert tech_id == samba_dc.guid(user_dn("tech0001"))

    samba_dc.rename(user_dn("tech0001"), "CN=tech-one")
    samba_dc.modify(user_dn("tech-one"), sAMAccountName="tech-one")
    samba_dc.modify(user_dn("alice"), userAccountControl="546")
    samba_dc.remove_members(group_dn("Technicians"), user_dn("bob"))
    inc = await sync.sync_now(full=False)
    assert inc.ok and not inc.full, inc.error
    assert inc.entries_read < 10, inc.entries_read  # what changed, not 2,000 users again
    snap = sync.snapshot
    renamed = snap.user("tech-one")
    assert renamed.id == tech_id and snap.user("tech0001") is None  # objectGUID carried the identity
    assert renamed.groups == {"Field Crew", "Technicians", "Staff"} and renamed.dn.startswith("CN=tech-one,")
    change = next(c for c in inc.diff.users_changed if c.id == tech_id)
    assert change.fields["username"] == ("tech0001", "tech-one")
    assert not inc.diff.users_added and not inc.diff.users_removed
    assert snap.user("alice").disabled and [c.username for c in inc.diff.newly_disabled] == ["alice"]
    assert snap.user("bob").groups == set() == samba_dc.groups_in_chain(user_dn("bob"))

    full = await sync.sync_now(full=True)
    assert full.ok and full.diff.empty, full.diff.as_dict()


@pytest.mark.parametrize("service", [SERVICE, SERVICE_PLAIN])
async def test_a_deleted_account_is_gone_after_one_interval(samba_dc, store, service) -> None:
    """``rolegate`` may read CN=Deleted Objects: its runs read the tombstones (cost: the changes).
    ``rolegate-plain`` may not: the DC shows it no tombstone, and its runs list every objectGUID."""
    config = ad_config(samba_dc, service=service, interval="1s", full_interval="1h", max_deletions="1%")
    sync = DirectorySync(config, store)
    await sync.start()
    try:
        await next_run_after(sync, 0)
        first_full = sync.status.last_full
        assert sync.snapshot.user("frank").groups == {"Sales"}
        usn = samba_dc.highest_usn()
        moment = time.time()
        samba_dc.delete(user_dn("frank"), group_dn("Finance"))
        samba_dc.rename(user_dn("heidi"), "CN=heidi", new_superior=ELSEWHERE)  # out of the users base
        await next_run_after(sync, moment)
        assert sync.status.last_full == first_full  # an incremental run saw it
        snap = sync.snapshot
        assert snap.user("frank") is None and snap.user("heidi") is None
        assert snap.user("erin").groups == set()  # Finance is gone
        assert "Finance" not in {g.name for g in snap.groups.values()}
        sales = next(g for g in snap.groups.values() if g.name == "Sales")
        assert {snap.users[u].username for u in sales.member_users} == {"grace"}
        stored = await load_snapshot(store)  # what every worker reads
        assert stored.user("frank") is None and stored.user("heidi") is None
    finally:
        await sync.stop()
    from rolegate.directory.departures import read_departures

    with connection(config) as conn:
        found = read_departures(conn, resolve_schema(config), str(usn + 1), 1000)
    if service == SERVICE:
        assert found.method == "tombstones" and found.listed is None
        assert samba_dc.guid(user_dn("grace")) not in found.changed  # only what changed, not everyone
    else:
        assert found.method == "id listing" and len(found.listed) == USERS - 2 + 5  # users + groups in scope
    full = await sync.sync_now(full=True)
    assert full.ok and full.diff.empty, full.diff.as_dict()


async def test_the_deletion_guard_names_accounts_as_for_openldap(samba_dc, store) -> None:
    """Refused by max_deletions, an incremental run names the accounts by the usernames the snapshot
    has, as on OpenLDAP (test_deletions.py), never by a tombstone's mangled name."""
    sync = DirectorySync(ad_config(samba_dc, max_deletions="0.05%"), store)  # 1 of 2,008
    assert (await sync.sync_now(full=True)).ok
    ids = {n: sync.snapshot.user(n).id for n in ("frank", "grace")}
    samba_dc.delete(user_dn("grace"), user_dn("frank"))
    dry = await sync.sync_now(full=False, dry_run=True)
    assert dry.refused and not dry.applied
    assert [c.as_dict() for c in dry.diff.users_removed] == [
        {"username": "frank", "id": ids["frank"], "groups_removed": ["Sales"]},
        {"username": "grace", "id": ids["grace"], "groups_removed": ["Sales"]},
    ]
    refused = await sync.sync_now(full=False)
    assert refused.refused and refused.pending_deletions == 2 and sync.snapshot.user("frank") is not None
    assert refused.refusal == (
        f"the sync would remove or disable 2 of {USERS} users (removed: frank, grace); max_deletions allows 1"
    )
    forced = await sync.sync_now(full=False, force=True)
    assert forced.applied and sync.snapshot.user("grace") is None
