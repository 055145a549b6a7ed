"""Reading users and groups with ldap3: paged searches, attribute maps, ranged members.

Blocking code: callers run it in a thread (``asyncio.to_thread``). Any failure raises
``DirectoryUnavailable`` and the caller discards whatever was read: partial results are
never applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from rolegate.directory.builder import Issues, RawGroup, RawUser, share_values
from rolegate.directory.model import NO_ATTRIBUTES, DirectoryUser
from rolegate.directory.connection import RAW_IN_LOWER_CASE, describe
from rolegate.directory.departures import Departures, read_departures
from rolegate.directory.errors import DirectoryUnavailable
from rolegate.directory.presets import AD_ACCOUNT_DISABLED, DirectorySchema
from rolegate.directory.ranged import RangeError, collect_values
from rolegate.directory.values import (
    decode_lenient,
    decode_text,
    format_guid,
    normalize_dn,
    parse_change_time,
    parse_int,
)

Progress = Callable[[str, int], None]  # (what, entries so far)
PROGRESS_EVERY = 1000


@dataclass(slots=True)
class Watermark:
    """The highest change value seen in a run (generalized time as epoch seconds, or a USN)."""

    integer: bool
    highest: float | None = None
    # The largest value seen in the plain form ``YYYYMMDDHHMMSSZ`` (every one OpenLDAP writes): such values order
    # as their bytes do, so an entry whose stamp is not above it costs a comparison, not a parse (a million a run).
    plain: bytes = b""

    def see(self, raw: Sequence[bytes] | None) -> None:
        if not raw:
            return
        first = raw[0]
        if not self.integer and len(first) == 15 and first[14] == 0x5A and first[:14].isdigit():
            if first <= self.plain:
                return
            value = parse_change_time(first.decode("ascii"))
            if value is not None:
                self.plain = first
                if self.highest is None or value > self.highest:
                    self.highest = value
            return
        text = decode_text(first) or ""
        value = parse_int(text) if self.integer else parse_change_time(text)
        if value is not None and (self.highest is None or value > self.highest):
            self.highest = float(value)


@dataclass(slots=True)
class ReadResult:
    users: list[RawUser] = field(default_factory=list)
    groups: list[RawGroup] = field(default_factory=list)
    issues: Issues = field(default_factory=Issues)
    watermark: Watermark | None = None
    entries: int = 0  # entries read (kept after the lists are handed over and cleared)
    departures: Departures | None = None  # incremental runs: what may have left (see departures)
    dns: dict[str, str] = field(default_factory=dict)  # normalized DN -> its one copy (see intern_dn)


def since_filter(schema: DirectorySchema, base: str, since: str | None) -> str:
    """``base`` narrowed to entries changed at or after ``since``."""
    if since is None:
        return base
    return f"(&{base}({schema.change_attribute}>={escape_filter_chars(since)}))"


def paged(
    conn: ldap3.Connection,
    base: str,
    search_filter: str,
    attributes: list[str],
    page_size: int,
    *,
    scope: Any = ldap3.SUBTREE,
    controls: list[tuple[str, bool, Any]] | None = None,
) -> Iterator[tuple[str, dict[str, list[bytes]]]]:
    """(dn, raw attributes keyed in lower case) for every entry; raises DirectoryUnavailable."""
    try:
        # paged_criticality: a server that cannot page must fail, not truncate at its size limit.
        for item in conn.extend.standard.paged_search(
            base,
            search_filter,
            search_scope=scope,
            attributes=attributes,
            paged_size=page_size,
            paged_criticality=True,
            generator=True,
            controls=controls,
        ):
            if item.get("type") != "searchResEntry":
                continue  # continuation references: we never chase referrals during a sync
            raw = item.get("raw_attributes") or {}
            if not item.get(RAW_IN_LOWER_CASE):
                raw = {str(k).lower(): list(v) for k, v in raw.items()}
            yield item.get("dn") or "", raw
    except LDAPException as exc:
        raise DirectoryUnavailable(f"search of {base} failed: {describe(exc)}") from None
    except OSError as exc:
        raise DirectoryUnavailable(f"search of {base} failed: {type(exc).__name__}: {exc}") from None


def entry_id(schema: DirectorySchema, dn: str, attrs: Mapping[str, list[bytes]], issues: Issues) -> str:
    """The stable id; an entry without one falls back to its DN (reported: renames will not carry)."""
    values = attrs.get(schema.id_attribute.lower())
    if values:
        text = format_guid(values[0]) if schema.id_is_guid else decode_text(values[0])
        if text:
            return text
    issues.add(f"{dn}: no usable {schema.id_attribute}; identified by DN instead")
    return "dn:" + normalize_dn(dn)


@dataclass(frozen=True, slots=True)
class UserKeys:
    """The attribute names ``to_user`` looks up, in lower case (as entries are keyed), worked out once a read."""

    username: str
    id: str
    # Where email and name come from, the attribute that wins first: as for every field, the last one mapped to the
    # field that has a value in the entry (a scope attribute may share a field's name).
    email: tuple[str, ...]
    name: tuple[str, ...]
    fields: tuple[tuple[str, str], ...]  # (field name, attribute) of the other fields: the map's, then the scopes'
    uac: str | None
    member_of: str | None

    @classmethod
    def of(cls, schema: DirectorySchema) -> "UserKeys":
        mapped = [
            (name, attribute.lower())
            for name, attribute in (*schema.attribute_map.items(), *schema.scope_attributes.items())
        ]
        return cls(
            username=schema.username_attribute.lower(),
            id=schema.id_attribute.lower(),
            email=tuple(attribute for name, attribute in reversed(mapped) if name == "email"),
            name=tuple(attribute for name, attribute in reversed(mapped) if name == "name"),
            fields=tuple((name, attribute) for name, attribute in mapped if name not in ("email", "name")),
            uac=schema.uac_attribute.lower() if schema.uac_attribute else None,
            member_of=schema.member_of_attribute.lower() if schema.member_of_attribute else None,
        )


def to_user(
    schema: DirectorySchema,
    dn: str,
    attrs: Mapping[str, list[bytes]],
    issues: Issues,
    disabled_ids: set[str] | None = None,
    dns: dict[str, str] | None = None,
    keys: UserKeys | None = None,
) -> RawUser | None:
    """A RawUser, or None (reported) when the entry cannot be a user: no username, not UTF-8.

    ``dns``: normalized DN -> the one copy of it kept for this read (see ``intern_dn``). ``keys``: ``UserKeys.of``
    the schema (a read of a million entries works them out once).
    """
    if keys is None:
        keys = UserKeys.of(schema)
    names = attrs.get(keys.username)
    username = decode_text(names[0]) if names else None
    if not username or not username.strip() or "\x00" in username:
        issues.add(f"{dn}: no usable {schema.username_attribute}; user skipped")
        return None
    ids = attrs.get(keys.id)
    uid = (format_guid(ids[0]) if schema.id_is_guid else decode_text(ids[0])) if ids else None
    if not uid:
        uid = entry_id(schema, dn, attrs, issues)  # (reported: identified by DN)
    # email and name are fields of their own (their first value); keeping them out of ``attributes`` saves a dict
    # and two tuples per user, which adds up at 100k users.
    email = name = None
    for attribute in keys.email:
        if raw_values := attrs.get(attribute):
            email = decode_lenient(raw_values[0])
            break
    for attribute in keys.name:
        if raw_values := attrs.get(attribute):
            name = decode_lenient(raw_values[0])
            break
    mapped: dict[str, tuple[str, ...]] = {}
    for field_name, attribute in keys.fields:
        raw_values = attrs.get(attribute)
        if not raw_values:
            continue
        if len(raw_values) == 1:  # (nearly every one: a generator per field was a tenth of a read)
            value = decode_lenient(raw_values[0])
            if value is not None:
                mapped[field_name] = (value,)
            continue
        values = tuple(v for raw in raw_values if (v := decode_lenient(raw)) is not None)
        if values:
            mapped[field_name] = values
    disabled = False
    if keys.uac:
        uac = attrs.get(keys.uac)
        flags = parse_int(decode_text(uac[0])) if uac else None
        disabled = flags is not None and bool(flags & AD_ACCOUNT_DISABLED)
    if disabled_ids is not None and uid in disabled_ids:
        disabled = True
    member_of: tuple[str, ...] = ()
    if keys.member_of:
        member_of = tuple(
            intern_dn(dns, normalize_dn(t)) for raw in attrs.get(keys.member_of, ()) if (t := decode_text(raw))
        )
    return RawUser(uid, dn, username.strip(), email, name, disabled, mapped or NO_ATTRIBUTES, member_of)


def to_group(
    schema: DirectorySchema,
    dn: str,
    attrs: Mapping[str, list[bytes]],
    issues: Issues,
    fetch_range: Callable[[str], Mapping[str, Sequence[bytes]]],
    dns: dict[str, str] | None = None,
) -> RawGroup | None:
    """A RawGroup with every member (ranged answers followed), or None (reported).

    ``dns``: normalized DN -> the one copy of it kept for this read (see ``intern_dn``).
    """
    names = attrs.get(schema.group_name_attribute.lower())
    name = decode_text(names[0]) if names else None
    if not name or "\x00" in name:
        issues.add(f"{dn}: no usable {schema.group_name_attribute}; group skipped")
        return None
    gid = entry_id(schema, dn, attrs, issues)
    member_dns: list[str] = []
    read_dns: Mapping[str, str] = dns if dns is not None else {}
    for attribute in schema.dn_member_attributes:
        try:
            values = collect_values(attrs, attribute, fetch_range)
        except RangeError as exc:
            # A group we cannot read whole must not be applied part-way: fail the run.
            raise DirectoryUnavailable(f"{dn}: {exc}") from None
        texts = _bulk_texts(values)
        if texts is not None and "#" not in texts[1]:
            # Every value UTF-8 and none with a "#": a member DN this read already holds as written (the common case:
            # the server writes a member as it wrote the user) is its own normal form, so this is what intern_dn
            # would answer, without normalizing it first. Three million values at a million users, looked up at C
            # speed; only the others one by one.
            found = list(map(read_dns.get, texts[0]))
            if None not in found:
                member_dns.extend(found)  # type: ignore[arg-type]
                continue
            for text, known in zip(texts[0], found):
                member_dns.append(known if known is not None else intern_dn(dns, normalize_dn(text)))
            continue
        for raw in values:
            text = decode_text(raw)
            if text is None:
                issues.add(f"{dn}: a {attribute} value is not UTF-8; ignored")
            elif (known := read_dns.get(text)) is not None and "#" not in text:
                member_dns.append(known)  # (as above)
            else:
                member_dns.append(intern_dn(dns, normalize_dn(text)))
    member_uids: list[str] = []
    for attribute in schema.uid_member_attributes:
        for raw in attrs.get(attribute.lower(), ()):
            text = decode_text(raw)
            if text is None:
                issues.add(f"{dn}: a {attribute} value is not UTF-8; ignored")
            else:
                member_uids.append(text.strip())
    return RawGroup(id=gid, dn=dn, name=name, member_dns=tuple(member_dns), member_uids=tuple(member_uids))


def _bulk_texts(values: Sequence[bytes]) -> tuple[list[str], str] | None:
    """(each value as text, all of them joined by newlines) when every value is UTF-8 and none holds a newline: one
    decode for a group's members instead of one a value. None otherwise (then decode value by value)."""
    if not values:
        return [], ""
    joined = b"\n".join(values)
    if joined.count(b"\n") != len(values) - 1:
        return None
    try:
        text = joined.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text.split("\n"), text


