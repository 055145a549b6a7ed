"""The data directory, checked once by ``serve`` before any worker starts.

With SQLite (the default, ``<storage.data_dir>/rolegate.db``) every worker opens the database at its
start; a folder it cannot write makes each of them die in turn (and a container exit 1 with a
``PermissionError`` deep in a worker's log). Checked here, the operator gets one line instead, naming
the folder and the user that could not write it, and ``serve`` exits 2 before anything listens.
"""

from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path

from rolegate.config import Config
from rolegate.errors import ConfigError
from rolegate.store.sqlite import sqlite_path


def data_folder(config: Config, base_dir: Path) -> tuple[str, Path] | None:
    """The config key that names the SQLite database's folder, and that folder; None for a server store."""
    url = config.storage.url
    if not url.startswith("sqlite:///"):
        return None
    db = sqlite_path(url)
    folder = (db if db.is_absolute() else base_dir / db).parent
    key = "storage.url" if "url" in config.storage.model_fields_set else "storage.data_dir"
    return key, folder


def check_data_dir(config: Config, base_dir: Path, *, config_file: str = "<config>") -> None:
    """Create the data folder if needed and prove it writable (a file made and removed there), or raise."""
    found = data_folder(config, base_dir)
    if found is None:
        return
    key, folder = found
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # os.access answers for the real uid and misses read-only mounts; writing a file does not.
        with tempfile.TemporaryFile(prefix=".rolegate-write-check-", dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{config_file}: {key}: cannot write the data directory {folder} as user {_user()}: "
            f"{exc.strerror or exc}; make it writable by that user (a volume in a container, StateDirectory= "
            f"in systemd) or point storage.data_dir (or ROLEGATE_DATA) at one that is"
        ) from None


def _user() -> str:
    uid = os.geteuid()
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:  # an arbitrary uid in a container has no passwd entry
        return f"uid {uid}"
