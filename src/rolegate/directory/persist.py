"""The last good snapshot in the Store (ns ``directory``), split so a sync rewrites only what changed.

Layout (format 2): key ``snapshot`` is a small pointer document naming the documents that make up
the snapshot now: base chunks of users (a few thousand each), one delta document (users written or
removed since the base was written) and one groups document. Every document but the pointer is
written once under a key of its own (generation + random nonce) and never changed, so a save writes
its new documents first and then flips the pointer in one put (compare-and-set on its version): a
reader sees the old snapshot or the new one, never a mix. Documents the pointer stopped naming are
deleted one save later, so a reader still fetching the previous generation finds them; a reader
that does miss one re-reads the pointer and starts again, and fails closed when the pointer has
not moved (damage). A save that fails before its flip deletes what it wrote; one whose process
dies there, or that cannot delete (a full disk), leaves those documents behind, unnamed by any
pointer and so never read: every save that lands sweeps such strays once they are a day old
(``_sweep``; a younger one may be a save still under way on another instance).

An incremental sync that changed 100 users writes one delta document (every user changed since the
base, so it stays small) and the groups document only when a group itself changed. When the delta
grows past a share of the directory, the sync folds it into a fresh base once its change is already
visible (``compact_snapshot``); only a save that changed a large part at once writes a base directly.

Users refer to group-closure lists shared within a document, and to the groups they are direct
members of by small stable group numbers ("tokens"), so group membership lives with the user and a
group gaining a member rewrites that member's row only. Format 1 (one document) is still read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from rolegate.store.base import VersionConflict
from rolegate.store.codec import FloatFree

from rolegate.directory.gcpause import paused_gc
from rolegate.directory.model import NO_ATTRIBUTES, DirectoryGroup, DirectorySnapshot, DirectoryUser, NameSet

log = logging.getLogger("rolegate.directory")
T = TypeVar("T")

NAMESPACE = "directory"
SNAPSHOT_KEY = "snapshot"
COUNTER = "directory"  # bumped on every applied change; workers reload when it moves
FORMAT = 1  # the single-document format, still read
LAYOUT = 2  # the pointer + chunks format written now
CHUNK_USERS = 5000  # users per base chunk
DELTA_SHARE = 0.05  # past this share of the users, the delta is folded into a new base after the save
DELTA_MIN = 2000  # ... but small directories keep deltas up to this many users
DELTA_LIMIT = 4  # a delta this many times the share is never written: the save writes a new base at once
LOAD_ATTEMPTS = 4  # pointer flips a reader rides out before it gives up
# A document no pointer names is a stray once this old (seconds): younger, it may be a save still writing (a
# million users' save takes a minute or two; one stalled for a day is not coming back).
STRAY_AGE = 24 * 3600


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
        append(
            [
                user.id,
                user.dn,
                user.username,
                user.email,
                user.name,
                int(user.disabled),
                position,
                {k: list(v) for k, v in attributes.items()} if attributes else None,
            ]
        )
    groups = [
        [
            g.id,
            g.dn,
            g.name,
            sorted(user_index[u] for u in g.member_users if u in user_index),
            sorted(group_index[c] for c in g.member_groups if c in group_index),
            list(g.unresolved),
        ]
        for g in snapshot.groups.values()
    ]
    return {
        "format": FORMAT,
        "taken_at": snapshot.taken_at,
        "full_at": snapshot.full_at,
        "since": snapshot.since,
        "issues": list(snapshot.issues),
        "closures": closures,
        "users": users,
        "groups": groups,
    }


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
            users[uid] = DirectoryUser(
                id=uid,
                dn=dn,
                username=username,
                email=email,
                name=name,
                disabled=bool(disabled),
                groups=closures[position],
                attributes={k: tuple(v) for k, v in attributes.items()} if attributes else NO_ATTRIBUTES,
            )
        group_ids = [g[0] for g in data["groups"]]
        groups = {
            gid: DirectoryGroup(
                id=gid,
                dn=dn,
                name=name,
                member_users=frozenset(ids[i] for i in members),
                member_groups=frozenset(group_ids[i] for i in nested),
                unresolved=tuple(unresolved),
            )
            for gid, dn, name, members, nested, unresolved in data["groups"]
        }
        return DirectorySnapshot(
            users,
            groups,
            taken_at=float(data["taken_at"]),
            full_at=float(data["full_at"]),
            since=data.get("since"),
            issues=tuple(data.get("issues") or ()),
            incremental_ready=False,
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"damaged directory snapshot: {type(exc).__name__}") from exc


@dataclass(slots=True, eq=False)
class StoredLayout:
    """Where a snapshot's content sits in one Store: enough to write the next save as a delta."""

    store: Any
    version: int  # the pointer document's version
    pointer: dict[str, Any]
    tokens: dict[str, int]  # group id -> group number used in the documents
    delta_ids: frozenset[str]  # users whose rows live in the delta document
    removed: frozenset[str]  # users the delta removes from the base