def intern_dn(dns: dict[str, str] | None, dn: str) -> str:
    """The copy of ``dn`` that ``dns`` keeps (``dn`` itself, kept, when it holds none).

    A full sync of a million users reads three million member values, nearly all naming a user read before; and in
    Active Directory every user's memberOf names a group every other user names too. One string per DN instead of
    one per value: at 1,000,000 users that was 300 MB of a sync's peak.
    """
    if dns is None:
        return dn
    return dns.setdefault(dn, dn)


def _range_fetcher(conn: ldap3.Connection, dn: str) -> Callable[[str], Mapping[str, Sequence[bytes]]]:
    def fetch(request: str) -> Mapping[str, Sequence[bytes]]:
        try:
            conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=[request])
        except LDAPException as exc:
            raise DirectoryUnavailable(f"{dn}: ranged read failed: {describe(exc)}") from None
        for item in conn.response or ():
            if item.get("type") == "searchResEntry":
                return {str(k): list(v) for k, v in (item.get("raw_attributes") or {}).items()}
        return {}

    return fetch


def highest_committed_usn(conn: ldap3.Connection) -> int | None:
    """AD's rootDSE highestCommittedUSN, read before a run so nothing changed during it is missed."""
    try:
        conn.search("", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["highestCommittedUSN"])
    except LDAPException:
        return None
    for item in conn.response or ():
        values = (item.get("raw_attributes") or {}).get("highestCommittedUSN")
        if values:
            return parse_int(decode_text(values[0]))
    return None


