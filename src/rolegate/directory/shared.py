"""``map_snapshot``: the Store's snapshot as the files every worker of one server maps (see ``mapped``).

The workers of a server share one directory (``directory/`` in its runtime directory). The first worker to
see a new stored version takes the directory's build lock, streams the Store's documents into files and
renames them into place; the others wait on the lock, find the files and map them. A version is two files,
read as one stack (``layered``): the base (``snapshot-base-<digest of the chunk keys>.map``), built only when
the Store's base chunks change, and the top (``snapshot-<pointer version>-<digest of the pointer>.map``:
groups, the delta's users, the removed ids), built per version in milliseconds. So an incremental sync no
longer makes the workers rebuild the whole directory while requests wait (16 s at 1,000,000 users). The
names say which stored snapshot a file holds, so a worker never maps another version than the pointer it
read; older files are removed when newer ones are built (a worker still reading one keeps its pages until it
lets go). Another instance of a scale-out builds its own copy in its own runtime directory.

The documents are read as ``persist`` writes them (base chunks, one delta, one groups document) without
building a Python object per user: the builder holds one document and the fixed-size records at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rolegate.directory.gcpause import paused_gc
from rolegate.directory.layered import Layer, LayeredSnapshot
from rolegate.directory.model import SnapshotView
from rolegate.directory.mapped import FILE_PREFIX, FILE_SUFFIX, MappedSnapshot, SnapshotWriter, write_snapshot_file
from rolegate.directory.persist import (
    LAYOUT,
    pointer_digest,
    chunk_documents,
    decode_snapshot,
    fetch_document,
    load_snapshot,
    read_stored,
)

log = logging.getLogger("rolegate.directory")

LOCK_NAME = "build.lock"  # held while a version's files are built (the workers wait for it)
BASE_LOCK_NAME = "base.lock"  # held while a base file is built in the background (nobody waits for it)
MAX_FOLDS = 4  # folded stacks a base may be stood for by, one on another


def file_name(pointer_version: int, pointer: Any) -> str:
    """The top file of one stored snapshot: its pointer's version and a digest of the pointer document."""
    return _top_name(pointer_version, pointer_digest(pointer))


def _top_name(version: int, digest: str) -> str:
    return f"{FILE_PREFIX}{version:010d}-{digest}{FILE_SUFFIX}"


def base_name(pointer: dict[str, Any]) -> str:
    """The file of a pointer's base chunks (the same for every version that keeps them)."""
    return f"{FILE_PREFIX}base-{pointer_digest(pointer.get('chunks'))}{FILE_SUFFIX}"


def _folded_name(pointer: dict[str, Any]) -> str | None:
    """The top file of the version a compaction folded into this pointer's base (its content), if named."""
    folded = pointer.get("folded")
    if isinstance(folded, list) and len(folded) == 2 and isinstance(folded[0], int) and isinstance(folded[1], str):
        return _top_name(folded[0], folded[1])
    return None


async def map_snapshot(
    store: Any,
    directory: Path,
    previous: SnapshotView | None = None,
    background: set[asyncio.Task[None]] | None = None,
) -> SnapshotView | None:
    """The stored snapshot, mapped from ``directory`` (built there first when no worker has yet).

    A format-2 snapshot is read as a stack (``layered``): the base file, built when the Store's base chunks
    change, and a small top file per stored version. After a compaction (a new base holding what the version
    before it held), the stack of that version stands for the new base until its file is built in the
    background (its task kept in ``background``, the caller's: the Runtime's; without it, the stack serves
    until the base file is there), so no request waits for it. ``previous`` (what this worker mapped last)
    lends its mappings, decoded users and all, where the files are the same.

    None when the Store holds none, or it cannot be read (fail closed, as ``load_snapshot``). When a file
    cannot be written or mapped (a full disk, a runtime directory gone), the snapshot is read into this worker's
    memory as before the shared file existed: correct answers first, the memory saving when the disk allows."""
    shelf = _Shelf(directory, previous)

    async def mapped(record: Any) -> SnapshotView:
        pointer = record.value
        top_name = file_name(record.version, pointer)
        if not (isinstance(pointer, dict) and pointer.get("format") == LAYOUT):
            return await _single(store, record, directory / top_name)
        found = shelf.stack(top_name)
        if found is None:
            fd = await _lock(directory, LOCK_NAME)
            try:
                found = shelf.stack(top_name)  # built by another worker while this one waited
                if found is None:
                    found = await _build_version(store, record, shelf)
            finally:
                _unlock(fd)
        if not isinstance(found.lower, MappedSnapshot):  # a folded stack stands for the base: build it meanwhile
            _build_later(store, pointer, directory / base_name(pointer), background)
        return found

    async def _single(store: Any, record: Any, path: Path) -> SnapshotView:
        found = _open(path)
        if found is not None:
            return found
        fd = await _lock(directory, LOCK_NAME)
        try:
            found = _open(path)
            if found is None:
                await _build(store, record, path)
                _done(directory, keep={path.name})
                found = MappedSnapshot(path)
            return found
        finally:
            _unlock(fd)

    try:
        return await read_stored(store, mapped)
    except OSError as exc:
        log.error(
            "directory: cannot write or map the shared snapshot file in %s (%s: %s); this worker reads the "
            "snapshot into its own memory until it can",
            directory,
            type(exc).__name__,
            exc,
        )
        return await load_snapshot(store)