class _Rows:
    """Encodes user rows into one document, sharing equal closure lists within it."""

    __slots__ = ("rows", "closures", "_index")

    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        self.closures: list[list[str]] = []
        # Keyed by the sorted names as a plain tuple: a NameSet hashes as a frozenset (a frozenset made for each
        # hash), and a million users' closures, most of them of one user only, were 2 s of a save.
        self._index: dict[tuple[str, ...], int] = {}

    def add(self, user: DirectoryUser, tokens: list[int]) -> None:
        groups = user.groups
        key = tuple(groups) if isinstance(groups, NameSet) else tuple(sorted(groups))
        position = self._index.get(key)
        if position is None:
            position = self._index[key] = len(self.closures)
            self.closures.append(list(key))
        attributes = user.attributes
        self.rows.append(
            [
                user.id,
                user.dn,
                user.username,
                user.email,
                user.name,
                int(user.disabled),
                position,
                {k: list(v) for k, v in attributes.items()} if attributes else None,
                sorted(tokens),
            ]
        )

    def document(self, **extra: Any) -> dict[str, Any]:
        # Ids, names, numbers and None only: the Store may write it with orjson (a million rows: 3.2 s -> 0.15 s).
        return FloatFree(format=LAYOUT, closures=self.closures, users=self.rows, **extra)


def _memberships(
    groups: Iterable[DirectoryGroup], tokens: dict[str, int], only: set[str] | None = None
) -> dict[str, list[int]]:
    """user id -> numbers of the groups listing the user as a direct member (group side: the truth)."""
    found: dict[str, list[int]] = {}
    for group in groups:
        token = tokens[group.id]
        members = group.member_users if only is None else group.member_users & only
        for uid in members:
            bucket = found.get(uid)
            if bucket is None:
                found[uid] = [token]
            else:
                bucket.append(token)
    return found


def _groups_document(groups: Iterable[DirectoryGroup], tokens: dict[str, int]) -> dict[str, Any]:
    return {
        "format": LAYOUT,
        "groups": [
            [
                tokens[g.id],
                g.id,
                g.dn,
                g.name,
                sorted(tokens[c] for c in g.member_groups if c in tokens),
                list(g.unresolved),
            ]
            for g in groups
        ],
    }


def _pointer(
    snapshot: DirectorySnapshot,
    generation: int,
    chunks: list[str],
    delta: str | None,
    groups: str,
    next_token: int,
    retired: list[str],
    folded: list[Any] | None = None,
) -> dict[str, Any]:
    pointer = {
        "format": LAYOUT,
        "generation": generation,
        "taken_at": snapshot.taken_at,
        "full_at": snapshot.full_at,
        "since": snapshot.since,
        "issues": list(snapshot.issues),
        "users": len(snapshot.users),
        "groups": len(snapshot.groups),
        "chunks": chunks,
        "delta": delta,
        "group_doc": groups,
        "next_token": next_token,
        "retired": retired,
    }
    if folded is not None:
        pointer["folded"] = folded
    return pointer


