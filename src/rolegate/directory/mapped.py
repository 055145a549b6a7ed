"""The directory snapshot as one read-only file that every worker maps: a worker's memory does not grow
with the directory.

The Store keeps the snapshot as JSON documents (``persist``). A worker does not turn them into a million
Python objects any more: the first worker of a machine to see a new version streams the documents into
one compact file in the server's runtime directory (``directory/``), renames it into place, and every
worker maps that file read-only (``mmap``). The kernel keeps one copy of its pages for all of them, and
only the pages a worker touches count in its memory. A lookup decodes the one record it needs (a memo in
front keeps the users a worker serves decoded); the Runtime swaps in the new file at the next request after
the ``directory`` counter moved, and an old mapping is released when the last request using it lets go.

File layout (little endian, every section 8-aligned; ``REF`` is a (blob offset, byte length) pair, a length
of ``NONE`` meaning None):

    header     MAGIC, then the section table (see ``_FIELDS``)
    users      one ``USER`` record per user: id, dn, username, email, name, attributes (JSON) as REFs,
               the closure number, flags (disabled, username shared by another entry)
    groups     one ``GROUP`` record per group: id, dn, name as REFs
    names      one REF per distinct group name met in a closure
    closures   CSR: ``closure_count + 1`` u32 starts into ``items``; ``items``: u32 name numbers
    by_name    open addressing, ``name_slots`` u32 slots: user number + 1 (0: empty), probed linearly from
               crc32(casefolded username) — the same in every process, unlike ``hash()``; every entry is
               in it, so all entries of one name lie on its probe run (a layer above needs them all)
    by_id      the same over user ids
    blob       every string, UTF-8 (``surrogatepass``: whatever text the directory gave comes back unchanged)

A name two entries share is found but refused (None), as ``DirectorySnapshot.user`` refuses it: fail closed.
The file is one layer of what a worker reads (``layered``): a base of the Store's chunks, or the small top
holding the groups, the users changed since that base, and (in its meta) the ids removed since.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import struct
import tempfile
import zlib
from array import array
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from rolegate.directory.model import NO_ATTRIBUTES, DirectorySnapshot, DirectoryUser
from rolegate.limits import MAPPED_USERS
from rolegate.memo import BoundedCache

log = logging.getLogger("rolegate.directory")

MAGIC = b"RGDSNAP\x03"  # 3: every entry of a shared name in by_name (2 held the first only)
NONE = 0xFFFFFFFF
DISABLED = 1
SHARED_NAME = 2  # the casefolded username is another entry's too: the name signs in nobody
_FIELDS = (
    "users_at", "user_count", "groups_at", "group_count", "names_at", "name_count",
    "starts_at", "closure_count", "items_at", "item_count", "by_name_at", "name_slots",
    "by_id_at", "id_slots", "blob_at", "blob_size", "meta_at", "meta_size",
    "member_starts_at", "member_items_at", "member_count",
)  # fmt: skip
HEADER = struct.Struct("<8s" + "Q" * len(_FIELDS))
REF = struct.Struct("<QI")
USER = struct.Struct("<" + "QI" * 6 + "IB")
GROUP = struct.Struct("<" + "QI" * 3)
U32 = struct.Struct("<I")
_FLAGS_AT = USER.size - 1
_BLOB_FLUSH = 1 << 20
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)  # Linux; elsewhere touched pages stay mapped
_RELEASE_EVERY = 4096  # users read in a pass over all of them between two releases
_KEEP_MAPPED = 4 << 20  # a file this small stays mapped as touched (a top file): at most its size in the RSS
FILE_PREFIX = "snapshot-"
FILE_SUFFIX = ".map"
LOCK_NAME = "build.lock"


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _hash(key: bytes) -> int:
    return zlib.crc32(key)


def _slots_for(count: int) -> int:
    slots = 8
    while slots < 2 * count:
        slots <<= 1
    return slots


def _align(position: int) -> int:
    return (position + 7) & ~7


# -- writing --------------------------------------------------------------------------------------------------


class SnapshotWriter:
    """Builds one snapshot file from users and groups added one by one; memory: fixed-size records only.

    Strings go to a temporary file as they come; the indexes are built at ``finish`` by reading them back
    through a mapping of that file, so a million users cost their records (~90 bytes each), not their objects.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._blob = tempfile.TemporaryFile(dir=directory, prefix="blob-")
        self._pending = bytearray()
        self._blob_size = 0
        self._users = bytearray()
        self._groups = bytearray()
        self._name_numbers: dict[str, int] = {}
        self._names = bytearray()
        self._starts = array("I", [0])
        self._items = array("I")

    def close(self) -> None:
        self._blob.close()

    def _text(self, value: str | None) -> tuple[int, int]:
        if value is None:
            return 0, NONE
        data = _encode(value)
        at = self._blob_size + len(self._pending)
        self._pending += data
        if len(self._pending) >= _BLOB_FLUSH:
            self._flush()
        return at, len(data)

    def _flush(self) -> None:
        self._blob.write(self._pending)
        self._blob_size += len(self._pending)
        self._pending.clear()

    def closure(self, names: Iterable[str]) -> int:
        """Add one set of group names (a user's groups, nesting resolved); returns its number.

        Not deduplicated here (a dict of every distinct set would cost more than the sets: in a directory where
        everyone is in a few teams of thousands, nearly every user's set is their own); callers pass each set
        once per document, where the Store's documents already share them."""
        numbers = self._name_numbers
        for name in sorted(set(names)):
            index = numbers.get(name)
            if index is None:
                index = numbers[name] = len(numbers)
                self._names += REF.pack(*self._text(name))
            self._items.append(index)
        self._starts.append(len(self._items))
        return len(self._starts) - 2

    def add_user(
        self,
        uid: str,
        dn: str,
        username: str,
        email: str | None,
        name: str | None,
        disabled: bool,
        closure: int,
        attributes: Mapping[str, Iterable[str]] | None,
    ) -> None:
        encoded = json.dumps({k: list(v) for k, v in attributes.items()}) if attributes else None
        fields: list[int] = []
        for text in (uid, dn, username, email, name, encoded):
            fields.extend(self._text(text))
        self._users += USER.pack(*fields, closure, DISABLED if disabled else 0)

    def add_group(self, gid: str, dn: str, name: str) -> None:
        fields: list[int] = []
        for text in (gid, dn, name):
            fields.extend(self._text(text))
        self._groups += GROUP.pack(*fields)

    def add_snapshot(self, snapshot: DirectorySnapshot) -> None:
        for group in snapshot.groups.values():
            self.add_group(group.id, group.dn, group.name)
        closures: dict[frozenset[str], int] = {}  # the snapshot's users share equal sets: one number each
        for user in snapshot.users.values():
            closure = closures.get(user.groups)
            if closure is None:
                closure = closures[user.groups] = self.closure(user.groups)
            self.add_user(
                user.id, user.dn, user.username, user.email, user.name, user.disabled, closure, user.attributes
            )

    def finish(self, path: Path, meta: Mapping[str, Any]) -> Path:
        """Write the file to ``path`` (atomically: a temporary name, then a rename) and return it."""
        meta_at, meta_size = self._text(json.dumps(dict(meta)))
        self._flush()
        self._blob.flush()
        users = self._users
        count = len(users) // USER.size
        by_name, by_id = self._indexes(count)
        member_starts, member_items = self._members(count)
        sections: list[tuple[str, bytes | bytearray | array[int]]] = [
            ("users_at", users),
            ("groups_at", self._groups),
            ("names_at", self._names),
            ("starts_at", self._starts),
            ("items_at", self._items),
            ("by_name_at", by_name),
            ("by_id_at", by_id),
            ("member_starts_at", member_starts),
            ("member_items_at", member_items),
        ]
        at = _align(HEADER.size)
        places: dict[str, int] = {}
        for name, data in sections:
            places[name] = at
            at = _align(at + len(data) * (data.itemsize if isinstance(data, array) else 1))
        values = dict(
            places,
            user_count=count,
            group_count=len(self._groups) // GROUP.size,
            name_count=len(self._names) // REF.size,
            closure_count=len(self._starts) - 1,
            item_count=len(self._items),
            name_slots=len(by_name),
            id_slots=len(by_id),
            blob_at=at,
            blob_size=self._blob_size,
            meta_at=meta_at,
            meta_size=meta_size,
            member_count=len(member_items),
        )
        header = HEADER.pack(MAGIC, *(values[f] for f in _FIELDS))
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            # 0600: the file holds every user's name and email (its directory is the server's, 0700, too)
            with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
                out.write(header)
                for name, data in sections:
                    out.seek(places[name])
                    out.write(data.tobytes() if isinstance(data, array) else data)
                out.seek(at)
                self._blob.seek(0)
                while block := self._blob.read(_BLOB_FLUSH):
                    out.write(block)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        finally:
            self.close()
        return path

    def _members(self, count: int) -> tuple[array[int], array[int]]:
        """CSR of group name number -> user numbers (users in the group, nesting resolved), so the members of
        one group (a 403 page's approvers) are read without a pass over every user."""
        lists = [array("I") for _ in range(len(self._name_numbers))]
        starts, items, users = self._starts, self._items, self._users
        for number in range(count):
            closure = USER.unpack_from(users, number * USER.size)[12]
            for position in range(starts[closure], starts[closure + 1]):
                lists[items[position]].append(number)
        member_starts = array("I", [0])
        member_items = array("I")
        for members in lists:
            member_items.extend(members)
            member_starts.append(len(member_items))
        return member_starts, member_items

    def _indexes(self, count: int) -> tuple[array[int], array[int]]:
        """The username and id tables, probing with the strings read back from the blob."""
        name_slots, id_slots = _slots_for(count), _slots_for(count)
        by_name = array("I", bytes(4 * name_slots))
        by_id = array("I", bytes(4 * id_slots))
        if count == 0:
            return by_name, by_id
        users = self._users
        with mmap.mmap(self._blob.fileno(), 0, access=mmap.ACCESS_READ) as blob:

            def text(at: int, size: int) -> bytes:
                return blob[at : at + size]

            name_mask, id_mask = name_slots - 1, id_slots - 1
            for number in range(count):
                fields = USER.unpack_from(users, number * USER.size)
                uid = text(fields[0], fields[1])
                slot = _hash(uid) & id_mask
                while by_id[slot]:
                    other = USER.unpack_from(users, (by_id[slot] - 1) * USER.size)
                    if text(other[0], other[1]) == uid:
                        raise ValueError("damaged directory snapshot: a user id is stored twice")
                    slot = (slot + 1) & id_mask
                by_id[slot] = number + 1
                key = _encode(text(fields[4], fields[5]).decode("utf-8", "surrogatepass").casefold())
                slot = _hash(key) & name_mask
                while by_name[slot]:
                    other_number = by_name[slot] - 1
                    other = USER.unpack_from(users, other_number * USER.size)
                    if _encode(text(other[4], other[5]).decode("utf-8", "surrogatepass").casefold()) == key:
                        users[other_number * USER.size + _FLAGS_AT] |= SHARED_NAME
                        users[number * USER.size + _FLAGS_AT] |= SHARED_NAME
                    slot = (slot + 1) & name_mask
                by_name[slot] = number + 1
        return by_name, by_id


