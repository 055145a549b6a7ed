"""``map_snapshot``: the Store's snapshot as the file every worker of one server maps (see ``mapped``).

The workers of a server share one directory (``directory/`` in its runtime directory). The first worker to
see a new stored version takes the directory's build lock, streams the Store's documents into the file and
renames it into place; the others wait on the lock, find the file and map it. The name of a file says which
stored snapshot it holds (pointer version and a digest of the documents named), so a worker never maps a
file of another version than the pointer it read; an older file is removed when a newer one is built (a
worker still reading it keeps its pages until it lets go). Another instance of a scale-out builds its own
copy in its own runtime directory.

The documents are read as ``persist`` writes them (base chunks, one delta, one groups document) without
building a Python object per user: the builder holds one document and the fixed-size records at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from rolegate.directory.gcpause import paused_gc
from rolegate.directory.model import SnapshotView
from rolegate.directory.mapped import FILE_PREFIX, FILE_SUFFIX, MappedSnapshot, SnapshotWriter, write_snapshot_file
from rolegate.directory.persist import (
    LAYOUT,
    chunk_documents,
    decode_snapshot,
    fetch_document,
    load_snapshot,
    read_stored,
)

log = logging.getLogger("rolegate.directory")

LOCK_NAME = "build.lock"


def file_name(pointer_version: int, pointer: Any) -> str:
    """The file of one stored snapshot: its pointer's version and a digest of the pointer document."""
    digest = hashlib.sha256(json.dumps(pointer, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{FILE_PREFIX}{pointer_version:010d}-{digest}{FILE_SUFFIX}"


async def map_snapshot(store: Any, directory: Path) -> SnapshotView | None:
    """The stored snapshot, mapped from ``directory`` (built there first when no worker has yet).

    None when the Store holds none, or it cannot be read (fail closed, as ``load_snapshot``). When the file
    cannot be written or mapped (a full disk, a runtime directory gone), the snapshot is read into this worker's
    memory as before the shared file existed: correct answers first, the memory saving when the disk allows."""

    async def mapped(record: Any) -> MappedSnapshot:
        path = directory / file_name(record.version, record.value)
        found = _open(path)
        if found is not None:
            return found
        fd = await _lock(directory)
        try:
            found = _open(path)  # built by another worker while this one waited
            if found is None:
                await _build(store, record, path)
                _give_back_memory()
                _sweep(directory, keep=path.name)
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


async def _lock(directory: Path) -> int:
    """An exclusive flock on the directory's build lock, waited for in a thread (the loop serves on)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _sweep(directory: Path, keep: str) -> None:
    """Remove every snapshot file but ``keep``, and any a killed builder left half written (the caller holds
    the build lock, so no builder is writing one now)."""
    for entry in directory.iterdir():
        name = entry.name
        if (name.startswith(FILE_PREFIX) and name.endswith(FILE_SUFFIX) and name != keep) or (
            name.startswith(".") and name.endswith(".tmp")
        ):
            with contextlib.suppress(OSError):
                entry.unlink()


async def _build(store: Any, record: Any, path: Path) -> None:
    pointer = record.value
    if not (isinstance(pointer, dict) and pointer.get("format") == LAYOUT):
        with paused_gc():
            write_snapshot_file(decode_snapshot(pointer), path)  # format 1: one small document
        return
    writer = SnapshotWriter(path.parent)
    try:
        with paused_gc():
            users = await _stream(store, pointer, writer)
        if users != pointer.get("users"):
            raise ValueError("user count differs from the pointer")
        meta = {k: pointer.get(k) for k in ("taken_at", "full_at", "since", "issues")}
        writer.finish(path, meta)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        writer.close()
        raise ValueError(f"damaged directory snapshot: {type(exc).__name__}") from exc
    except BaseException:
        writer.close()
        raise


async def _stream(store: Any, pointer: dict[str, Any], writer: SnapshotWriter) -> int:
    """Every group and user the pointer's documents hold into ``writer``; returns the users written."""
    groups_doc = await fetch_document(store, pointer["group_doc"])
    delta_doc = await fetch_document(store, pointer["delta"]) if pointer.get("delta") is not None else None
    count = 0
    for _token, gid, dn, name, _nested, _unresolved in groups_doc["groups"]:
        writer.add_group(gid, dn, name)
        count += 1
    if count != pointer["groups"]:
        raise ValueError("group count differs from the pointer")
    skip: set[str] = set()
    if delta_doc is not None:
        skip = {row[0] for row in delta_doc["users"]}
        skip.update(delta_doc.get("removed") or ())
    written = 0

    def write(document: dict[str, Any], skip: set[str]) -> None:
        nonlocal written
        closures = [writer.closure(names) for names in document["closures"]]  # shared within the document
        for uid, dn, username, email, name, disabled, position, attributes, _tokens in document["users"]:
            if uid in skip:
                continue
            writer.add_user(uid, dn, username, email, name, bool(disabled), closures[position], attributes)
            written += 1

    async with contextlib.aclosing(chunk_documents(store, pointer)) as documents:
        async for document in documents:
            write(document, skip)
            del document
    if delta_doc is not None:
        write(delta_doc, set())
    return written


__all__ = ["file_name", "map_snapshot"]
