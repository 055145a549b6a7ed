"""A small disk of a test's own: a tmpfs of a given size, to fill."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def mount_tmpfs(where: Path, size: str) -> None:
    """Mount a ``size`` tmpfs on ``where`` (made here); fails the test, saying why, where it cannot."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.fail(
            f"this test fills a small disk and needs to mount a tmpfs (root or CAP_SYS_ADMIN); "
            f"`mount -t tmpfs` on {where} failed: {mounted.stderr.strip() or mounted.returncode}"
        )


@contextlib.contextmanager
def small_disk_at(where: Path, size: str) -> Iterator[Path]:
    """A ``size`` tmpfs on ``where`` for the block, unmounted after it."""
    mount_tmpfs(where, size)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
