"""rolegate's receive loop (directory/receive.py) against a scripted LDAP server on 127.0.0.1.

The server binds whoever asks, then answers one search with bytes written here, cut into reads of every size: a byte
at a time, at random, a message larger than the loop's own read. A sync connection (ldap3 with rolegate's loop)
must read exactly the entries sent, and fail the read, never guess, on a message of another id, an indefinite
length, a server that hangs up mid-message or bytes after the last message. The same loop against a real slapd:
tests/directory/test_raw_entries.py and test_wire.py.
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from ldap3.core.exceptions import LDAPException, LDAPSessionTerminatedByServerError, LDAPSocketReceiveError

from rolegate.directory import receive
from rolegate.directory.connection import connection

from .conftest import make_config
from .test_wire import entry_message, ldap3_reading, tlv

Script = Callable[[int], bytes]  # the search's message id -> every byte of the answer


def integer(value: int) -> bytes:
    return tlv(0x02, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def done(message_id: int, code: int = 0) -> bytes:
    return tlv(0x30, integer(message_id) + tlv(0x65, tlv(0x0A, bytes([code])) + tlv(0x04, b"") + tlv(0x04, b"")))


def notice_of_disconnection() -> bytes:
    name = tlv(0x8A, receive.DISCONNECTION.encode())
    return tlv(0x30, integer(0) + tlv(0x78, tlv(0x0A, b"\x34") + tlv(0x04, b"") + tlv(0x04, b"") + name))


def read_message(sock: socket.socket) -> tuple[int, int]:
    """(message id, operation tag) of the next request; every request here has short, one-octet headers or long
    ones of the first level only."""
    head = sock.recv(2, socket.MSG_WAITALL)
    length = head[1]
    if length & 0x80:
        length = int.from_bytes(sock.recv(length & 0x7F, socket.MSG_WAITALL), "big")
    body = sock.recv(length, socket.MSG_WAITALL)
    id_length = body[1]
    return int.from_bytes(body[2 : 2 + id_length], "big"), body[2 + id_length]


class ScriptedServer:
    """Binds anyone, answers the first search with ``script``'s bytes in reads of ``cut``'s sizes."""

    def __init__(self, script: Script, cut: Callable[[bytes], Iterator[bytes]], hang_up: bool = False) -> None:
        self.script, self.cut, self.hang_up = script, cut, hang_up
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"ldap://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        sock, _ = self.listener.accept()
        with sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            message_id, _ = read_message(sock)  # the bind
            bind = tlv(0x61, tlv(0x0A, b"\x00") + tlv(0x04, b"") + tlv(0x04, b""))
            sock.sendall(tlv(0x30, integer(message_id) + bind))
            message_id, tag = read_message(sock)
            assert tag == 0x63, f"expected a search, got {tag:#x}"
            for piece in self.cut(self.script(message_id)):
                sock.sendall(piece)
            if self.hang_up:
                return
            try:
                read_message(sock)  # the unbind, or the client gone
            except (OSError, IndexError):
                pass

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=5)


def whole(data: bytes) -> Iterator[bytes]:
    yield data


def bytewise(data: bytes) -> Iterator[bytes]:
    for at in range(len(data)):
        yield data[at : at + 1]


def at_random(seed: int) -> Callable[[bytes], Iterator[bytes]]:
    def cut(data: bytes) -> Iterator[bytes]:
        rng = random.Random(seed)
        at = 0
        while at < len(data):
            size = rng.choice((1, 2, 3, 7, 100, 1500, 70_000))
            yield data[at : at + size]
            at += size

    return cut


def search(server: ScriptedServer) -> list[dict]:
    config = make_config(type("Lab", (), {"url": server.url, "service_dn": "cn=x", "service_password": "x"}))
    try:
        with connection(config) as conn:
            conn.search("dc=x", "(objectClass=*)", attributes=["uid"])
            return [e for e in conn.response if e["type"] == "searchResEntry"]
    finally:
        server.close()


ENTRIES = [
    (f"uid=u{i},ou=people,dc=x".encode(), [(b"uid", [f"u{i}".encode()]), (b"mail", [f"u{i}@x".encode()])])
    for i in range(200)
]
BIG = (b"cn=big,dc=x", [(b"member", [f"uid=member{i:07d},ou=people,dc=x".encode() for i in range(20_000)])])


def company(message_id: int) -> bytes:
    """200 users, a group of 20,000 members (larger than a read of the loop's), one entry in long-form lengths."""
    messages = [entry_message(message_id, dn, attributes) for dn, attributes in ENTRIES]
    messages.insert(100, entry_message(message_id, *BIG))
    messages.append(entry_message(message_id, b"uid=long,dc=x", [(b"uid", [b"long"])], long_form=True))
    return b"".join(messages) + done(message_id)


def expected() -> list[tuple[bytes, dict[str, list[bytes]]]]:
    every = [entry_message(1, dn, attributes) for dn, attributes in ENTRIES]
    every.insert(100, entry_message(1, *BIG))
    every.append(entry_message(1, b"uid=long,dc=x", [(b"uid", [b"long"])], long_form=True))
    return [ldap3_reading(message)[1:] for message in every]


@pytest.mark.parametrize("cut", [whole, at_random(1), at_random(2)], ids=["whole", "random1", "random2"])
def test_entries_cut_every_way_read_as_sent(cut) -> None:
    assert len(entry_message(1, *BIG)) > receive.READ_SIZE
    got = [(e["raw_dn"], e["raw_attributes"]) for e in search(ScriptedServer(company, cut))]
    assert got == expected()


def test_entries_sent_a_byte_at_a_time_read_as_sent() -> None:
    def small(message_id: int) -> bytes:
        return b"".join(entry_message(message_id, dn, attrs) for dn, attrs in ENTRIES[:5]) + done(message_id)

    got = [(e["raw_dn"], e["raw_attributes"]) for e in search(ScriptedServer(small, bytewise))]
    assert got == expected()[:5]


def test_an_entry_the_parse_does_not_take_is_read_the_ldap3_way() -> None:
    """An attribute name that is not ASCII: not the parse's shape; ldap3 decodes it and the read goes on."""

    def odd(message_id: int) -> bytes:
        return entry_message(message_id, b"uid=a,dc=x", [("Bür".encode(), [b"v"])]) + done(message_id)

    (entry,) = search(ScriptedServer(odd, whole))
    assert entry["raw_attributes"] == {"bür": [b"v"]} and entry["dn"] == "uid=a,dc=x"


def test_an_entry_of_another_message_id_fails_the_read() -> None:
    def stray(message_id: int) -> bytes:
        return entry_message(message_id + 7, b"uid=a,dc=x", [(b"uid", [b"a"])]) + done(message_id)

    with pytest.raises(LDAPSocketReceiveError, match="invalid messageId"):
        search(ScriptedServer(stray, whole))


def test_an_indefinite_length_fails_the_read() -> None:
    def indefinite(message_id: int) -> bytes:
        message = bytearray(entry_message(message_id, b"uid=a,dc=x", [(b"uid", [b"a"])]))
        message[1] = 0x80
        return bytes(message) + done(message_id)

    with pytest.raises(LDAPSocketReceiveError, match="indefinite"):
        search(ScriptedServer(indefinite, whole))


def test_a_server_hanging_up_mid_message_ends_the_session() -> None:
    def cut_short(message_id: int) -> bytes:
        return entry_message(message_id, *BIG)[:-10]

    with pytest.raises(LDAPSessionTerminatedByServerError):
        search(ScriptedServer(cut_short, at_random(3), hang_up=True))


def test_a_notice_of_disconnection_ends_the_session() -> None:
    def notice(message_id: int) -> bytes:
        return entry_message(message_id, b"uid=a,dc=x", [(b"uid", [b"a"])]) + notice_of_disconnection()

    with pytest.raises(LDAPSessionTerminatedByServerError):
        search(ScriptedServer(notice, whole))


def test_bytes_after_the_last_message_fail_the_read() -> None:
    def trailing(message_id: int) -> bytes:
        return done(message_id) + entry_message(message_id, b"uid=late,dc=x", [(b"uid", [b"late"])])

    with pytest.raises(LDAPSocketReceiveError, match="after the last message"):
        search(ScriptedServer(trailing, whole))


def test_a_failed_search_result_still_raises() -> None:
    def refused(message_id: int) -> bytes:
        return done(message_id, code=50)  # insufficientAccessRights

    with pytest.raises(LDAPException, match="insufficientAccessRights"):
        search(ScriptedServer(refused, whole))
