"""Runtime files (issue 17, item 5): in one place the operator chooses, gone when the server is.

Before: every start made a ``/tmp/rolegate-metrics-*`` folder (the workers' Prometheus files) that
no exit removed, clean or not, so a crash loop added one per death. Now they live in
``server.runtime_dir`` (default ``run/`` in the data directory), one directory per running server,
removed by its last process on the way out; what processes killed all at once leave is removed by
the next start. Each server gets a private TMPDIR here, so a stray temp folder would show.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.serve import RolegateProcess, minimal_config

pytestmark = pytest.mark.lab


def _server(workdir: Path, upstream: str, **server: object) -> RolegateProcess:
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return RolegateProcess(minimal_config(upstream, workers=2, **server), workdir, env={"TMPDIR": str(tmp)})


def _runtime_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _strays(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / "tmp").iterdir())


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


async def _until(check, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.1)
    return check()


async def test_a_clean_stop_removes_the_runtime_files(tmp_path, lab_backend):
    served = _server(tmp_path, lab_backend.url).start()
    root = tmp_path / "var" / "run"  # the default: run/ beside the SQLite database (var/rolegate.db)
    try:
        [mine] = _runtime_files(root)
        assert mine.startswith(f"rolegate-{served.proc.pid}-")
        assert any((root / mine / "metrics").glob("*.db")), "the workers' metrics live there"
        # A worker that dies and is replaced adds no directory.
        os.kill(served.worker_pids()[0], signal.SIGKILL)
        assert await _until(lambda: served.readyz()[0] == 200 and '"alive": 2' in served.readyz()[1])
        assert _runtime_files(root) == [mine]
    finally:
        assert served.stop() == 0
    assert _runtime_files(root) == []
    assert _strays(tmp_path) == []


async def test_the_runtime_dir_is_the_operators_choice(tmp_path, lab_backend):
    served = _server(tmp_path, lab_backend.url, runtime_dir="state/runtime").start()
    root = tmp_path / "state" / "runtime"  # relative to the config file
    try:
        [mine] = _runtime_files(root)
        assert (root / mine / "metrics").is_dir()
        assert _runtime_files(tmp_path / "var" / "run") == []
    finally:
        assert served.stop() == 0
    assert _runtime_files(root) == [] and _strays(tmp_path) == []


async def test_crashes_leave_nothing_behind(tmp_path, lab_backend):
    root = tmp_path / "var" / "run"
    # A crash loop of the master: each time its workers drain, and the last one out removes the directory.
    for _ in range(3):
        served = _server(tmp_path, lab_backend.url).start()
        workers = served.worker_pids()
        assert len(_runtime_files(root)) == 1
        served.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(served.proc.wait, 10)
        assert await _until(lambda: not any(_alive(p) for p in workers)), served.log()  # noqa: B023 - awaited here
        assert _runtime_files(root) == [], served.log()
    # Everything killed at once: nobody is left to clean up, so the next start does.
    served = _server(tmp_path, lab_backend.url).start()
    for pid in [served.proc.pid, *served.worker_pids()]:
        os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(served.proc.wait, 10)
    [left] = _runtime_files(root)
    served = _server(tmp_path, lab_backend.url).start()
    try:
        [mine] = _runtime_files(root)
        assert mine != left
    finally:
        assert served.stop() == 0
    assert _runtime_files(root) == [] and _strays(tmp_path) == []


def test_an_unusable_runtime_dir_is_a_clear_error(tmp_path, lab_backend):
    (tmp_path / "occupied").write_text("a file, not a directory\n")
    served = _server(tmp_path, lab_backend.url, runtime_dir="occupied/run")
    proc = subprocess.run(
        [sys.executable, "-m", "rolegate", "serve", "-c", str(served.config_path)],
        cwd=tmp_path,
        env=served.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "server.runtime_dir: cannot use" in proc.stderr and "occupied/run" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_runtime_dir_fails_check(tmp_path, value):
    import yaml

    from rolegate.config.loader import load_config_text
    from rolegate.errors import ConfigError

    text = yaml.safe_dump(minimal_config("http://127.0.0.1:9", runtime_dir=value), sort_keys=False)
    with pytest.raises(ConfigError) as err:
        load_config_text(text, file="rolegate.yaml", base_dir=tmp_path)
    assert any("server.runtime_dir" in p and "must be a directory path" in p for p in err.value.problems)
