"""Search result entries parsed off the wire (rolegate.directory.wire) read what ldap3's own decoder reads.

Messages are encoded here in BER (short and long lengths, big values, odd DNs) and each is read both ways: by
``parse_entry`` and by ldap3's decoder. A message that is not an entry, or not one to the byte, must go to ldap3.
"""

from __future__ import annotations

import random

import pytest

from ldap3.utils.asn1 import decode_message_fast

from rolegate.directory import receive, wire
from rolegate.directory.connection import connection

from .conftest import PEOPLE


def length(n: int, long_form: bool = False) -> bytes:
    if n < 0x80 and not long_form:
        return bytes([n])
    body = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes, long_form: bool = False) -> bytes:
    return bytes([tag]) + length(len(content), long_form) + content


def entry_message(
    message_id: int,
    dn: bytes,
    attributes: list[tuple[bytes, list[bytes]]],
    long_form: bool = False,
    controls: bytes = b"",
) -> bytes:
    parts = b"".join(
        tlv(
            0x30,
            tlv(0x04, name, long_form) + tlv(0x31, b"".join(tlv(0x04, v, long_form) for v in values), long_form),
            long_form,
        )
        for name, values in attributes
    )
    op = tlv(0x64, tlv(0x04, dn, long_form) + tlv(0x30, parts, long_form), long_form)
    mid = message_id.to_bytes(max(1, (message_id.bit_length() + 8) // 8), "big", signed=True)
    return tlv(0x30, tlv(0x02, mid) + op + controls, long_form)


def ldap3_reading(message: bytes) -> tuple[int, bytes, dict[str, list[bytes]]]:
    decoded = decode_message_fast(message)
    assert decoded["protocolOp"] == wire.SEARCH_RESULT_ENTRY
    payload = decoded["payload"]
    attributes = {bytes(a[3][0][3]).decode().lower(): [bytes(v[3]) for v in a[3][1][3]] for a in payload[1][3]}
    return decoded["messageID"], bytes(payload[0][3]), attributes


SAMPLES = [
    (7, b"uid=bob,ou=people,dc=example,dc=com", [(b"uid", [b"bob"]), (b"entryUUID", [b"1234"])]),
    (300, "cn=Gebäude Süd,dc=x".encode(), [(b"description", ["Ü".encode(), b"\xfe\xff\x00abc"])]),
    (2**31 - 1, b"", [(b"member", [f"uid=u{i:06d},ou=people".encode() for i in range(5000)])]),  # long lengths
    (1, b"dc=x", [(b"jpegPhoto", [bytes(range(256)) * 300])]),  # a value of 76,800 bytes
    (2, b"dc=x", [(b"empty", []), (b"Mail", [b""])]),
    (3, b"dc=x", []),
]


@pytest.mark.parametrize("long_form", [False, True])
@pytest.mark.parametrize("sample", SAMPLES, ids=[f"sample{i}" for i in range(len(SAMPLES))])
def test_an_entry_reads_the_same_as_ldap3_reads_it(sample, long_form) -> None:
    message = entry_message(*sample, long_form=long_form)
    assert wire.parse_entry(message) == ldap3_reading(message)
    names: dict[bytes, str] = {}
    assert wire.parse_entry(message, names) == wire.parse_entry(message, names) == ldap3_reading(message)


def test_an_entry_with_controls_reads_as_ldap3_reads_its_entry() -> None:
    control = tlv(0xA0, tlv(0x30, tlv(0x04, b"1.2.3.4")))
    message = entry_message(9, b"dc=x", [(b"uid", [b"a"])], controls=control)
    assert wire.parse_entry(message) == ldap3_reading(message)


def test_attribute_names_are_remembered_as_keyed_and_no_more_than_a_bound() -> None:
    names: dict[bytes, str] = {}
    message = entry_message(1, b"dc=x", [(b"Mail", [b"a@x"]), (b"UID", [b"a"])])
    assert wire.parse_entry(message, names)[2] == {"mail": [b"a@x"], "uid": [b"a"]}
    assert names == {b"Mail": "mail", b"UID": "uid"}
    many = entry_message(2, b"dc=x", [(f"a{i}".encode(), [b"v"]) for i in range(wire.MAX_NAMES + 50)])
    assert len(wire.parse_entry(many, names)[2]) == wire.MAX_NAMES + 50 and len(names) == wire.MAX_NAMES
    with pytest.raises(wire.Malformed):
        wire.parse_entry(entry_message(3, b"dc=x", [("mäil".encode(), [b"v"])]), names)


def test_other_messages_go_to_ldap3() -> None:
    done = tlv(0x30, tlv(0x02, b"\x05") + tlv(0x65, tlv(0x0A, b"\x00") + tlv(0x04, b"") + tlv(0x04, b"")))
    assert wire.parse_entry(done) is None


def test_every_truncation_and_a_thousand_corruptions_fail_cleanly() -> None:
    """Cut or flipped bytes: Malformed or None (then ldap3 decides), never another error, never a wrong entry."""
    message = entry_message(42, b"uid=bob,dc=x", [(b"uid", [b"bob"]), (b"cn", [b"Bob", b"Robert"])])
    for cut in range(len(message)):
        with pytest.raises((wire.Malformed, IndexError)):  # (the receive loop hands such a message to ldap3)
            wire.parse_entry(message[:cut])
    rng = random.Random(5)
    for _ in range(1000):
        broken = bytearray(message)
        broken[rng.randrange(len(broken))] = rng.randrange(256)
        try:
            parsed = wire.parse_entry(bytes(broken))
        except (wire.Malformed, IndexError):
            continue
        if parsed is not None:
            assert parsed == ldap3_reading(bytes(broken))  # a flip that keeps the shape reads as ldap3 reads it


def test_an_element_longer_than_its_container_is_malformed() -> None:
    """Each container's length bounds what it holds: an operation, a DN, an attribute or a value claiming more is
    Malformed, never bytes of the next element (here the controls after the entry) read as its own."""
    message = entry_message(1, b"uid=a,dc=x", [(b"uid", [b"a"]), (b"cn", [b"A"])])
    assert message[0] == 0x30 and message[2] == 0x02 and message[5] == 0x64  # short lengths throughout
    op_at, dn_at = 5, 7
    for at in (op_at, dn_at, len(message) - 3):  # the operation, the DN, the last value ("A")
        longer = bytearray(message)
        longer[at + 1] += 3
        with pytest.raises(wire.Malformed):
            wire.parse_entry(bytes(longer))
    # The last attribute (and its values) made 4 bytes longer, over controls shaped like a value: read as an
    # attribute of the entry, they would add "zz" to cn.
    controls = bytes([0xA0, 0x02, 0x04, 0x00])
    assert wire.parse_entry(entry_message(1, b"uid=a,dc=x", [(b"uid", [b"a"])], controls=controls)) is not None
    smuggled = bytearray(entry_message(1, b"uid=a,dc=x", [(b"uid", [b"a"]), (b"cn", [b"A"])], controls=controls))
    cn_at = len(smuggled) - len(controls) - 11  # 30 09 | 04 02 "cn" | 31 03 | 04 01 "A"
    assert smuggled[cn_at : cn_at + 3] == bytes([0x30, 0x09, 0x04]) and smuggled[cn_at + 6] == 0x31
    smuggled[cn_at + 1] += 4
    smuggled[cn_at + 7] += 4  # the SET
    smuggled[-4:] = bytes([0x04, 0x02]) + b"zz"
    with pytest.raises(wire.Malformed):
        wire.parse_entry(bytes(smuggled))


def test_indefinite_and_absurd_lengths_are_not_read() -> None:
    message = bytearray(entry_message(1, b"dc=x", [(b"uid", [b"a"])]))
    message[1] = 0x80  # indefinite length
    with pytest.raises(wire.Malformed):
        wire.parse_entry(bytes(message))
    huge = b"\x30\x85\x01\x00\x00\x00\x00" + bytes(10)
    with pytest.raises(wire.Malformed):
        wire.parse_entry(huge)


@pytest.mark.lab
def test_a_sync_connection_receives_its_entries_parsed(lab_slapd, config_for, monkeypatch) -> None:
    parsed = []
    original = receive.parse_entry

    def spy(message: bytes, names: dict[bytes, str]):
        entry = original(message, names)
        parsed.append(entry is not None)
        return entry

    with connection(config_for(lab_slapd)) as conn:
        monkeypatch.setattr(receive, "parse_entry", spy)
        conn.search(PEOPLE, "(objectClass=inetOrgPerson)", attributes=["uid"])
        entries = [e for e in conn.response if e["type"] == "searchResEntry"]
    assert len(entries) > 10 and parsed.count(True) == len(entries)
    assert all(e["raw_attributes"]["uid"] for e in entries)