def pointer_digest(pointer: Any) -> str:
    """A short digest of a pointer document (with its version, what names one stored snapshot), or of a part of
    one (its chunk keys: what names a base)."""
    return hashlib.sha256(json.dumps(pointer, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _referenced(pointer: Any) -> list[str]:
    """Every document a format-2 pointer names."""
    if not isinstance(pointer, dict) or pointer.get("format") != LAYOUT:
        return []
    keys = [k for k in pointer.get("chunks") or () if isinstance(k, str)]
    keys += [k for k in (pointer.get("delta"), pointer.get("group_doc")) if isinstance(k, str)]
    return keys


def _key(generation: int, nonce: str, part: str) -> str:
    return f"{SNAPSHOT_KEY}.{generation:08d}.{nonce}.{part}"


def _nonce() -> str:
    """A save's own part of its documents' keys: when it began (hex epoch seconds, what ``_sweep`` reads) and 32
    random bits."""
    return f"{int(time.time()):x}-{secrets.token_hex(4)}"


def _written_at(key: str) -> int | None:
    """When the save that wrote ``key`` began; None for a key without that stamp (written before it existed)."""
    parts = key.split(".")
    if len(parts) != 4 or parts[0] != SNAPSHOT_KEY:
        return None
    stamp, dash, _ = parts[2].partition("-")
    try:
        return int(stamp, 16) if dash else None
    except ValueError:
        return None


def _generation(pointer: Any) -> int:
    if isinstance(pointer, dict) and isinstance(pointer.get("generation"), int):
        return pointer["generation"] + 1
    return 1


def _layout_for(store: Any, previous: DirectorySnapshot | None) -> StoredLayout | None:
    layout = getattr(previous, "_stored", None) if previous is not None else None
    if isinstance(layout, StoredLayout) and layout.store is store:
        return layout
    return None


@dataclass(slots=True)
class _Delta:
    dirty: set[str]  # users whose stored row changes (present in the new snapshot)
    removed: set[str]
    groups_changed: bool
    tokens: dict[str, int]
    next_token: int


def _delta(layout: StoredLayout, basis: DirectorySnapshot, new: DirectorySnapshot) -> _Delta:
    """What differs between the stored snapshot and ``new``, row by row (identity first, then value)."""
    dirty: set[str] = set()
    groups_changed = False
    next_token = int(layout.pointer.get("next_token") or 0)
    tokens: dict[str, int] = {}
    for gid, group in new.groups.items():
        token = layout.tokens.get(gid)
        if token is None:
            token = next_token
            next_token += 1
        tokens[gid] = token
        before = basis.groups.get(gid)
        if before is group:
            continue
        if before is None:
            groups_changed = True
            dirty.update(group.member_users)
            continue
        if (
            before.dn != group.dn
            or before.name != group.name
            or before.member_groups != group.member_groups
            or before.unresolved != group.unresolved
        ):
            groups_changed = True
        if before.member_users != group.member_users:
            dirty.update(before.member_users ^ group.member_users)
    if len(tokens) != len(basis.groups) or any(gid not in new.groups for gid in basis.groups):
        groups_changed = True
        for gid, before in basis.groups.items():
            if gid not in new.groups:
                dirty.update(before.member_users)
    added = 0
    base_users = basis.users
    removed: set[str] = set()
    ids = new.changed_since(basis)
    if ids is not None:  # ``new`` was made from ``basis``: only these users can differ
        for uid in ids:
            user, before = new.users.get(uid), base_users.get(uid)
            if user is None:
                if before is not None:
                    removed.add(uid)
            elif before is None or (before is not user and not user.same_as(before)):
                dirty.add(uid)
    else:
        for uid, user in new.users.items():
            before = base_users.get(uid)
            if before is user:
                continue
            if before is None:
                added += 1
                dirty.add(uid)
            elif not user.same_as(before):
                dirty.add(uid)
        if len(base_users) + added != len(new.users):
            removed = {uid for uid in base_users if uid not in new.users}
    dirty.intersection_update(new.users.keys())
    return _Delta(dirty, removed, groups_changed, tokens, next_token)


def adopt(store: Any, previous: DirectorySnapshot | None, new: DirectorySnapshot) -> bool:
    """True when ``new`` would be stored exactly as ``previous`` is (its layout now serves ``new``).

    For a sync that changed nothing visible: the next save can still write a delta against the store.
    """
    layout = _layout_for(store, previous)
    if layout is None or previous is None:
        return False
    change = _delta(layout, previous, new)
    if change.dirty or change.removed or change.groups_changed:
        return False
    # Every stored row and group is what ``new`` would write: the stored documents describe ``new`` too.
    new._stored = StoredLayout(store, layout.version, layout.pointer, layout.tokens, layout.delta_ids, layout.removed)
    return True


async def save_snapshot(store: Any, snapshot: DirectorySnapshot, *, previous: DirectorySnapshot | None = None) -> int:
    """Persist the snapshot and bump the ``directory`` counter so workers reload it.

    With ``previous`` (the snapshot this process saved or loaded last), only what differs is written.
    """
    layout = _layout_for(store, previous)
    written = None
    if layout is not None and previous is not None:
        written = await _save_delta(store, snapshot, layout, previous)
    if written is None:
        written = await _save_full(store, snapshot)
        assert written is not None
    old_pointer, new_layout = written
    snapshot._stored = new_layout
    version = await store.incr(COUNTER)
    await _collect(store, old_pointer)
    await _sweep(store, new_layout.pointer)
    return version


def needs_compaction(store: Any, snapshot: DirectorySnapshot) -> bool:
    """True when ``snapshot`` is stored with a delta past its share (see ``compact_snapshot``)."""
    layout = _layout_for(store, snapshot)
    return layout is not None and len(layout.delta_ids) + len(layout.removed) > _delta_allowance(snapshot)


async def compact_snapshot(store: Any, snapshot: DirectorySnapshot) -> bool:
    """Rewrite the stored ``snapshot`` as a fresh base without a delta; True when done.

    The content does not change, so the ``directory`` counter stays put and no worker reloads. Run
    after a save has made the change visible: the rewrite costs about a full save. Nothing happens
    when the store moved on since ``snapshot`` was saved.
    """
    layout = _layout_for(store, snapshot)
    if layout is None:
        return False
    # The workers have the version this folds mapped as base + top: they stand it for the new base meanwhile.
    folded = [layout.version, pointer_digest(layout.pointer)]
    written = await _save_full(store, snapshot, expected=layout.version, folded=folded)
    if written is None:
        return False
    old_pointer, snapshot._stored = written
    await _collect(store, old_pointer)
    await _sweep(store, snapshot._stored.pointer)
    return True


def _delta_allowance(snapshot: DirectorySnapshot) -> int:
    return max(DELTA_MIN, int(len(snapshot.users) * DELTA_SHARE))


async def _collect(store: Any, old_pointer: Any) -> None:
    """Delete what the replaced pointer had retired: a whole save has passed since any reader could
    have been sent there."""
    for key in old_pointer.get("retired") or () if isinstance(old_pointer, dict) else ():
        try:
            await store.delete(NAMESPACE, key)
        except Exception as exc:  # noqa: BLE001 - garbage left behind is harmless
            log.warning("directory: could not delete the old snapshot document %s: %s", key, exc)


async def _sweep(store: Any, written: dict[str, Any]) -> int:
    """Delete the documents no pointer names and no save can still be writing: a day old, named neither by the
    pointer just ``written`` nor by the one the Store holds now (another instance's), as a chunk or as retired (the
    next save's ``_collect`` deletes those). A newer pointer only ever names documents its own save wrote (young)
    or its predecessor's, so nothing it may name goes. Best effort: the number deleted."""
    try:
        keys = await store.keys(NAMESPACE, SNAPSHOT_KEY + ".")
        record = await store.get(NAMESPACE, SNAPSHOT_KEY)
    except Exception as exc:  # noqa: BLE001 - strays cost room, not correctness: the next save tries again
        log.warning("directory: could not list the stored snapshot documents: %s", exc)
        return 0
    named: set[str] = set()
    for pointer in (written, record.value if record is not None else None):
        if isinstance(pointer, dict):
            named.update(_referenced(pointer))
            named.update(k for k in pointer.get("retired") or () if isinstance(k, str))
    before = time.time() - STRAY_AGE
    deleted = 0
    for key in keys:
        if key in named or (born := _written_at(key)) is None or born > before:
            continue
        try:
            deleted += bool(await store.delete(NAMESPACE, key))
        except Exception as exc:  # noqa: BLE001 - as above
            log.warning("directory: could not delete the stray snapshot document %s: %s", key, exc)
            break
    if deleted:
        log.info("directory: deleted %d snapshot documents no save named (left by a save that died or failed)", deleted)
    return deleted


async def _save_delta(
    store: Any, snapshot: DirectorySnapshot, layout: StoredLayout, basis: DirectorySnapshot
) -> tuple[dict[str, Any], StoredLayout] | None:
    """Write only the delta (and groups when they changed); None when a full write is due instead."""
    record = await store.get(NAMESPACE, SNAPSHOT_KEY)
    if record is None or record.version != layout.version:
        return None  # someone else wrote the store since: our basis is not what it holds
    change = _delta(layout, basis, snapshot)
    delta_ids = (set(layout.delta_ids) | change.dirty) & snapshot.users.keys()
    removed = (set(layout.removed) | change.removed) - snapshot.users.keys()
    if len(delta_ids) + len(removed) > DELTA_LIMIT * _delta_allowance(snapshot):
        return None  # far too much changed for a delta: write a fresh base
    old = layout.pointer
    generation = _generation(old)
    nonce = _nonce()
    written: list[str] = []
    delta_key, groups_key = old.get("delta"), old["group_doc"]
    try:
        if change.dirty or change.removed:
            rows = _Rows()
            if snapshot.incremental_ready:
                # The builder's users carry their direct groups (the group side's): no walk of every group's
                # members for the few users written (0.4 s of an incremental run at a million users).
                tokens = change.tokens
                for uid in delta_ids:
                    user = snapshot.users[uid]
                    rows.add(user, list(map(tokens.__getitem__, user.direct_groups)))
            else:
                memberships = _memberships(snapshot.groups.values(), change.tokens, delta_ids)
                for uid in delta_ids:
                    rows.add(snapshot.users[uid], memberships.get(uid, []))
            delta_key = _key(generation, nonce, "delta")
            await store.put(NAMESPACE, delta_key, rows.document(removed=sorted(removed)))
            written.append(delta_key)
        if change.groups_changed or change.tokens != layout.tokens:
            groups_key = _key(generation, nonce, "groups")
            await store.put(NAMESPACE, groups_key, _groups_document(snapshot.groups.values(), change.tokens))
            written.append(groups_key)
        replaced = [k for k in (old.get("delta"), old["group_doc"]) if k and k not in (delta_key, groups_key)]
        pointer = _pointer(
            snapshot,
            generation,
            list(old["chunks"]),
            delta_key,
            groups_key,
            change.next_token,
            replaced,
            old.get("folded"),  # the same base: still the content of the version it was folded from
        )
        version = await store.put(NAMESPACE, SNAPSHOT_KEY, pointer, expected_version=layout.version)
    except VersionConflict:
        await _discard(store, written)
        return None
    except BaseException:
        await _discard(store, written)
        raise
    return old, StoredLayout(store, version, pointer, change.tokens, frozenset(delta_ids), frozenset(removed))


async def _save_full(
    store: Any, snapshot: DirectorySnapshot, *, expected: int | None = None, folded: list[Any] | None = None
) -> tuple[dict[str, Any], StoredLayout] | None:
    """Write every document afresh (first save, a delta grown large, or a store someone else wrote).

    ``expected``: flip the pointer only if it still has this version (else discard and return None).
    ``folded``: [version, digest] of the pointer whose content the new base is (a compaction's).
    """
    record = await store.get(NAMESPACE, SNAPSHOT_KEY)
    if expected is not None and (record is None or record.version != expected):
        return None
    generation = _generation(record.value if record else None)
    nonce = _nonce()
    tokens = {gid: i for i, gid in enumerate(snapshot.groups)}
    written: list[str] = []
    writing: asyncio.Future[int] | None = None
    try:
        groups_key = _key(generation, nonce, "groups")
        await store.put(NAMESPACE, groups_key, _groups_document(snapshot.groups.values(), tokens))
        written.append(groups_key)
        # A snapshot the builder made carries each user's direct groups (the group side's, the ones written): a
        # table of them for every user would be 140 MB more at a million. One read from the Store carries none.
        memberships = None if snapshot.incremental_ready else _memberships(snapshot.groups.values(), tokens)
        users = iter(snapshot.users.values())
        chunks: list[str] = []
        try:
            while True:
                rows = _Rows()
                for user in itertools.islice(users, CHUNK_USERS):
                    if memberships is None:
                        rows.add(user, list(map(tokens.__getitem__, user.direct_groups)))
                    else:
                        rows.add(user, memberships.get(user.id, []))
                if not rows.rows:
                    break
                key = _key(generation, nonce, f"u{len(chunks):04d}")
                document = rows.document()
                del rows
                if writing is not None:
                    await writing
                written.append(key)
                chunks.append(key)
                # The Store writes this chunk in its thread while the next one is made here (one write at a time):
                # a million users' save is half as long. The yield lets the put encode and hand it over first.
                writing = asyncio.ensure_future(store.put(NAMESPACE, key, document))
                del document
                await asyncio.sleep(0)
            if writing is not None:
                await writing
        except BaseException:
            if writing is not None:
                if not writing.done():
                    # Whatever it does now, its chunk is in ``written``: discarded below with the rest.
                    await asyncio.wait([writing])
                if not writing.cancelled():
                    writing.exception()  # (retrieved: the error raised here is the one to report)
            raise
        del memberships
        for _attempt in range(5):
            old = record.value if record is not None else None
            retired = _referenced(old)
            pointer = _pointer(snapshot, generation, chunks, None, groups_key, len(tokens), retired, folded)
            try:
                version = await store.put(
                    NAMESPACE, SNAPSHOT_KEY, pointer, expected_version=record.version if record is not None else 0
                )
                break
            except VersionConflict:
                if expected is not None:
                    await _discard(store, written)
                    return None
                record = await store.get(NAMESPACE, SNAPSHOT_KEY)  # another writer: last one wins, as ever
        else:
            raise VersionConflict(NAMESPACE, SNAPSHOT_KEY, None, None)
    except BaseException:
        await _discard(store, written)
        raise
    return (old if isinstance(old, dict) else {}), StoredLayout(
        store, version, pointer, tokens, frozenset(), frozenset()
    )


async def _discard(store: Any, keys: list[str]) -> None:
    """Best effort: documents of a save that did not flip the pointer are nobody's."""
    for key in keys:
        try:
            await store.delete(NAMESPACE, key)
        except Exception:  # noqa: BLE001
            pass


class Missing(Exception):
    """A document the pointer names is gone (a newer save retired it, or damage)."""


async def load_snapshot(store: Any) -> DirectorySnapshot | None:
    """The last good snapshot, or None when there is none (or it cannot be read: fail closed)."""

    async def load(record: Any) -> DirectorySnapshot:
        # 100k objects and no cycles among them: collections (also while the store parses a
        # document in its thread) would walk the whole heap to find nothing.
        with paused_gc():
            if isinstance(record.value, dict) and record.value.get("format") == LAYOUT:
                return await _load_layout(store, record)
            return decode_snapshot(record.value)

    return await read_stored(store, load)


async def read_stored(store: Any, read: Callable[[Any], Awaitable[T]]) -> T | None:
    """``read(pointer record)`` of the stored snapshot, riding out saves that retire what it reads.

    A document the pointer names gone missing (``Missing``) means a newer save retired it while ``read`` ran:
    the new pointer is read again, up to LOAD_ATTEMPTS times. None when nothing is stored, or the snapshot
    cannot be read (damage: logged; fail closed)."""
    record = await store.get(NAMESPACE, SNAPSHOT_KEY)
    for _attempt in range(LOAD_ATTEMPTS):
        if record is None:
            return None
        try:
            return await read(record)
        except Missing as exc:
            again = await store.get(NAMESPACE, SNAPSHOT_KEY)
            if again is not None and again.version == record.version:
                log.error("directory snapshot in the store is unreadable: %s is missing", exc)
                return None
            record = again  # the pointer moved on while we read: read the new one
        except ValueError as exc:
            log.error("directory snapshot in the store is unreadable: %s", exc)
            return None
    log.error("directory snapshot in the store kept changing while read; giving up for now")
    return None


async def chunk_documents(store: Any, pointer: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """The base chunks a pointer names, in order; the store parses the next one (in its thread) while the
    caller works on this one. Use under ``contextlib.aclosing`` so a caller that stops cancels the fetch."""
    chunks = pointer["chunks"]
    if not isinstance(chunks, list):
        raise ValueError("damaged directory snapshot: chunks is not a list")
    pending = asyncio.ensure_future(fetch_document(store, chunks[0])) if chunks else None
    try:
        for position in range(len(chunks)):
            assert pending is not None
            document = await pending
            following = position + 1 < len(chunks)
            pending = asyncio.ensure_future(fetch_document(store, chunks[position + 1])) if following else None
            yield document
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)


async def fetch_document(store: Any, key: Any) -> Any:
    if not isinstance(key, str):
        raise ValueError("damaged directory snapshot: a document key is not text")
    found = await store.get(NAMESPACE, key)
    if found is None:
        raise Missing(key)
    if not isinstance(found.value, dict) or found.value.get("format") != LAYOUT:
        raise ValueError(f"damaged directory snapshot: {key} is not a snapshot document")
    return found.value


async def _load_layout(store: Any, record: Any) -> DirectorySnapshot:
    pointer = record.value
    try:
        groups_doc = await fetch_document(store, pointer["group_doc"])
        delta_doc = await fetch_document(store, pointer["delta"]) if pointer.get("delta") is not None else None
        token_gid: dict[int, str] = {}
        raw_groups = groups_doc["groups"]
        for token, gid, *_rest in raw_groups:
            if not isinstance(token, int) or not isinstance(gid, str) or token in token_gid:
                raise ValueError("bad group number")
            token_gid[token] = gid
        members: dict[int, list[str]] = {t: [] for t in token_gid}
        # Closures as NameSets, as the builder holds them (a quarter of a frozenset's memory: a master loads the
        # stored snapshot of a million users at start, and a sync builds the next one beside it).
        interned: dict[NameSet, NameSet] = {}
        users: dict[str, DirectoryUser] = {}
        skip: set[str] = set()
        if delta_doc is not None:
            skip = {row[0] for row in delta_doc["users"]}
            skip.update(delta_doc.get("removed") or ())

        def decode(document: dict[str, Any]) -> None:
            closures = []
            for listed in document["closures"]:
                names = NameSet(listed)
                closures.append(interned.setdefault(names, names))
            for uid, dn, username, email, name, disabled, position, attributes, tokens in document["users"]:
                if uid in skip:
                    continue
                if uid in users:
                    raise ValueError(f"user {uid} stored twice")
                users[uid] = DirectoryUser(
                    id=uid,
                    dn=dn,
                    username=username,
                    email=email,
                    name=name,
                    disabled=bool(disabled),
                    groups=closures[position],
                    attributes={k: tuple(v) for k, v in attributes.items()} if attributes else NO_ATTRIBUTES,
                )
                for token in tokens:
                    members[token].append(uid)

        async with contextlib.aclosing(chunk_documents(store, pointer)) as documents:
            async for document in documents:
                decode(document)
                del document
        if delta_doc is not None:
            skip = set()
            decode(delta_doc)
        groups = {
            gid: DirectoryGroup(
                id=gid,
                dn=dn,
                name=name,
                member_users=NameSet(members[token]),
                member_groups=frozenset(token_gid[t] for t in nested),
                unresolved=tuple(unresolved),
            )
            for token, gid, dn, name, nested, unresolved in raw_groups
        }
        if len(users) != pointer["users"] or len(groups) != pointer["groups"]:
            raise ValueError("user or group count differs from the pointer")
        snapshot = DirectorySnapshot(
            users,
            groups,
            taken_at=float(pointer["taken_at"]),
            full_at=float(pointer["full_at"]),
            since=pointer.get("since"),
            issues=tuple(pointer.get("issues") or ()),
            incremental_ready=False,
        )
        delta_ids = frozenset(row[0] for row in delta_doc["users"]) if delta_doc is not None else frozenset()
        removed = frozenset(delta_doc.get("removed") or ()) if delta_doc is not None else frozenset()
        snapshot._stored = StoredLayout(
            store, record.version, pointer, {gid: t for t, gid in token_gid.items()}, delta_ids, removed
        )
        return snapshot
    except (Missing, ValueError):
        raise
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"damaged directory snapshot: {type(exc).__name__}") from exc
