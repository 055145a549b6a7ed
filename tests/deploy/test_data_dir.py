"""The data directory: where the default SQLite database lives, and what ``serve`` says when it cannot write it.

The container image runs as a non-root user with the config mounted read-only in ``/etc/rolegate``; the
default database must not land beside the config there (``ROLEGATE_DATA=/var/lib/rolegate`` moves it), and
a folder that cannot be written stops ``serve`` with one line naming it and the user, before any worker.
The tests run as root here, so "cannot be written" is made with a regular file where the folder should be
(mkdir fails for root too).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rolegate.config import load_config_text
from rolegate.errors import ConfigError
from tests.support.serve import RolegateProcess, minimal_config

BASE = (
    "server: {listen: '127.0.0.1:0', public_url: 'http://127.0.0.1:8080'}\n"
    "upstreams: {app: {url: 'http://127.0.0.1:9'}}\n"
    "routes: [{path: '/**', mode: public, upstream: app}]\n"
)


def test_the_default_database_follows_the_data_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("ROLEGATE_DATA", raising=False)
    assert load_config_text(BASE, base_dir=tmp_path).storage.url == "sqlite:///var/rolegate.db"
    monkeypatch.setenv("ROLEGATE_DATA", "/var/lib/rolegate")
    assert load_config_text(BASE, base_dir=tmp_path).storage.url == "sqlite:////var/lib/rolegate/rolegate.db"
    # The key wins over the environment; an explicit url wins over both.
    keyed = load_config_text(BASE + "storage: {data_dir: /srv/rg}\n", base_dir=tmp_path).storage
    assert (keyed.data_dir, keyed.url) == ("/srv/rg", "sqlite:////srv/rg/rolegate.db")
    explicit = load_config_text(BASE + "storage: {url: 'sqlite:///db/x.db'}\n", base_dir=tmp_path).storage
    assert explicit.url == "sqlite:///db/x.db"
    with pytest.raises(ConfigError, match="data_dir"):
        load_config_text(BASE + "storage: {data_dir: ''}\n", base_dir=tmp_path)


def _serve(config_dir: Path, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rolegate", "serve", "-c", str(config_dir / "rolegate.yaml")],
        cwd=config_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _config_dir_without_room(tmp_path: Path) -> Path:
    """A config folder where the default data folder (var/ beside the config) cannot be made."""
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "rolegate.yaml").write_text(yaml.safe_dump(minimal_config("http://127.0.0.1:9")))
    (config_dir / "var").write_text("not a folder\n")
    return config_dir


def test_an_unwritable_data_directory_is_one_line_naming_it_and_the_user(tmp_path):
    config_dir = _config_dir_without_room(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "ROLEGATE_DATA"}
    result = _serve(config_dir, env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"storage.data_dir: cannot write the data directory {config_dir / 'var'} as user " in output, output
    assert f"(uid {os.geteuid()})" in output, output
    # Before any worker: nothing was started, nothing listened, no traceback.
    assert "worker" not in output and "serving" not in output and "Traceback" not in output, output


def test_rolegate_data_moves_the_data_directory_out_of_the_config_folder(tmp_path):
    # The container's setup: config in a folder the service cannot write, ROLEGATE_DATA on a volume.
    config_dir = _config_dir_without_room(tmp_path)
    data = tmp_path / "data"
    served = RolegateProcess((config_dir / "rolegate.yaml").read_text(), config_dir, env={"ROLEGATE_DATA": str(data)})
    served.start()
    try:
        deadline = time.monotonic() + 30
        while served.readyz()[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert served.readyz()[0] == 200, served.log()
    finally:
        assert served.stop() == 0, served.log()
    assert (data / "rolegate.db").is_file()
    assert not (config_dir / "var").is_dir()
