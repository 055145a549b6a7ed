"""Entries that left since the last sync: deleted, moved out of the bases, or no longer matching a filter.

An incremental sync reads what changed (``modifyTimestamp`` / ``uSNChanged`` at or after the
watermark); a deleted entry changes nothing it could read, so without this module a deleted account
kept its access until the next full sync. Each directory offers something different:

- **Active Directory** keeps a deleted object as a tombstone in ``CN=Deleted Objects``, with its
  ``objectGUID`` and a fresh ``uSNChanged``. One search of the naming context with the Show Deleted
  control for ``(uSNChanged>=watermark)`` returns every object changed since, deleted ones included:
  cost in proportion to the changes. Tombstones are visible only to accounts granted List Contents and
  Read Property on ``CN=Deleted Objects``; when the service account sees none, the id listing below
  is used instead (and a warning says how to grant it).
- **OpenLDAP** keeps nothing of a deleted entry, but its ``accesslog`` overlay records every write.
  With ``directory.accesslog`` naming that log database, one search of it for the writes since the
  watermark returns the ``reqEntryUUID`` of every entry deleted, renamed or modified: again in
  proportion to the changes.
- **The id listing** works on any directory: every id under the bases, through the filters (a paged
  search for one attribute). A known id no longer listed has left. It costs in proportion to the
  directory (measured by ``bench/bench_directory.py``).

Either way the answer is a ``Departures``: ids changed anywhere since the watermark (``changed``),
and/or every id in scope now (``listed``). The builder drops a known entry that is changed-anywhere
but absent from this run's in-scope read, or missing from the listing. This search runs *before* the
in-scope reads: an entry changed after it and still in scope is then read (not dropped), and one that
left after it is seen by the next run (the watermark was taken before both).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal

import ldap3
from ldap3.core.exceptions import LDAPException, LDAPOperationResult
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from rolegate.directory.builder import Issues
from rolegate.directory.connection import describe
from rolegate.directory.errors import DirectoryUnavailable
from rolegate.directory.presets import DirectorySchema
from rolegate.directory.values import decode_text

log = logging.getLogger("rolegate.directory")

SHOW_DELETED = "1.2.840.113556.1.4.417"  # LDAP_SERVER_SHOW_DELETED_OID
# The well-known GUID of an AD naming context's Deleted Objects container (MS-ADTS 6.1.1.4).
DELETED_OBJECTS_WKGUID = "18E2EA80684F11D2B9AA00C04F79F805"
# accesslog entries of the writes that can take an entry out of the sync's view.
ACCESSLOG_WRITES = "(|(objectClass=auditDelete)(objectClass=auditModRDN)(objectClass=auditModify))"

Method = Literal["tombstones", "accesslog", "id listing"]
_warned: set[tuple[str, str]] = set()  # (what, where): each fallback is explained once per process


@dataclass(slots=True)
class Departures:
    """What an incremental read learned about entries that may have left the sync's view."""

    method: Method
    changed: set[str] = field(default_factory=set)  # ids changed anywhere since the watermark
    listed: set[str] | None = None  # every user and group id in scope now (the id listing)

    def gone(self, known: Collection[str], kept: set[str] | frozenset[str]) -> list[str]:
        """Which of the ``known`` ids have left, given the ids this run read and ``kept``."""
        listed, changed = self.listed, self.changed
        if listed is None:  # only an entry that changed can have left: no pass over a million known ids
            return [i for i in changed if i in known and i not in kept]
        return [i for i in known if i not in kept and (i in changed or i not in listed)]


def read_departures(conn: ldap3.Connection, schema: DirectorySchema, since: str, page_size: int) -> Departures:
    """Departures since ``since`` (the incremental watermark); raises DirectoryUnavailable."""
    # Imported here, not at the top: reader imports this module (read_directory runs this first).
    from rolegate.directory.reader import entry_id, paged

    if schema.preset == "active_directory" and schema.change_is_integer:
        contexts = naming_contexts(schema)
        if all(tombstones_visible(conn, nc) for nc in contexts):
            departures = Departures("tombstones")
            for nc in contexts:
                query = f"({schema.change_attribute}>={escape_filter_chars(since)})"
                for dn, attrs in paged(
                    conn, nc, query, [schema.id_attribute], page_size, controls=[(SHOW_DELETED, True, None)]
                ):
                    departures.changed.add(entry_id(schema, dn, attrs, Issues()))
            return departures
        _warn_once(
            "tombstones",
            schema.users_base,
            "directory: the service account sees no deleted objects in CN=Deleted Objects of %s, so every "
            "incremental sync lists all ids to find deletions; grant it List Contents and Read Property "
            "there (see docs/directory.md) to make this cheap",
            ", ".join(contexts),
        )
    elif schema.accesslog:
        found = _accesslog(conn, schema, since, page_size)
        if found is not None:
            return found
    return list_ids(conn, schema, page_size)


