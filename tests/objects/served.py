"""field-service.yaml through ``rolegate serve`` (2 workers, the lab), with an app key for the object directory."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rolegate_lab import free_port, rolegate_client
from tests.seeds.conftest import serve_config
from tests.support.serve import RolegateProcess


@contextmanager
def field_service_served(tmp, make_session_idp, lab_slapd, lab_backend) -> Iterator[RolegateProcess]:
    """What is registered decides (no lookup on a miss: tests/objects/test_lookup_serve.py tests that). The
    process carries ``app_key`` (the fieldservice app's API key) and ``db`` (its SQLite file)."""
    url = f"http://127.0.0.1:{free_port()}"
    idp = make_session_idp([rolegate_client(url)])
    config = serve_config("field-service.yaml", url, idp, lab_slapd, lab_backend.url, tmp)
    config["server"]["workers"] = 2
    del config["scopes"]["workorder"]["lookup"]
    proc = RolegateProcess(config, tmp)
    proc.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the first full directory sync, so groups are known
            if json.loads(proc.readyz()[1]).get("checks", {}).get("directory", {}).get("users"):
                break
            time.sleep(0.2)
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "rolegate",
                "apps",
                "key",
                "create",
                "--app",
                "fieldservice",
                "-c",
                str(proc.config_path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stderr
        proc.app_key = made.stdout.strip()
        proc.db = tmp / "rolegate.db"
        yield proc
    finally:
        proc.stop()
