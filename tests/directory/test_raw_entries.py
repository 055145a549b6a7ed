"""Sync connections read raw values only (directory/connection.py ``read_raw_entries``), the same as ldap3's.

The hook replaces one method of ldap3's strategy object on rolegate's connections; an ldap3 whose internals
moved must fail here, naming what moved, not change what a sync reads.
"""

from __future__ import annotations

from importlib import metadata

import ldap3
import pytest

from rolegate.directory.connection import SEARCH_RESULT_ENTRY, connection, open_connection

from .conftest import PEOPLE, group_ldif, people_ldif, user_dn

pytestmark = pytest.mark.lab

ATTRIBUTES = ["entryUUID", "uid", "cn", "mail", "member", "modifyTimestamp", "description", "jpegPhoto", "objectClass"]


def entries(conn: ldap3.Connection, base: str) -> dict[str, tuple[str, dict[str, list[bytes]]]]:
    conn.search(base, "(objectClass=*)", attributes=ATTRIBUTES)
    out = {}
    for item in conn.response or ():
        if item.get("type") == "searchResEntry":
            raw = {str(k).lower(): sorted(bytes(v) for v in values) for k, values in item["raw_attributes"].items()}
            out[item["dn"]] = (item["dn"], raw)
    return out


def test_raw_entries_equal_what_ldap3_decodes(fresh_slapd, config_for) -> None:
    """Every entry of the company directory, bytes that are not UTF-8 (with a NUL) and non-ASCII text included."""
    fresh_slapd.ldapadd(
        people_ldif(["rawcheck"], extra="jpegPhoto:: /v8AYWJj\ndescription: Gebäude Süd, Ü\n")
        + group_ldif("raw-group", [user_dn("rawcheck"), user_dn("bob")])
    )
    config = config_for(fresh_slapd)
    ours = open_connection(config)
    plain = open_connection(config)
    for hook in ("decode_response_fast", "_get_response"):  # ldap3's own decoding and receive loop
        del vars(plain.strategy)[hook]
    try:
        base = PEOPLE.split(",", 1)[1]
        got, want = entries(ours, base), entries(plain, base)
        assert got == want and len(got) > 20
        rawcheck = got[f"uid=rawcheck,{PEOPLE}"][1]
        assert rawcheck["jpegphoto"] == [b"\xfe\xff\x00abc"] and rawcheck["description"] == ["Gebäude Süd, Ü".encode()]
        assert ours.response[0].get("attributes") == {}  # the formatted copy is not made
    finally:
        ours.unbind()
        plain.unbind()


def test_the_ldap3_internals_the_hook_replaces_are_there() -> None:
    """pyproject.toml bounds ldap3 to the minor version tested; an upgrade that moved these fails here."""
    version = f"ldap3 {metadata.version('ldap3')}"
    from ldap3.strategy.base import BaseStrategy
    from ldap3.strategy.sync import SyncStrategy

    assert hasattr(BaseStrategy, "decode_response_fast"), f"{version}: BaseStrategy.decode_response_fast moved"
    source = __import__("inspect").getsource(SyncStrategy._get_response)
    assert "self.decode_response_fast(" in source, f"{version}: SyncStrategy no longer decodes through the method"
    # what rolegate.directory.receive stands in for, and answers as
    assert list(__import__("inspect").signature(SyncStrategy._get_response).parameters) == [
        "self",
        "message_id",
        "timeout",
    ], f"{version}: SyncStrategy._get_response takes other arguments"
    assert "self.connection.socket.recv(" in __import__("inspect").getsource(SyncStrategy.receiving)
    assert "RESPONSE_COMPLETE" in source and "SESSION_TERMINATED_BY_SERVER" in source, f"{version}: answers moved"
    from ldap3.operation import search

    entry = __import__("inspect").getsource(search.search_result_entry_response_to_dict_fast)
    assert "response[1][3]" in entry and "response[0][3]" in entry, f"{version}: a search entry's shape moved"
    assert SEARCH_RESULT_ENTRY == 4


def test_connections_of_a_sync_use_the_hook(lab_slapd, config_for) -> None:
    with connection(config_for(lab_slapd)) as conn:
        assert "decode_response_fast" in vars(conn.strategy) and "_get_response" in vars(conn.strategy)
        conn.search(PEOPLE, "(uid=bob)", attributes=["uid"])
        (bob,) = [e for e in conn.response if e["type"] == "searchResEntry"]
        assert bob["raw_attributes"] == {"uid": [b"bob"]} and bob["dn"] == user_dn("bob")