def list_ids(conn: ldap3.Connection, schema: DirectorySchema, page_size: int) -> Departures:
    """Every user and group id in scope now: one paged search per base for the id attribute alone."""
    from rolegate.directory.reader import entry_id, paged  # reader imports this module: a cycle at the top

    listed: set[str] = set()
    for base, query in ((schema.users_base, schema.users_filter), (schema.groups_base, schema.groups_filter)):
        for dn, attrs in paged(conn, base, query, [schema.id_attribute], page_size):
            listed.add(entry_id(schema, dn, attrs, Issues()))
    return Departures("id listing", listed=listed)


def naming_contexts(schema: DirectorySchema) -> list[str]:
    """The AD domain naming context(s) holding the bases: their trailing ``DC=`` components."""
    found: list[str] = []
    for base in (schema.users_base, schema.groups_base):
        parts = parse_dn(base)
        tail: list[str] = []
        for attribute, value, _sep in reversed(parts):
            if attribute.lower() != "dc":
                break
            tail.append(f"{attribute}={value}")
        nc = ",".join(reversed(tail))
        if not nc:
            raise DirectoryUnavailable(f"{base} is under no DC= naming context; cannot find its deleted objects")
        if nc.lower() not in (f.lower() for f in found):
            found.append(nc)
    return found


def tombstones_visible(conn: ldap3.Connection, nc: str) -> bool:
    """True when the service account can see at least one deleted object in ``nc``.

    AD answers a search it may not show with no entries rather than an error, so "none visible" is all
    there is to go on: a domain with no tombstones yet (they live 180 days) reads the same as an
    account without the right, and both get the id listing, which is correct either way.
    """
    try:
        conn.search(
            f"<WKGUID={DELETED_OBJECTS_WKGUID},{nc}>",
            "(isDeleted=TRUE)",
            search_scope=ldap3.LEVEL,
            attributes=["objectGUID"],
            size_limit=1,
            controls=[(SHOW_DELETED, True, None)],
        )
    except LDAPOperationResult:
        return False  # the server answered no (no such container, not AD at all): list the ids instead
    except LDAPException as exc:
        raise DirectoryUnavailable(f"search of the deleted objects of {nc} failed: {describe(exc)}") from None
    return any(item.get("type") == "searchResEntry" for item in conn.response or ())


def _accesslog(conn: ldap3.Connection, schema: DirectorySchema, since: str, page_size: int) -> Departures | None:
    """Ids written since ``since`` according to the accesslog; None (warned) when it cannot be read."""
    from rolegate.directory.reader import paged  # reader imports this module: a cycle at the top

    log_base = schema.accesslog
    assert log_base is not None
    try:
        conn.search(log_base, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["objectClass"])
        readable = any(item.get("type") == "searchResEntry" for item in conn.response or ())
    except LDAPOperationResult:
        readable = False  # no such entry, no access, ...: the server answered, the log is not there for us
    except LDAPException as exc:
        raise DirectoryUnavailable(f"search of the accesslog {log_base} failed: {describe(exc)}") from None
    if not readable:
        _warn_once(
            "accesslog",
            log_base,
            "directory: the accesslog %s cannot be read by the service account; "
            "every incremental sync lists all ids to find deletions until it can",
            log_base,
        )
        return None
    departures = Departures("accesslog")
    query = f"(&{ACCESSLOG_WRITES}(reqStart>={escape_filter_chars(since)}))"
    for _dn, attrs in paged(conn, log_base, query, ["reqEntryUUID", "reqResult"], page_size, scope=ldap3.LEVEL):
        result = attrs.get("reqresult")
        if result and result[0] not in (b"0", "0"):
            continue  # a write the server refused changed nothing
        values = attrs.get("reqentryuuid")
        if not values:
            # Without reqEntryUUID (OpenLDAP before 2.5) a write cannot be tied to a known entry: the
            # listing is the only safe answer.
            _warn_once(
                "accesslog-uuid",
                log_base,
                "directory: the accesslog %s records no reqEntryUUID "
                "(OpenLDAP 2.5 or later does); listing all ids to find deletions instead",
                log_base,
            )
            return None
        text = decode_text(values[0])
        if text:
            departures.changed.add(text)
    return departures


def _warn_once(what: str, where: str, message: str, *args: object) -> None:
    if (what, where) not in _warned:
        _warned.add((what, where))
        log.warning(message, *args)
