"""config/examples/lab.yaml (what the quickstart runs) validates with the variables it exports."""

from __future__ import annotations

from pathlib import Path

from rolegate.config import load_config
from rolegate.server.runtime import Compiled

LAB_YAML = Path(__file__).resolve().parents[2] / "config" / "examples" / "lab.yaml"
ENV = {
    "ROLEGATE_LISTEN": "127.0.0.1:8080",
    "ROLEGATE_PUBLIC_URL": "http://127.0.0.1:8080",
    "ROLEGATE_INTERNAL_LISTEN": "127.0.0.1:9090",
    "ROLEGATE_DATA": "/tmp/rolegate-lab-data",
    "ROLEGATE_OIDC_ISSUER": "http://127.0.0.1:9000",
    "ROLEGATE_OIDC_SECRET": "s3cret",
    "LAB_BACKEND_URL": "http://127.0.0.1:8081",
    "LAB_LDAP_URL": "ldap://127.0.0.1:3890",
    "LDAP_PASSWORD": "rolegate-sync",
    "ROLEGATE_SESSION_SECRET": "x" * 48,
}


def test_lab_config_loads_and_compiles():
    config = load_config(LAB_YAML, env=ENV)
    assert config.oidc is not None and config.oidc.issuer == "http://127.0.0.1:9000"
    assert config.session is not None and not config.server.secure_cookies
    assert config.directory is not None and config.daypass is not None
    modes = {r.path: r.mode for r in config.routes}
    assert modes["/public/**"] == "public"
    assert all(modes[p] == "authenticated" for p in ("/me-echo/**", "/ws", "/sse"))
    Compiled(config)  # routes, upstreams and redactions compile
