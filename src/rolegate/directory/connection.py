"""Opening one bound ldap3 connection: LDAPS or StartTLS with a CA file, timeouts, fail closed.

A sync run opens one connection and reuses it for every search of that run, then closes it.
No pool: runs are seconds apart at most once per ``interval``, so setup (TCP, TLS, bind: a few
milliseconds) is noise, while a pooled idle connection is exactly what firewalls and directory
idle timeouts cut, turning the next run's first search into a spurious failure. A fresh
connection per run also picks up a rotated password or CA, and a broken one never outlives it.
"""

from __future__ import annotations

import math
import ssl
from contextlib import contextmanager
from collections.abc import Iterator
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import to_unicode

from rolegate.config.sections.directory import DirectoryConfig
from rolegate.directory.errors import DirectoryUnavailable
from rolegate.directory.receive import install_receiver
from rolegate.directory.wire import SEARCH_RESULT_ENTRY


def make_server(config: DirectoryConfig) -> ldap3.Server:
    """The ldap3 Server for ``config.url`` with TLS verification when TLS is in play."""
    tls = None
    if config.url.startswith("ldaps://") or config.start_tls:
        # Always verify the directory's certificate: a sync over an unverified channel would let
        # anyone on the path rewrite group memberships.
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT, ca_certs_file=config.ca_file)
    return ldap3.Server(
        config.url, tls=tls, get_info=ldap3.NONE, connect_timeout=max(0.1, config.connect_timeout.total_seconds())
    )


def open_connection(config: DirectoryConfig) -> ldap3.Connection:
    """A bound connection; raises DirectoryUnavailable (never with the password in it)."""
    password = config.bind_password.get_secret_value() if config.bind_password else None
    try:
        conn = ldap3.Connection(
            make_server(config),
            user=config.bind_dn,
            password=password,
            authentication=ldap3.SIMPLE if config.bind_dn else ldap3.ANONYMOUS,
            auto_bind=ldap3.AUTO_BIND_NONE,
            read_only=True,
            raise_exceptions=True,
            # ldap3 packs this into SO_RCVTIMEO as whole seconds
            receive_timeout=max(1, math.ceil(config.timeout.total_seconds())),
            return_empty_attributes=False,
            auto_referrals=False,
            # We read raw values only; skipping ldap3's per-value formatting halves the decode cost.
            # Filters and DNs we send are built with escape_filter_chars, not checked names.
            check_names=False,
            # AD's ranged answers (member;range=0-1499) are followed by rolegate.directory.ranged, which
            # checks every range joins the last and fails the run when one does not. ldap3's own
            # auto_range would merge them first, unchecked (a range it cannot follow ends in an
            # IndexError, a gap goes unnoticed), and leave ours nothing to check.
            auto_range=False,
        )
        read_raw_entries(conn)
        conn.open()
        if config.start_tls:
            conn.start_tls()
        conn.bind()
    except LDAPException as exc:
        raise DirectoryUnavailable(f"cannot bind to {config.url}: {describe(exc)}") from None
    except (OSError, ssl.SSLError) as exc:
        raise DirectoryUnavailable(f"cannot reach {config.url}: {type(exc).__name__}: {exc}") from None
    return conn


# Set in an entry whose raw_attributes are a plain dict of lists keyed in lower case (``read_raw_entries``): a
# reader can take it as it is instead of copying it (a million entries a full sync).
RAW_IN_LOWER_CASE = "rolegate_raw_in_lower_case"


def read_raw_entries(conn: ldap3.Connection) -> None:
    """Entries of this connection's searches carry their raw values only (``raw_attributes``, names in lower
    case), not ldap3's formatted ``attributes`` too, which rolegate never reads.

    ldap3 decodes every value of an entry twice, as bytes and as text through ``to_unicode``, which asks its
    config for every value: a quarter of a full sync's time (100,000 users: 12.7 s with it, 9.6 s without). This replaces, on this
    connection's strategy object only, the method that turns a decoded search entry into its dict; every other
    answer (results, controls, referrals, binds) goes through ldap3's own. ldap3's internals are pinned in
    pyproject.toml; tests/directory/test_raw_entries.py compares the entries with ldap3's own on a live slapd
    and fails with a clear message on a version whose internals moved. A strategy without the method (another
    ldap3) keeps ldap3's decoding.
    """
    strategy = conn.strategy
    own = getattr(strategy, "decode_response_fast", None)
    if own is None:
        return

    def decode(message: Any) -> Any:
        if message["protocolOp"] != SEARCH_RESULT_ENTRY:
            return own(message)
        payload = message["payload"]
        raw = {}
        for attribute in payload[1][3]:
            parts = attribute[3]
            raw[to_unicode(parts[0][3], from_server=True).lower()] = [bytes(value[3]) for value in parts[1][3]]
        return raw_entry(payload[0][3], raw)

    strategy.decode_response_fast = decode
    # Entries parsed off the wire (rolegate.directory.wire) by rolegate's receive loop; the rest decoded as above.
    install_receiver(conn, raw_entry)


def raw_entry(raw_dn: bytes, raw: dict[str, list[bytes]]) -> dict[str, Any]:
    """ldap3's dict of a search result entry, with raw values only (keyed in lower case)."""
    try:
        dn = raw_dn.decode("utf-8")
    except UnicodeDecodeError:
        dn = to_unicode(raw_dn, from_server=True)  # ldap3's fallback encodings, as its own decoder would
    return {
        "type": "searchResEntry",
        "raw_dn": raw_dn,
        "dn": dn,
        "raw_attributes": raw,
        "attributes": {},
        RAW_IN_LOWER_CASE: True,
    }


@contextmanager
def connection(config: DirectoryConfig) -> Iterator[ldap3.Connection]:
    """One bound connection for the duration of a block, always unbound afterwards."""
    conn = open_connection(config)
    try:
        yield conn
    finally:
        try:
            conn.unbind()
        except Exception:  # noqa: BLE001 - the server may already be gone; nothing to save
            pass


def describe(exc: BaseException) -> str:
    """A log-safe one-liner for an ldap3 error (ldap3 messages never include the password)."""
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