async def _build_version(store: Any, record: Any, shelf: _Shelf) -> LayeredSnapshot:
    """The version's top file over its base (mapped, stood for by the folded version's stack, or built now)."""
    pointer, directory = record.value, shelf.directory
    base_file, folded = base_name(pointer), _folded_name(pointer)
    lower: Layer | None = shelf.file(base_file)
    stood_for = None
    if lower is None and folded is not None:
        lower = shelf.stack(folded)
        stood_for = folded if lower is not None else None
    built_base = lower is None
    if lower is None:
        await _build_base(store, pointer, directory / base_file)
        lower = MappedSnapshot(directory / base_file)
    top_path = directory / file_name(record.version, pointer)
    try:
        await _build_top(store, record, top_path, lower, base_file, stood_for)
    except ValueError:
        if built_base:
            with contextlib.suppress(OSError):
                (directory / base_file).unlink()  # it does not add up to what the pointer says
        raise
    found = _layers(lower, MappedSnapshot(top_path))
    _done(directory, keep={base_file, *_files_of(found)})
    return found


class _Shelf:
    """The files of one runtime directory as this worker maps them, reusing what it mapped last."""

    def __init__(self, directory: Path, previous: SnapshotView | None) -> None:
        self.directory = directory
        self.held: dict[str, Any] = {}  # file name -> the MappedSnapshot or LayeredSnapshot mapped from it
        layer: Any = previous
        while isinstance(layer, LayeredSnapshot):
            self.held.setdefault(layer.top.path.name, layer)
            layer = layer.lower
        if isinstance(layer, MappedSnapshot):
            self.held.setdefault(layer.path.name, layer)

    def file(self, name: Any) -> MappedSnapshot | None:
        if not isinstance(name, str) or Path(name).name != name or not name.startswith(FILE_PREFIX):
            return None
        held = self.held.get(name)
        if isinstance(held, LayeredSnapshot):
            return held.top
        return held if isinstance(held, MappedSnapshot) else _open(self.directory / name)

    def stack(self, top_name: str, depth: int = 0) -> LayeredSnapshot | None:
        """The stack a top file heads, when every file under it is there (None: build it)."""
        held = self.held.get(top_name)
        if isinstance(held, LayeredSnapshot):
            return held
        top = self.file(top_name)
        if top is None:
            return None
        meta = top.meta
        lower: Layer | None = self.file(meta.get("base"))
        if lower is None and isinstance(meta.get("folded"), str) and depth < MAX_FOLDS:
            lower = self.stack(meta["folded"], depth + 1)
        if lower is None:
            return None  # not closed: the mapping may be one ``previous`` still serves; it goes with its last user
        try:
            return _layers(lower, top)
        except ValueError as exc:
            log.warning("directory: %s; building it again", exc)
            with contextlib.suppress(OSError):
                top.path.unlink()
            return None


def _layers(lower: Layer, top: MappedSnapshot) -> LayeredSnapshot:
    meta = top.meta
    removed, count = meta.get("removed"), meta.get("users")
    if not isinstance(removed, list) or not isinstance(count, int) or not isinstance(meta.get("base"), str):
        raise ValueError(f"damaged directory snapshot file {top.path.name}: not a top file")
    return LayeredSnapshot(lower, top, frozenset(removed), count)


def _files_of(stack: Any) -> list[str]:
    names = []
    while isinstance(stack, LayeredSnapshot):
        names.append(stack.top.path.name)
        stack = stack.lower
    if isinstance(stack, MappedSnapshot):
        names.append(stack.path.name)
    return names


def _done(directory: Path, keep: set[str]) -> None:
    _give_back_memory()
    _sweep(directory, keep)


def _build_later(store: Any, pointer: dict[str, Any], path: Path, background: set[asyncio.Task[None]] | None) -> None:
    """Build a base file in the background, its task kept in ``background`` (one task per file in a process;
    one builder per machine: the base lock)."""
    if background is None or path.exists() or any(task.get_name() == str(path) for task in background):
        return
    task = asyncio.get_running_loop().create_task(_base_in_background(store, pointer, path), name=str(path))
    background.add(task)
    task.add_done_callback(background.discard)


async def _base_in_background(store: Any, pointer: dict[str, Any], path: Path) -> None:
    fd = await _lock(path.parent, BASE_LOCK_NAME)
    try:
        if path.exists():
            return
        await _build_base(store, pointer, path)
        _give_back_memory()
        log.info("directory: built %s in the background", path.name)
    except Exception as exc:  # noqa: BLE001 - the stack serves meanwhile; the next version tries again
        log.warning("directory: could not build %s in the background (%s: %s)", path.name, type(exc).__name__, exc)
    finally:
        _unlock(fd)


