"""Leader leases: "only one instance syncs the directory at a time".

``async with store.leader_lock("directory-sync") as lease:`` never waits; ``lease`` is truthy when
this process holds the lock. The lock dies with its holder (a PostgreSQL session, a file lock), so
another instance takes over on its next attempt. A long-running holder calls ``await lease.check()``
between steps to learn if it lost the lock (e.g. its database connection broke).
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}\Z")


class Lease:
    """The outcome of one leader_lock attempt."""

    __slots__ = ("name", "held")

    def __init__(self, name: str, held: bool) -> None:
        self.name = name
        self.held = held

    def __bool__(self) -> bool:
        return self.held

    async def check(self) -> bool:
        """Whether the lock is still ours."""
        return self.held

    def __repr__(self) -> str:
        return f"<Lease {self.name} {'held' if self.held else 'not held'}>"


def check_lock_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"lock name {name!r}: use letters, digits, '.', '_' or '-' (at most 100)")
    return name


@asynccontextmanager
async def file_lease(directory: Path, name: str) -> AsyncIterator[Lease]:
    """A lease held through flock on a file beside the database (released when the process dies)."""
    path = directory / f".lock-{check_lock_name(name)}"
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
        lease = Lease(name, held)
        try:
            yield lease
        finally:
            lease.held = False
            if held:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