def snapshot_meta(snapshot: DirectorySnapshot) -> dict[str, Any]:
    return {
        "taken_at": snapshot.taken_at,
        "full_at": snapshot.full_at,
        "since": snapshot.since,
        "issues": list(snapshot.issues),
    }


def write_snapshot_file(snapshot: DirectorySnapshot, path: Path) -> Path:
    """``snapshot`` as a mapped-snapshot file at ``path``."""
    writer = SnapshotWriter(path.parent)
    try:
        writer.add_snapshot(snapshot)
    except BaseException:
        writer.close()
        raise
    return writer.finish(path, snapshot_meta(snapshot))


# -- reading --------------------------------------------------------------------------------------------------


class MappedSnapshot:
    """A snapshot file mapped read-only; reads like ``DirectorySnapshot`` (``user``, ``users``, iteration).

    Decoded users are kept in a bounded memo per mapping (the users this worker serves); closures are shared
    frozensets. Dropping the last reference releases the mapping (no view of it is ever handed out).
    """

    __slots__ = (
        "path", "users", "meta", "taken_at", "full_at", "since", "issues", "group_count",
        "_mm", "_head", "_decoded", "_closures", "_names", "_name_numbers", "_releases",
    )  # fmt: skip

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < HEADER.size:
                raise ValueError(f"damaged directory snapshot file {path.name}: too short")
            self._mm = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        self._releases = _DONTNEED is not None and size > _KEEP_MAPPED
        magic, *values = HEADER.unpack_from(self._mm, 0)
        if magic != MAGIC:
            raise ValueError(f"damaged directory snapshot file {path.name}: not a snapshot file")
        head = dict(zip(_FIELDS, values))
        self._head = head
        extents = (
            ("users_at", head["user_count"] * USER.size),
            ("groups_at", head["group_count"] * GROUP.size),
            ("names_at", head["name_count"] * REF.size),
            ("starts_at", (head["closure_count"] + 1) * 4),
            ("items_at", head["item_count"] * 4),
            ("by_name_at", head["name_slots"] * 4),
            ("by_id_at", head["id_slots"] * 4),
            ("blob_at", head["blob_size"]),
            ("member_starts_at", (head["name_count"] + 1) * 4),
            ("member_items_at", head["member_count"] * 4),
        )
        for field, length in extents:
            if head[field] + length > size:
                raise ValueError(f"damaged directory snapshot file {path.name}: {field} runs past the end")
        for slots in ("name_slots", "id_slots"):
            if head[slots] & (head[slots] - 1) or not head[slots]:
                raise ValueError(f"damaged directory snapshot file {path.name}: {slots} is not a power of two")
        try:
            meta = json.loads(self._text(head["meta_at"], head["meta_size"]) or "{}")
            if not isinstance(meta, dict):
                raise TypeError("meta is not an object")
            self.meta: dict[str, Any] = meta
            self.taken_at = float(meta.get("taken_at") or 0.0)
            self.full_at = float(meta.get("full_at") or 0.0)
            self.since: str | None = meta.get("since")
            self.issues: tuple[str, ...] = tuple(meta.get("issues") or ())
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"damaged directory snapshot file {path.name}: {type(exc).__name__}") from None
        self.group_count: int = head["group_count"]
        self._decoded: BoundedCache[int, DirectoryUser] = BoundedCache(MAPPED_USERS)
        self._closures: BoundedCache[int, frozenset[str]] = BoundedCache(MAPPED_USERS)
        self._names: dict[int, str] = {}
        self._name_numbers: dict[str, int] | None = None
        self.users = MappedUsers(self)

    # -- what DirectorySnapshot offers ---------------------------------------------------------------------------

    @property
    def incremental_ready(self) -> bool:
        return False  # the incremental bookkeeping (direct memberships) lives in the syncing process only

    def __len__(self) -> int:
        return int(self._head["user_count"])

    def __iter__(self) -> Iterator[DirectoryUser]:
        try:
            for number in range(len(self)):
                if number % _RELEASE_EVERY == 0:
                    self._release()
                yield self._user_at(number, remember=False)
        finally:
            self._release()

    def user(self, username: str) -> DirectoryUser | None:
        """The user signing in as ``username`` (case-insensitive); None if unknown or the name is shared."""
        key = username.casefold()
        try:
            number = next(self._matches("by_name_at", "name_slots", _encode(key), 4, casefold=True), None)
            if number is None:
                return None
            if self._mm[self._head["users_at"] + number * USER.size + _FLAGS_AT] & SHARED_NAME:
                return None
            return self._user_at(number)
        finally:
            self._release()

    # -- what a layer above reads (``layered``) ------------------------------------------------------------------

    def named(self, key: str) -> list[DirectoryUser]:
        """Every entry whose casefolded username is ``key``, a shared name's too (the layer above decides)."""
        found = []
        flags_at = self._head["users_at"] + _FLAGS_AT
        try:
            for number in self._matches("by_name_at", "name_slots", _encode(key), 4, casefold=True):
                found.append(self._user_at(number))
                if not self._mm[flags_at + number * USER.size] & SHARED_NAME:
                    break  # a name no other entry has: the rest of the probe run cannot hold it
            return found
        finally:
            self._release()

    def find_id(self, uid: str) -> DirectoryUser | None:
        return self._by_id(uid)

    def contains_id(self, uid: str) -> bool:
        try:
            return next(self._matches("by_id_at", "id_slots", _encode(uid), 0), None) is not None
        finally:
            self._release()

    def members(self, group: str) -> Iterator[DirectoryUser]:
        """The users in the group named ``group`` (nesting resolved), read from the members index."""
        numbers = self._name_numbers
        if numbers is None:
            head = self._head
            numbers = self._name_numbers = {}
            for index in range(head["name_count"]):
                at, size = REF.unpack_from(self._mm, head["names_at"] + REF.size * index)
                numbers[self._text(at, size) or ""] = index
        index = numbers.get(group)
        if index is None:
            return
        head, mm = self._head, self._mm
        start = U32.unpack_from(mm, head["member_starts_at"] + 4 * index)[0]
        end = U32.unpack_from(mm, head["member_starts_at"] + 4 * index + 4)[0]
        try:
            for position in range(start, end):
                if (position - start) % _RELEASE_EVERY == 0:
                    self._release()
                number = U32.unpack_from(mm, head["member_items_at"] + 4 * position)[0]
                if number >= head["user_count"]:
                    raise ValueError(f"damaged directory snapshot file {self.path.name}: a member names no user")
                yield self._user_at(number, remember=False)
        finally:
            self._release()

    def groups(self) -> list[tuple[str, str, str]]:
        """(id, dn, name) of every group."""
        at, text = self._head["groups_at"], self._text
        out = []
        for number in range(self.group_count):
            f = GROUP.unpack_from(self._mm, at + number * GROUP.size)
            out.append((text(f[0], f[1]) or "", text(f[2], f[3]) or "", text(f[4], f[5]) or ""))
        return out

    def close(self) -> None:
        """Release the mapping now (otherwise: when the last reference goes)."""
        self._mm.close()

    def _release(self) -> None:
        """Unmap from this process the pages a look-up touched; the kernel keeps them cached for every worker.

        The page cache hands a fault large folios (up to 2 MiB each on this kernel): without this, each user
        decoded maps megabytes into the worker (400 look-ups at 1,000,000 users: +200 MB RSS), so its RSS would
        grow toward the file's size. With it RSS stays flat; a look-up (a memo miss: a user's first request per
        snapshot version) costs ~67 us instead of ~19. A file of 4 MiB or less (a top file) is left mapped as
        touched: it can add no more than its size."""
        if self._releases:
            self._mm.madvise(_DONTNEED)  # type: ignore[arg-type]  # not None: see __init__

    def __repr__(self) -> str:
        return f"<MappedSnapshot {len(self)} users, {self.group_count} groups, {self.path.name}>"

    # -- the file ------------------------------------------------------------------------------------------------

    def _text(self, at: int, size: int) -> str | None:
        if size == NONE:
            return None
        start = self._head["blob_at"] + at
        return self._mm[start : start + size].decode("utf-8", "surrogatepass")

    def _matches(
        self, table: str, slots_field: str, key: bytes, field: int, *, casefold: bool = False
    ) -> Iterator[int]:
        """The numbers of the users whose ``field`` is ``key``, along its probe run (ids are unique: one)."""
        head, mm = self._head, self._mm
        mask = head[slots_field] - 1
        base, users_at, blob_at = head[table], head["users_at"], head["blob_at"]
        slot = _hash(key) & mask
        for _probe in range(mask + 1):
            entry = U32.unpack_from(mm, base + 4 * slot)[0]
            if not entry:
                return
            number = entry - 1
            if number >= head["user_count"]:
                raise ValueError(f"damaged directory snapshot file {self.path.name}: index names no user")
            fields = USER.unpack_from(mm, users_at + number * USER.size)
            at, size = fields[field], fields[field + 1]
            stored = mm[blob_at + at : blob_at + at + size]
            if casefold:
                stored = _encode(stored.decode("utf-8", "surrogatepass").casefold())
            if stored == key:
                yield number
            slot = (slot + 1) & mask

    def _user_at(self, number: int, *, remember: bool = True) -> DirectoryUser:
        user = self._decoded.get(number)
        if user is not None:
            return user
        fields = USER.unpack_from(self._mm, self._head["users_at"] + number * USER.size)
        text = self._text
        attributes = text(fields[10], fields[11])
        user = DirectoryUser(
            id=text(fields[0], fields[1]) or "",
            dn=text(fields[2], fields[3]) or "",
            username=text(fields[4], fields[5]) or "",
            email=text(fields[6], fields[7]),
            name=text(fields[8], fields[9]),
            disabled=bool(fields[13] & DISABLED),
            groups=self._closure(fields[12]),
            attributes={k: tuple(v) for k, v in json.loads(attributes).items()} if attributes else NO_ATTRIBUTES,
        )
        if remember:
            self._decoded.put(number, user)
        return user

    def _closure(self, number: int) -> frozenset[str]:
        found = self._closures.get(number)
        if found is not None:
            return found
        head, mm = self._head, self._mm
        if number >= head["closure_count"]:
            raise ValueError(f"damaged directory snapshot file {self.path.name}: closure {number} is not there")
        start = U32.unpack_from(mm, head["starts_at"] + 4 * number)[0]
        end = U32.unpack_from(mm, head["starts_at"] + 4 * number + 4)[0]
        names = []
        for position in range(start, end):
            index = U32.unpack_from(mm, head["items_at"] + 4 * position)[0]
            name = self._names.get(index)
            if name is None:
                at, size = REF.unpack_from(mm, head["names_at"] + REF.size * index)
                name = self._names[index] = self._text(at, size) or ""
            names.append(name)
        return self._closures.put(number, frozenset(names))

    def _by_id(self, uid: str) -> DirectoryUser | None:
        try:
            number = next(self._matches("by_id_at", "id_slots", _encode(uid), 0), None)
            return None if number is None else self._user_at(number)
        finally:
            self._release()


class _ById(Protocol):
    def find_id(self, uid: str) -> DirectoryUser | None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[DirectoryUser]: ...


class MappedUsers(Mapping[str, DirectoryUser]):
    """id -> user over a mapped snapshot or a stack of them (``snapshot.users``), decoded on demand."""

    __slots__ = ("_snapshot",)

    def __init__(self, snapshot: _ById) -> None:
        self._snapshot = snapshot

    def __getitem__(self, uid: str) -> DirectoryUser:
        user = self._snapshot.find_id(uid) if isinstance(uid, str) else None
        if user is None:
            raise KeyError(uid)
        return user

    def __len__(self) -> int:
        return len(self._snapshot)

    def __iter__(self) -> Iterator[str]:
        for user in self._snapshot:
            yield user.id

    def values(self) -> Iterator[DirectoryUser]:  # type: ignore[override]  # one pass, no look-up per id
        return iter(self._snapshot)


__all__ = [
    "MappedSnapshot",
    "MappedUsers",
    "SnapshotWriter",
    "snapshot_meta",
    "write_snapshot_file",
]
