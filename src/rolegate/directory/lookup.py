"""``lookup_user``: read one user's entry and groups live, at sign-in.

So a new hire, or a membership changed a minute ago, counts from the first request rather
than from the next sync. The username comes from outside (an IdP claim, a login form): it is
checked and escaped (RFC 4515) before it goes anywhere near a filter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from rolegate.directory.builder import Issues
from rolegate.directory.connection import connection, describe
from rolegate.directory.errors import DirectoryUnavailable
from rolegate.directory.model import DirectoryUser
from rolegate.directory.presets import DirectorySchema, resolve_schema
from rolegate.directory.reader import paged, to_user
from rolegate.directory.service import directory_config
from rolegate.directory.values import decode_text, normalize_dn

log = logging.getLogger("rolegate.directory")

MAX_USERNAME = 256
MAX_NESTING = 32  # levels of nested groups followed upwards
MAX_GROUPS = 5000  # groups one user may be found in before we stop (and fail closed)
OR_CHUNK = 50  # member values per OR filter


def acceptable_username(username: Any) -> bool:
    """Cheap checks before a directory round trip: text, a sane length, no control characters."""
    return (
        isinstance(username, str)
        and 0 < len(username) <= MAX_USERNAME
        and username.strip() == username
        and not any(ord(ch) < 32 or ord(ch) == 127 for ch in username)
    )


async def lookup_user(config: Any, username: str) -> DirectoryUser | None:
    """The user's entry and group closure as the directory has them now.

    None when there is no such user, or the name is unacceptable or matches several entries
    (fail closed). Raises DirectoryUnavailable when the directory cannot answer: the caller
    then falls back to the last snapshot.
    """
    if not acceptable_username(username):
        return None
    section = directory_config(config)
    return await asyncio.to_thread(_lookup, section, resolve_schema(section), username)


def _lookup(config: Any, schema: DirectorySchema, username: str) -> DirectoryUser | None:
    issues = Issues()
    user_filter = f"(&{schema.users_filter}({schema.username_attribute}={escape_filter_chars(username)}))"
    with connection(config) as conn:
        found = list(paged(conn, schema.users_base, user_filter, schema.user_attributes(), 10))
        if len(found) != 1:
            if len(found) > 1:
                log.warning("directory: %d entries match one username; refusing the sign-in lookup", len(found))
            return None
        dn, attrs = found[0]
        disabled_ids: set[str] = set()
        raw = to_user(schema, dn, attrs, issues)
        if raw is None or raw.username.casefold() != username.casefold():
            return None  # a looser server-side match (spaces, case rules) is not the same name
        if schema.disabled_filter and _matches(conn, dn, schema.disabled_filter):
            disabled_ids.add(raw.id)
        names = _group_names(conn, schema, dn, raw.username, raw.member_of)
    return DirectoryUser(
        id=raw.id,
        dn=raw.dn,
        username=raw.username,
        email=raw.email,
        name=raw.name,
        disabled=raw.disabled or raw.id in disabled_ids,
        groups=frozenset(names),
        attributes=raw.attributes,
    )


def _matches(conn: ldap3.Connection, dn: str, search_filter: str) -> bool:
    try:
        conn.search(dn, search_filter, search_scope=ldap3.BASE, attributes=["1.1"])
    except LDAPException as exc:
        raise DirectoryUnavailable(f"lookup failed: {describe(exc)}") from None
    return any(item.get("type") == "searchResEntry" for item in conn.response or ())


def _or_filter(schema: DirectorySchema, dns: Iterable[str], uids: Iterable[str]) -> str:
    parts = [f"({attribute}={escape_filter_chars(dn)})" for dn in dns for attribute in schema.dn_member_attributes]
    parts += [f"({attribute}={escape_filter_chars(uid)})" for uid in uids for attribute in schema.uid_member_attributes]
    return f"(&{schema.groups_filter}(|{''.join(parts)}))"


def _group_names(
    conn: ldap3.Connection, schema: DirectorySchema, dn: str, username: str, member_of: tuple[str, ...]
) -> set[str]:
    """Names of the groups holding ``dn``, then of the groups holding those, level by level."""
    names: set[str] = set()
    seen: set[str] = set()
    frontier_dns = [dn]
    frontier_uids = [username]
    name_key = schema.group_name_attribute.lower()
    for _level in range(MAX_NESTING):
        found: list[str] = []
        values = [(d, None) for d in frontier_dns] + [(None, u) for u in frontier_uids]
        for i in range(0, len(values), OR_CHUNK):
            chunk = values[i : i + OR_CHUNK]
            query = _or_filter(schema, [d for d, _ in chunk if d], [u for _, u in chunk if u])
            for group_dn, attrs in paged(conn, schema.groups_base, query, [schema.group_name_attribute], 500):
                key = normalize_dn(group_dn)
                if key in seen:
                    continue  # a cycle, or reached along two paths
                seen.add(key)
                name = decode_text((attrs.get(name_key) or [None])[0])
                if name:
                    names.add(name)
                found.append(group_dn)
        if schema.member_of_attribute and _level == 0:
            found += [g for g in _member_of_groups(conn, schema, member_of, seen, names)]
        if len(seen) > MAX_GROUPS:
            raise DirectoryUnavailable("lookup: the user is in implausibly many groups; refusing")
        if not found:
            break
        frontier_dns, frontier_uids = found, []
    return names


def _member_of_groups(
    conn: ldap3.Connection, schema: DirectorySchema, member_of: tuple[str, ...], seen: set[str], names: set[str]
) -> list[str]:
    """Groups named by the user's memberOf that the member-side search did not find."""
    found: list[str] = []
    base = normalize_dn(schema.groups_base)
    for group_dn in member_of:
        # Only groups the sync can see count, so sign-in and sync agree on what a user is in.
        if group_dn in seen or not (group_dn == base or group_dn.endswith("," + base)):
            continue
        try:
            conn.search(
                group_dn, schema.groups_filter, search_scope=ldap3.BASE, attributes=[schema.group_name_attribute]
            )
        except LDAPException:
            continue  # outside our reach or gone: not a group we count
        for item in conn.response or ():
            if item.get("type") != "searchResEntry":
                continue
            raw = {str(k).lower(): v for k, v in (item.get("raw_attributes") or {}).items()}
            name = decode_text((raw.get(schema.group_name_attribute.lower()) or [None])[0])
            seen.add(group_dn)
            if name:
                names.add(name)
            found.append(item.get("dn") or group_dn)
    return found
