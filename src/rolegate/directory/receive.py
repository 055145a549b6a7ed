"""The receive loop of rolegate's sync connections: messages framed out of large reads, entries parsed off the wire.

ldap3's sync strategy receives in 4 KiB reads, works out each message's length through a generic helper, slices
its buffer again after every message and decodes every message the generic way before looking at its id: at a
million users a fifth of a full sync's read went there, beside the parse itself. ``receive_response`` does what
ldap3's ``SyncStrategy._get_response`` does, for one connection, with less work a message:

* the socket is read 256 KiB at a time and messages are framed by offset (a message's bytes are copied once);
* a search result entry of the awaited message id is parsed by ``rolegate.directory.wire.parse_entry`` into the
  dict rolegate's reader takes (raw values, names in lower case: ``connection.read_raw_entries``'s shape);
* every other message (results, references, controls, binds, notices) and any entry the parse does not take goes
  through ldap3's own decoding and ldap3's own rules: a message of another id fails the read, a notice of
  disconnection ends the session, and so on.

A message whose length cannot be an LDAP message (indefinite, over 4 GiB) fails the read rather than being
guessed at. A connection that signs with SASL (DIGEST-MD5 integrity) or uses ldap3's slow decoder keeps ldap3's loop
(rolegate's bind simply, with the fast one).
tests/directory/test_receive.py holds the loop to ldap3's on a live slapd and on a scripted server that splits
and joins messages every way.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from ldap3 import DIGEST_MD5
from ldap3.core.exceptions import LDAPExtensionError, LDAPSocketReceiveError
from ldap3.strategy.base import RESPONSE_COMPLETE, SESSION_TERMINATED_BY_SERVER, TRANSACTION_ERROR
from ldap3.strategy.sync import SyncStrategy
from ldap3.utils.asn1 import decode_message_fast

from rolegate.directory.wire import MAX_LENGTH_OCTETS, Malformed, parse_entry

READ_SIZE = 256 * 1024
DISCONNECTION = "1.3.6.1.4.1.1466.20036"  # RFC 4511 4.4.1: Notice of Disconnection
NOVELL_TRANSACTION_ERROR = "2.16.840.1.113719.1.27.103.4"
CONTINUING = frozenset({"searchResEntry", "searchResRef", "intermediateResponse"})

Entry = Callable[[bytes, dict[str, list[bytes]]], dict[str, Any]]


class _Framer:
    """Complete messages out of a socket's bytes, in order; the bytes of a message not yet whole are kept."""

    __slots__ = ("sock", "buffer", "at")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.at = 0

    def next(self) -> bytes | None:
        """The next whole message in the buffer, or None when it holds none (then call ``more``)."""
        buffer, at = self.buffer, self.at
        if at + 2 > len(buffer):
            return None
        length = buffer[at + 1]
        start = at + 2
        if length >= 0x80:
            count = length & 0x7F
            if count == 0 or count > MAX_LENGTH_OCTETS:
                raise LDAPSocketReceiveError("a message with an indefinite or oversized length")
            start += count
            if start > len(buffer):
                return None
            length = int.from_bytes(buffer[at + 2 : start], "big")
        end = start + length
        if end > len(buffer):
            return None
        self.at = end
        return buffer[at:end]

    def more(self) -> bool:
        """Reads what the server sent since; False when it closed the connection."""
        data = self.sock.recv(READ_SIZE)
        if not data:
            return False
        rest = self.buffer[self.at :]
        # (a message larger than a read, a group of 100,000 members, grows by whole reads: each join copies it
        # once more, a few times a message)
        self.buffer = rest + data if rest else data
        self.at = 0
        return True

    def leftover(self) -> int:
        return len(self.buffer) - self.at


def install_receiver(conn: Any, entry: Entry) -> bool:
    """Route this connection's responses through ``receive_response``; ``entry(raw_dn, raw_attributes)`` makes a
    parsed entry's dict. False (ldap3's loop kept) for a strategy that is not ldap3's sync one."""
    strategy = conn.strategy
    if type(strategy) is not SyncStrategy:  # (its subclasses receive their own way)
        return False
    own = strategy._get_response

    def get_response(message_id: int, timeout: Any) -> Any:
        if conn.sasl_mechanism == DIGEST_MD5 or not conn.fast_decoder:
            return own(message_id, timeout)
        return receive_response(conn, strategy, message_id, entry)

    strategy._get_response = get_response
    return True


def receive_response(conn: Any, strategy: Any, message_id: int, entry: Entry) -> Any:
    """Every message answering ``message_id``, the way ldap3's ``SyncStrategy._get_response`` returns them."""
    framer = _Framer(conn.socket)
    responses: list[Any] = []
    names: dict[bytes, str] = {}
    usage = conn._usage if conn.usage else None
    while True:
        message = framer.next()
        if message is None:
            try:
                if not framer.more():
                    return SESSION_TERMINATED_BY_SERVER
            except (OSError, AttributeError) as exc:
                conn.last_error = f"error receiving data: {exc}"
                try:
                    strategy.close()
                except Exception:  # noqa: BLE001 - the socket is gone already; the error below says so
                    pass
                raise LDAPSocketReceiveError(conn.last_error) from None
            continue
        if usage is not None:
            usage.update_received_message(len(message))
        try:
            parsed = parse_entry(message, names)
        except (Malformed, IndexError):
            parsed = None
        if parsed is not None and parsed[0] == message_id:
            responses.append(entry(parsed[1], parsed[2]))
            continue
        decoded = decode_message_fast(message)
        response = strategy.decode_response_fast(decoded)
        got = int(decoded["messageID"])
        if got == message_id:
            responses.append(response)
            if response["type"] not in CONTINUING:
                if framer.leftover():
                    conn.last_error = "data after the last message of a response"
                    raise LDAPSocketReceiveError(conn.last_error)
                responses.append(RESPONSE_COMPLETE)
                return responses
        elif got == 0:  # unsolicited notification (RFC 4511 4.4)
            if response.get("responseName") == DISCONNECTION:
                return SESSION_TERMINATED_BY_SERVER
            if response.get("responseName") == NOVELL_TRANSACTION_ERROR:
                return TRANSACTION_ERROR
            conn.last_error = "unknown unsolicited notification from server"
            raise LDAPSocketReceiveError(conn.last_error)
        elif response["type"] == "extendedResp":
            conn.last_error = "multiple extended responses to a single extended request"
            raise LDAPExtensionError(conn.last_error)
        else:
            conn.last_error = "invalid messageId received"
            raise LDAPSocketReceiveError(conn.last_error)
