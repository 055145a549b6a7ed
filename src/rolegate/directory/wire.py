"""Search result entries read straight off the wire: the one LDAP message a full sync receives a million of.

ldap3's fast decoder walks every message through a generic BER decoder, a function call and a four-item tuple per
element: at a million users that is about forty seconds of a sync's sixty. A search result entry has one fixed
shape (RFC 4511 4.5.2)::

    LDAPMessage ::= SEQUENCE { messageID INTEGER,
                               [APPLICATION 4] SEQUENCE { objectName OCTET STRING,
                                                          attributes SEQUENCE OF SEQUENCE {
                                                              type OCTET STRING, vals SET OF OCTET STRING } },
                               [0] Controls OPTIONAL }

``parse_entry`` reads exactly that shape and nothing else; every other message, and any entry that does not follow
the shape to the byte (an indefinite length, a tag out of place, a length past its end), goes to ldap3's decoder as
before (``rolegate.directory.receive`` decides which). tests/directory/test_wire.py holds the parse equal to
ldap3's on every shape.
"""

from __future__ import annotations

SEQUENCE, INTEGER, OCTET_STRING, SET = 0x30, 0x02, 0x04, 0x31
SEARCH_RESULT_ENTRY_TAG = 0x64  # [APPLICATION 4], constructed
SEARCH_RESULT_ENTRY = 4  # its protocolOp number in ldap3's decoded messages
MAX_LENGTH_OCTETS = 4  # a length of more than 4 GiB is not an LDAP message rolegate reads
MAX_NAMES = 256  # attribute names remembered a read (a sync asks for a dozen; a server sending more gets no more room)

Entry = tuple[int, bytes, dict[str, list[bytes]]]  # message id, raw DN, raw values by attribute name (lower case)


class Malformed(Exception):
    """Not the shape of a search result entry: the message goes to ldap3's own decoder."""


def _long_length(message: bytes, at: int) -> tuple[int, int]:
    """A long-form BER length whose first octet is at ``at``: (length, index of the value)."""
    count = message[at] & 0x7F
    if count == 0 or count > MAX_LENGTH_OCTETS:
        raise Malformed("indefinite or oversized length")
    end = at + 1 + count
    if end > len(message):
        raise Malformed("truncated length")
    return int.from_bytes(message[at + 1 : end], "big"), end


def _element(message: bytes, at: int, tag: int, stop: int) -> tuple[int, int]:
    """The element at ``at`` must have ``tag`` and end by ``stop``: (index of its value, index past its end)."""
    if at + 2 > stop or message[at] != tag:
        raise Malformed(f"expected tag {tag:#x} at {at}")
    length = message[at + 1]
    if length < 0x80:
        start = at + 2
    else:
        length, start = _long_length(message, at + 1)
    end = start + length
    if end > stop:
        raise Malformed(f"element at {at} runs past its container")
    return start, end


def _octets(message: bytes, at: int, stop: int) -> tuple[bytes, int]:
    """The OCTET STRING at ``at``: (its value, index past it)."""
    start, end = _element(message, at, OCTET_STRING, stop)
    return message[start:end], end


def parse_entry(message: bytes, names: dict[bytes, str] | None = None) -> Entry | None:
    """(message id, raw DN, values by attribute) of a search result entry; None for any other message.

    Raises Malformed (or IndexError, for a header cut short) for a message that starts like an entry but does not
    follow the shape. ``names``: attribute names as sent -> as keyed, kept across the entries of one read.
    """
    # Every header is read inline, with the checks ``_element`` makes: a million entries of eight attributes are
    # thirty million elements, and a call apiece was half the parse. Lengths of one and two octets (every entry
    # and attribute of a directory's users) are read in place; longer ones by ``_long_length``.
    stop = len(message)
    if stop < 2 or message[0] != SEQUENCE:
        raise Malformed("expected the message's SEQUENCE")
    length = message[1]
    if length < 0x80:
        at = 2
    elif length == 0x81:
        length, at = message[2], 3
    elif length == 0x82:
        length, at = (message[2] << 8) | message[3], 4
    else:
        length, at = _long_length(message, 1)
    if at + length != stop:
        raise Malformed("bytes after the message")
    id_start, at = _element(message, at, INTEGER, stop)
    if at >= stop or message[at] != SEARCH_RESULT_ENTRY_TAG:
        return None
    if id_start == at or at - id_start > 4:
        raise Malformed("message id")
    message_id = int.from_bytes(message[id_start:at], "big", signed=True)
    length = message[at + 1]
    if length < 0x80:
        at += 2
    elif length == 0x81:
        length, at = message[at + 2], at + 3
    elif length == 0x82:
        length, at = (message[at + 2] << 8) | message[at + 3], at + 4
    else:
        length, at = _long_length(message, at + 1)
    op_end = at + length
    if op_end > stop:
        raise Malformed("the entry runs past its message")
    raw_dn, at = _octets(message, at, op_end)
    if at + 2 > op_end or message[at] != SEQUENCE:
        raise Malformed(f"expected the attributes at {at}")
    length = message[at + 1]
    if length < 0x80:
        at += 2
    elif length == 0x81:
        length, at = message[at + 2], at + 3
    elif length == 0x82:
        length, at = (message[at + 2] << 8) | message[at + 3], at + 4
    else:
        length, at = _long_length(message, at + 1)
    if at + length != op_end:
        raise Malformed("the attributes do not fill the entry")
    attributes: dict[str, list[bytes]] = {}
    if names is None:
        names = {}
    while at < op_end:
        if at + 2 > op_end or message[at] != SEQUENCE:
            raise Malformed(f"expected an attribute at {at}")
        length = message[at + 1]
        if length < 0x80:
            at += 2
        elif length == 0x81:
            length, at = message[at + 2], at + 3
        elif length == 0x82:
            length, at = (message[at + 2] << 8) | message[at + 3], at + 4
        else:
            length, at = _long_length(message, at + 1)
        attribute_end = at + length
        if attribute_end > op_end:
            raise Malformed(f"an attribute at {at} runs past the entry")
        if at + 2 > attribute_end or message[at] != OCTET_STRING:
            raise Malformed(f"expected an attribute type at {at}")
        length = message[at + 1]
        if length < 0x80:
            at += 2
        else:
            length, at = _long_length(message, at + 1)
        name = message[at : at + length]
        at += length
        if at + 2 > attribute_end or message[at] != SET:
            raise Malformed(f"expected the values at {at}")
        length = message[at + 1]
        if length < 0x80:
            at += 2
        elif length == 0x81:
            length, at = message[at + 2], at + 3
        elif length == 0x82:
            length, at = (message[at + 2] << 8) | message[at + 3], at + 4
        else:
            length, at = _long_length(message, at + 1)
        if at + length != attribute_end:
            raise Malformed(f"the values at {at} do not fill their attribute")
        values = []
        while at < attribute_end:
            if at + 2 > attribute_end or message[at] != OCTET_STRING:
                raise Malformed(f"expected a value at {at}")
            length = message[at + 1]
            if length < 0x80:
                at += 2
            else:
                length, at = _long_length(message, at + 1)
            end = at + length
            if end > attribute_end:
                raise Malformed(f"a value at {at} runs past its attribute")
            values.append(message[at:end])
            at = end
        key = names.get(name)
        if key is None:
            try:
                key = name.decode("ascii").lower()
            except UnicodeDecodeError:
                raise Malformed("an attribute name that is not ASCII") from None
            if len(names) < MAX_NAMES:
                names[name] = key
        attributes[key] = values
    return message_id, raw_dn, attributes
