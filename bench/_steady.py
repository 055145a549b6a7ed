"""Run benchmark processes alike: a fixed hash seed and no address-space randomisation.

Two processes of one program then lay out their memory alike, so what differs between
two runs (or two servers) is the code or the config, not the luck of a dict's collisions
or a page's placement. Seed 0 is no better than another; it is just always the same.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys

SEED = "0"


def prefix() -> list[str]:
    """The command prefix that turns address-space randomisation off (empty where setarch is missing)."""
    return ["setarch", platform.machine(), "-R"] if shutil.which("setarch") else []


def env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONHASHSEED=SEED, **extra)


def reexec() -> None:
    """Restart this script steadied, unless it already is."""
    if os.environ.get("PYTHONHASHSEED") == SEED:
        return
    argv = [*prefix(), sys.executable, *sys.argv]
    os.execvpe(argv[0], argv, env())
