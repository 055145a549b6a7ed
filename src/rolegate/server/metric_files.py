"""Prometheus's per-process files reserve their disk blocks, so a full disk cannot kill a worker.

In multiprocess mode prometheus-client keeps each process's values in a memory-mapped file that it
creates sparse (1 MiB, doubled when it fills). The first write to a page with no block behind it,
on a disk that has just filled up (the data directory on a full volume), is answered by the kernel
with SIGBUS: the worker dies in the middle of a request and keeps dying after every respawn. With the
blocks reserved when the file is made or grown (``posix_fallocate``), writing a value never needs
new space; when there is no space to reserve, the failure is an ordinary OSError that names it.
"""

from __future__ import annotations

import errno
import os

from prometheus_client import values
from prometheus_client.mmap_dict import _INITIAL_MMAP_SIZE, MmapedDict

# Filesystems that cannot reserve blocks (EOPNOTSUPP, EINVAL) keep the sparse file, as before.
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)


class ReservedMmapedDict(MmapedDict):
    """``MmapedDict`` whose file has every block it maps allocated before the first write to it."""

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        if not read_mode:
            # Before MmapedDict writes its header into a new file: that write alone would SIGBUS.
            fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                _reserve(fd, max(os.fstat(fd).st_size, _INITIAL_MMAP_SIZE), filename)
            finally:
                os.close(fd)
        super().__init__(filename, read_mode)  # type: ignore[no-untyped-call]  # (unannotated in prometheus-client)

    def _init_value(self, key: str) -> None:
        # MmapedDict doubles the file when an entry does not fit and writes the entry at once: reserve
        # the doubled size first (an entry is its length, the key padded to 8 bytes, two doubles).
        need = self._used + 4 + len(key.encode("utf-8")) + 8 + 16
        capacity = self._capacity
        while need > capacity:
            capacity *= 2
        if capacity != self._capacity:
            _reserve(self._f.fileno(), capacity, self._fname)
        super()._init_value(key)  # type: ignore[no-untyped-call]  # (unannotated in prometheus-client)


def _reserve(fd: int, size: int, filename: str) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return
        raise OSError(
            exc.errno,
            f"cannot reserve {size} bytes for the metrics file {filename} (server.runtime_dir): {exc.strerror}",
        ) from None


def install() -> None:
    """Make prometheus-client open its per-process files as ReservedMmapedDict (before any value exists)."""
    values.MmapedDict = ReservedMmapedDict  # type: ignore[attr-defined]  # values imports MmapedDict, exports nothing
