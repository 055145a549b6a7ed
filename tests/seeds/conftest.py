"""``rolegate serve`` with an example config in front of the lab: real slapd (directory sync in the master),
the company IdP for sign-in, the example backend. One server per example config, started on first use."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rolegate_lab import DEFAULT_AUDIENCE, free_port, rolegate_client
from tests.support.serve import RolegateProcess

REPO = Path(__file__).resolve().parents[2]


def serve_config(example: str, url: str, idp: Any, slapd: Any, backend_url: str, tmp: Path) -> dict[str, Any]:
    """The shipped example config, pointed at the lab (nothing else changed: its roles, routes, scopes)."""
    config = yaml.safe_load((REPO / "config" / "examples" / example).read_text())
    port = int(url.rsplit(":", 1)[1])
    config["server"] = {"listen": f"127.0.0.1:{port}", "public_url": url, "internal_listen": "127.0.0.1:0",
                        "workers": 1}
    config["storage"] = {"url": f"sqlite:///{tmp}/rolegate.db"}
    config["session"] = {"secret": "seed-promises-session-secret-" + "s" * 32}
    config["oidc"] = {"issuer": idp.issuer, "client_id": "rolegate", "client_secret": idp.client()["client_secret"],
                      "scopes": ["openid", "profile", "email", "groups"], "algorithms": ["ES256", "RS256"],
                      "access_token_audience": [DEFAULT_AUDIENCE]}
    config["directory"] = {"url": slapd.url, "bind_dn": slapd.service_dn, "bind_password": slapd.service_password,
                           "users": {"base": f"ou=people,{slapd.base_dn}", "disabled_filter": "(employeeType=disabled)"},
                           "groups": {"base": f"ou=groups,{slapd.base_dn}"}}
    for upstream in config["upstreams"].values():
        upstream["url"] = backend_url
    config["audit"] = {"sinks": ["store"]}
    return config


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
        return proc

    def stop(self) -> None:
        for proc in self.running.values():
            proc.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, make_session_idp, lab_slapd, lab_backend) -> Iterator[Servers]:
    s = Servers(tmp_path_factory, make_session_idp, lab_slapd, lab_backend)
    yield s
    s.stop()