def read_directory(
    conn: ldap3.Connection,
    schema: DirectorySchema,
    page_size: int,
    *,
    since: str | None = None,
    progress: Progress | None = None,
    known: Mapping[str, DirectoryUser] | None = None,
) -> ReadResult:
    """Users and groups (all, or changed since ``since``); raises DirectoryUnavailable on any failure.

    ``known``: the users serving now, by id; values read that equal theirs are kept as their copies.
    """
    result = ReadResult(watermark=Watermark(integer=schema.change_is_integer))
    watermark = result.watermark
    assert watermark is not None
    change_key = schema.change_attribute.lower()
    if since is not None:
        # Before the reads below, so that whatever changes meanwhile is either read or seen next time.
        result.departures = read_departures(conn, schema, since, page_size)
    left = result.departures.changed if result.departures is not None else None

    disabled_ids: set[str] | None = None
    if schema.disabled_filter:
        # The disabled users are a second, narrow search (ids only): the filter is the operator's own
        # LDAP filter, which only the server can evaluate faithfully.
        disabled_ids = set()
        query = since_filter(schema, f"(&{schema.users_filter}{schema.disabled_filter})", since)
        for dn, attrs in paged(conn, schema.users_base, query, [schema.id_attribute], page_size):
            disabled_ids.add(entry_id(schema, dn, attrs, Issues()))

    count = 0
    dns = result.dns
    keys = UserKeys.of(schema)
    for dn, attrs in paged(
        conn, schema.users_base, since_filter(schema, schema.users_filter, since), schema.user_attributes(), page_size
    ):
        watermark.see(attrs.get(change_key))
        user = to_user(schema, dn, attrs, result.issues, disabled_ids, dns, keys)
        if user is not None:
            user.dn_key = intern_dn(dns, normalize_dn(user.dn))  # the key members name it by, the builder's index key
            if known is not None and (current := known.get(user.id)) is not None:
                share_values(user, current)
            result.users.append(user)
        elif left is not None:
            left.add(entry_id(schema, dn, attrs, Issues()))  # no longer usable: gone, as a full sync would have it
        count += 1
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress("users", count)
    if progress is not None:
        progress("users", count)

    count = 0
    for dn, attrs in paged(
        conn,
        schema.groups_base,
        since_filter(schema, schema.groups_filter, since),
        schema.group_attributes(),
        page_size,
    ):
        watermark.see(attrs.get(change_key))
        group = to_group(schema, dn, attrs, result.issues, _range_fetcher(conn, dn), dns)
        if group is not None:
            result.groups.append(group)
        elif left is not None:
            left.add(entry_id(schema, dn, attrs, Issues()))
        count += 1
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress("groups", count)
    if progress is not None:
        progress("groups", count)
    return result
