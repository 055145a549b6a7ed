"""The runtime directory of one ``rolegate serve``: files that live exactly as long as the server does.

``server.runtime_dir`` (default ``run/`` in the data directory: beside the SQLite database, or the
working directory when the store is a server) holds one ``rolegate-<pid>-<random>/`` directory per
running master, with the Prometheus files its workers write (``metrics/``).

Every process of that server (the master and each worker) holds a shared ``flock`` on its ``lock``
file. On the way out each one tries to take the lock exclusively, and the one that gets it, the
last one out, removes the directory. So a clean stop, a master that dies (its workers drain and
exit) and a crash loop leave nothing behind. When all of them were killed at once (``kill -9`` of
the whole group, the OOM killer), the next start removes the directory: nobody holds its lock any
more. The lock is taken before the directory gets its name, so a starting server never sweeps a
live one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path

from rolegate.config import Config
from rolegate.errors import ConfigError

log = logging.getLogger("rolegate.serve")

LOCK = "lock"
PREFIX = "rolegate-"


def runtime_root(config: Config, base_dir: Path) -> Path:
    """``server.runtime_dir`` (relative to the config file), else ``run/`` in the data directory."""
    if config.server.runtime_dir is not None:
        path = Path(config.server.runtime_dir).expanduser()
        return path if path.is_absolute() else base_dir / path
    url = config.storage.url
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///") :])
        return (db if db.is_absolute() else base_dir / db).parent / "run"
    return Path.cwd() / "run"


class RunDir:
    """One server's directory, and this process's shared hold on it."""

    __slots__ = ("path", "_fd")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @property
    def metrics(self) -> Path:
        return self.path / "metrics"

    @classmethod
    def create(cls, root: Path, *, config_file: str = "<config>") -> "RunDir":
        """The master's: sweep what dead servers left, then make and hold a fresh directory."""
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            sweep(root)
            # Lock first, name second: the lock file is made and held under a name no sweep looks at,
            # and only then moved into the new directory.
            fd, lock_path = tempfile.mkstemp(prefix=".rolegate-lock-", dir=root)
            fcntl.flock(fd, fcntl.LOCK_SH)
            path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root))
            (path / "metrics").mkdir(mode=0o700)
            os.replace(lock_path, path / LOCK)
        except OSError as exc:
            raise ConfigError(f"{config_file}: server.runtime_dir: cannot use {root}: {exc.strerror or exc}") from None
        return cls(path, fd)

    @classmethod
    def attach(cls, path: str | os.PathLike[str]) -> "RunDir":
        """A worker's: hold the master's directory while this process runs."""
        path = Path(path)
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        fcntl.flock(fd, fcntl.LOCK_SH)
        return cls(path, fd)

    def release(self) -> None:
        """Let go; the last process of the server to do so (or to die) removes the directory."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            # Shared -> exclusive drops the shared hold first; it succeeds only when nobody else holds one.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # someone is still running; the last of them removes it
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(fd)


def sweep(root: Path) -> None:
    """Remove what servers that no longer run left in ``root``: directories whose lock nobody holds.

    Only directories with a ``lock`` file are considered, so nothing else in ``root`` is touched.
    """
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(".rolegate-lock-"):
            target, lock = entry, entry
        elif entry.name.startswith(PREFIX) and entry.is_dir() and not entry.is_symlink():
            target, lock = entry, entry / LOCK
        else:
            continue
        fd = _take(lock)
        if fd is None:
            continue
        try:
            if target.is_dir():
                log.info("removing %s, left by a server that no longer runs", target)
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _take(lock: Path) -> int | None:
    """An fd holding ``lock`` exclusively, or None when it is absent or somebody holds it."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
