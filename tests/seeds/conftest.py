"""``rolegate serve`` with an example config in front of the lab: real slapd (directory sync in the master),
the company IdP for sign-in, the example backend. One server per example config, started on first use."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from rolegate_lab import DEFAULT_AUDIENCE, free_port, rolegate_client
from rolegate_lab.backend import register_objects
from tests.support.serve import RolegateProcess

REPO = Path(__file__).resolve().parents[2]


def serve_config(example: str, url: str, idp: Any, slapd: Any, backend_url: str, tmp: Path) -> dict[str, Any]:
    """The shipped example config, pointed at the lab (nothing else changed: its roles, routes, scopes)."""
    config = yaml.safe_load((REPO / "config" / "examples" / example).read_text())
    port = int(url.rsplit(":", 1)[1])
    config["server"] = {
        "listen": f"127.0.0.1:{port}",
        "public_url": url,
        "internal_listen": "127.0.0.1:0",
        "workers": 1,
    }
    config["storage"] = {"url": f"sqlite:///{tmp}/rolegate.db"}
    config["session"] = {"secret": "seed-promises-session-secret-" + "s" * 32}
    config["oidc"] = {
        "issuer": idp.issuer,
        "client_id": "rolegate",
        "client_secret": idp.client()["client_secret"],
        "scopes": ["openid", "profile", "email", "groups"],
        "algorithms": ["ES256", "RS256"],
        "access_token_audience": [DEFAULT_AUDIENCE],
    }
    config["directory"] = {
        "url": slapd.url,
        "bind_dn": slapd.service_dn,
        "bind_password": slapd.service_password,
        "users": {"base": f"ou=people,{slapd.base_dn}", "disabled_filter": "(employeeType=disabled)"},
        "groups": {"base": f"ou=groups,{slapd.base_dn}"},
    }
    for upstream in config["upstreams"].values():
        upstream["url"] = backend_url
    config["audit"] = {"sinks": ["store"]}
    return config


def config_apps(proc: RolegateProcess) -> bool:
    return "fieldservice" in (yaml.safe_load(proc.config_path.read_text()).get("apps") or {})


def register(proc: RolegateProcess) -> dict[str, Any]:
    """What the lab backend does at start (``--register``): an app key, then one bulk upsert of its objects."""
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
    with ThreadPoolExecutor(1) as pool:  # called from async tests: a loop of its own
        return pool.submit(asyncio.run, register_objects(proc.url, made.stdout.strip())).result()


class Servers:
    """Started on first use, one per example config; stopped at the end of the module."""

    def __init__(self, tmp_factory: pytest.TempPathFactory, make_idp: Any, slapd: Any, backend: Any) -> None:
        self.tmp_factory, self.make_idp, self.slapd, self.backend = tmp_factory, make_idp, slapd, backend
        self.running: dict[str, RolegateProcess] = {}

    def get(self, example: str) -> RolegateProcess:
        proc = self.running.get(example)
        if proc is None:
            url = f"http://127.0.0.1:{free_port()}"
            idp = self.make_idp([rolegate_client(url)])
            tmp = self.tmp_factory.mktemp(example.removesuffix(".yaml"))
            proc = RolegateProcess(serve_config(example, url, idp, self.slapd, self.backend.url, tmp), tmp)
            proc.start()
            self.running[example] = proc
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the first full directory sync, so groups are known
                _status, body = proc.readyz()
                if json.loads(body).get("checks", {}).get("directory", {}).get("users"):
                    break
                time.sleep(0.2)
            if config_apps(proc):  # the app registers its objects at start, with its API key (issue 19)
                register(proc)
        return proc

    def stop(self) -> None:
        for proc in self.running.values():
            proc.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, make_session_idp, lab_slapd, lab_backend) -> Iterator[Servers]:
    s = Servers(tmp_path_factory, make_session_idp, lab_slapd, lab_backend)
    yield s
    s.stop()
