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

import ldap3
from ldap3.core.exceptions import LDAPException

from rolegate.config.sections.directory import DirectoryConfig
from rolegate.directory.errors import DirectoryUnavailable


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
        conn.open()
        if config.start_tls:
            conn.start_tls()
        conn.bind()
    except LDAPException as exc:
        raise DirectoryUnavailable(f"cannot bind to {config.url}: {describe(exc)}") from None
    except (OSError, ssl.SSLError) as exc:
        raise DirectoryUnavailable(f"cannot reach {config.url}: {type(exc).__name__}: {exc}") from None
    return conn


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
