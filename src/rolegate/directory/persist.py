"""The last good snapshot in the Store (ns ``directory``, key ``snapshot``), compact for 100k users.

Users refer to shared group-closure lists and groups to users by position, so a name or id is
written once; workers rebuild O(1) lookups from it without any graph work.
"""

from __future__ import annotations

import logging
from typing import Any

from rolegate.directory.model import NO_ATTRIBUTES, DirectoryGroup, DirectorySnapshot, DirectoryUser

log = logging.getLogger("rolegate.directory")

NAMESPACE = "directory"
SNAPSHOT_KEY = "snapshot"
COUNTER = "directory"  # bumped on every applied change; workers reload when it moves
FORMAT = 1


def encode_snapshot(snapshot: DirectorySnapshot) -> dict[str, Any]:
    """A JSON-ready document."""
    user_index = {uid: i for i, uid in enumerate(snapshot.users)}
    group_index = {gid: i for i, gid in enumerate(snapshot.groups)}
    closure_index: dict[frozenset[str], int] = {}
    closures: list[list[str]] = []
    users: list[list[Any]] = []
    append = users.append
    for user in snapshot.users.values():
        position = closure_index.get(user.groups)
        if position is None:
            position = closure_index[user.groups] = len(closures)
            closures.append(sorted(user.groups))
        attributes = user.attributes
        append([user.id, user.dn, user.username, user.email, user.name, int(user.disabled), position,
                {k: list(v) for k, v in attributes.items()} if attributes else None])
    groups = [[g.id, g.dn, g.name, sorted(user_index[u] for u in g.member_users if u in user_index),
               sorted(group_index[c] for c in g.member_groups if c in group_index), list(g.unresolved)]
              for g in snapshot.groups.values()]
    return {"format": FORMAT, "taken_at": snapshot.taken_at, "full_at": snapshot.full_at,
            "since": snapshot.since, "issues": list(snapshot.issues), "closures": closures,
            "users": users, "groups": groups}


def decode_snapshot(data: Any) -> DirectorySnapshot:
    """The snapshot back; raises ValueError on anything that is not a document we wrote."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not a directory snapshot of a known format")
    try:
        closures = [frozenset(names) for names in data["closures"]]
        users: dict[str, DirectoryUser] = {}
        ids: list[str] = []
        for uid, dn, username, email, name, disabled, position, attributes in data["users"]:
            ids.append(uid)
            users[uid] = DirectoryUser(id=uid, dn=dn, username=username, email=email, name=name,
                                       disabled=bool(disabled), groups=closures[position],
                                       attributes={k: tuple(v) for k, v in attributes.items()}
                                       if attributes else NO_ATTRIBUTES)
        group_ids = [g[0] for g in data["groups"]]
        groups = {gid: DirectoryGroup(id=gid, dn=dn, name=name, member_users=frozenset(ids[i] for i in members),
                                      member_groups=frozenset(group_ids[i] for i in nested),
                                      unresolved=tuple(unresolved))
                  for gid, dn, name, members, nested, unresolved in data["groups"]}
        return DirectorySnapshot(users, groups, taken_at=float(data["taken_at"]), full_at=float(data["full_at"]),
                                 since=data.get("since"), issues=tuple(data.get("issues") or ()),
                                 incremental_ready=False)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"damaged directory snapshot: {type(exc).__name__}") from exc


async def save_snapshot(store: Any, snapshot: DirectorySnapshot) -> int:
    """Persist the snapshot and bump the ``directory`` counter so workers reload it."""
    await store.put(NAMESPACE, SNAPSHOT_KEY, encode_snapshot(snapshot))
    return await store.incr(COUNTER)


async def load_snapshot(store: Any) -> DirectorySnapshot | None:
    """The last good snapshot, or None when there is none (or it cannot be read: fail closed)."""
    record = await store.get(NAMESPACE, SNAPSHOT_KEY)
    if record is None:
        return None
    try:
        return decode_snapshot(record.value)
    except ValueError as exc:
        log.error("directory snapshot in the store is unreadable: %s", exc)
        return None