def _give_back_memory() -> None:
    """Hand the heap the build freed back to the kernel: glibc keeps freed arenas for reuse, so the worker
    that built the file would stay as large as the build was (~90 bytes a user) while the others do not."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _open(path: Path) -> MappedSnapshot | None:
    """The file mapped; None when it is not there, or is damaged (removed: the caller builds it again)."""
    try:
        return MappedSnapshot(path)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        log.warning("directory: %s; building it again", exc)
        with contextlib.suppress(OSError):
            path.unlink()
        return None


async def _lock(directory: Path, name: str = LOCK_NAME) -> int:
    """An exclusive flock on one of the directory's locks, waited for in a thread (the loop serves on)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _held(path: Path) -> bool:
    """True when some process holds the flock on ``path``."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing lets go of a lock just taken
    return False


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _sweep(directory: Path, keep: set[str]) -> None:
    """Remove every snapshot file but ``keep``, and any a killed builder left half written (the caller holds
    the build lock, so no builder is writing one now; a background base builder alive holds the base lock)."""
    background = _held(directory / BASE_LOCK_NAME)
    for entry in directory.iterdir():
        name = entry.name
        if (name.startswith(FILE_PREFIX) and name.endswith(FILE_SUFFIX) and name not in keep) or (
            name.startswith(".")
            and name.endswith(".tmp")
            and not (background and name.startswith(f".{FILE_PREFIX}base-"))
        ):
            with contextlib.suppress(OSError):
                entry.unlink()


async def _build(store: Any, record: Any, path: Path) -> None:
    """A format-1 snapshot (one small document) as one file."""
    with paused_gc():
        write_snapshot_file(decode_snapshot(record.value), path)


async def _build_base(store: Any, pointer: dict[str, Any], path: Path) -> None:
    """Every user of the pointer's base chunks, as they are stored (the delta is the top's).

    The records and the indexes are made in a thread, so the worker's loop keeps answering meanwhile (it shares
    the interpreter lock, taking turns every few milliseconds): built inline, a base of 1,000,000 users held the
    loop up to 11 s at a time."""
    with _writing(path.parent) as writer, paused_gc():
        async with contextlib.aclosing(chunk_documents(store, pointer)) as documents:
            async for document in documents:
                await asyncio.to_thread(_write_users, writer, document)
                del document
        await asyncio.to_thread(writer.finish, path, {})


async def _build_top(
    store: Any, record: Any, path: Path, base: Layer, base_file: str, folded: str | None = None
) -> None:
    """The version's groups, the users its delta writes, and the ids it removes, over ``base`` (the file
    ``base_file``, or the stack of ``folded`` standing for it); checked to add up to the pointer's counts (a
    damaged or mismatched document fails closed)."""
    pointer = record.value
    with _writing(path.parent) as writer:
        groups_doc = await fetch_document(store, pointer["group_doc"])
        delta_doc = await fetch_document(store, pointer["delta"]) if pointer.get("delta") is not None else None
        with paused_gc():
            for _token, gid, dn, name, _nested, _unresolved in groups_doc["groups"]:
                writer.add_group(gid, dn, name)
            if len(groups_doc["groups"]) != pointer["groups"]:
                raise ValueError("group count differs from the pointer")
            removed: list[str] = []
            count = len(base)
            if delta_doc is not None:
                written = _write_users(writer, delta_doc)
                removed = sorted(delta_doc.get("removed") or ())
                if not all(isinstance(uid, str) for uid in removed):
                    raise ValueError("a removed id is not text")
                count += len(written) - sum(base.contains_id(uid) for uid in (*written, *removed))
            if count != pointer["users"]:
                raise ValueError("user count differs from the pointer")
            meta = {k: pointer.get(k) for k in ("taken_at", "full_at", "since", "issues")}
            writer.finish(path, {**meta, "users": count, "removed": removed, "base": base_file, "folded": folded})


@contextlib.contextmanager
def _writing(directory: Path) -> Iterator[SnapshotWriter]:
    """A file writer, closed (its scratch file gone) on any failure; a stored document of the wrong shape is
    damage: ValueError, which fails closed."""
    writer = SnapshotWriter(directory)
    try:
        yield writer
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        writer.close()
        raise ValueError(f"damaged directory snapshot: {type(exc).__name__}") from exc
    except BaseException:
        writer.close()
        raise


def _write_users(writer: SnapshotWriter, document: dict[str, Any]) -> list[str]:
    """One stored document's users into ``writer``; their ids."""
    closures = [writer.closure(names) for names in document["closures"]]  # shared within the document
    ids = []
    for uid, dn, username, email, name, disabled, position, attributes, _tokens in document["users"]:
        writer.add_user(uid, dn, username, email, name, bool(disabled), closures[position], attributes)
        ids.append(uid)
    return ids


__all__ = ["base_name", "file_name", "map_snapshot"]
