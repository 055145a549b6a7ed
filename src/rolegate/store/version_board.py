"""Change versions every worker on this machine reads before each request, at memory speed.

The Store's counters are the truth; the board is a tiny memory-mapped file beside the database
that mirrors them, so "has anything changed?" costs one memory read per request instead of a
database round trip. A writer bumps the Store counter, then raises the board; readers compare the
board with the version their compiled state was built from. Other instances learn of a change
through the Store's notifications (Redis) or a periodic poll, and raise their own board.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import tempfile
from pathlib import Path
from typing import Protocol

# One 8-byte slot per watched counter; append only, never reorder.
SLOTS = ("policy", "sessions", "directory", "keys", "daypass", "config")
_SIZE = 8 * 32
_Q = struct.Struct("<q")
_SNAPSHOT = 8 * len(SLOTS)
# Slots 0 (policy), 2 (directory) and 4 (daypass), skipping sessions and keys.
_POLICY = struct.Struct("<q8xq8xq")


def board_path_for(storage_url: str, base_dir: Path | None = None) -> Path:
    """Where the board of a store lives: beside a SQLite file, else in /dev/shm (or the temp dir)."""
    if storage_url.startswith("sqlite:///"):
        db = Path(storage_url[len("sqlite:///") :])
        if not db.is_absolute() and base_dir is not None:
            db = base_dir / db
        return db.with_name(db.name + ".board")
    digest = hashlib.sha256(storage_url.encode()).hexdigest()[:16]
    shm = Path("/dev/shm")
    return (shm if shm.is_dir() else Path(tempfile.gettempdir())) / f"rolegate-{digest}.board"


class VersionBoard:
    """A shared array of monotonically increasing counters."""

    __slots__ = ("path", "_fd", "_map", "_offsets")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < _SIZE:
            os.ftruncate(self._fd, _SIZE)
        self._map = mmap.mmap(self._fd, _SIZE)
        self._offsets = {name: 8 * i for i, name in enumerate(SLOTS)}

    def snapshot(self) -> bytes:
        """Every counter at once, as bytes: equal snapshots mean nothing on the board moved."""
        return self._map[:_SNAPSHOT]

    def get(self, name: str) -> int:
        value: int = _Q.unpack_from(self._map, self._offsets[name])[0]
        return value

    def policy_versions(self) -> tuple[int, int, int]:
        """(policy, directory, daypass) in one read: what the compiled policy depends on."""
        return _POLICY.unpack_from(self._map, 0)

    def raise_to(self, name: str, value: int) -> int:
        """Set the counter to ``value`` unless it is already higher; return the counter."""
        offset = self._offsets[name]
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            current: int = _Q.unpack_from(self._map, offset)[0]
            if value > current:
                _Q.pack_into(self._map, offset, value)
                return value
            return current
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        try:
            self._map.close()
        finally:
            os.close(self._fd)


class _Counters(Protocol):
    """What bump needs of a Store (``publish`` too, when it has one)."""

    async def incr(self, name: str) -> int: ...


async def bump(store: _Counters, board: VersionBoard | None, name: str) -> int:
    """Record a change: increment the Store counter (the truth), then raise the local board."""
    value = await store.incr(name)
    if board is not None:
        board.raise_to(name, value)
    publish = getattr(store, "publish", None)
    if publish is not None:
        try:
            await publish("rolegate:versions", f"{name}={value}")
        except Exception:  # noqa: BLE001 - peers fall back to polling the counters
            pass
    return value
